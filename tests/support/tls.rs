//! TLS for the tests: `Pki` (a CA, a server cert for 127.0.0.1 and localhost, client certs good,
//! from another CA and expired, made with rcgen in a temp dir), `TlsRedis` (a `redis-server`
//! that speaks only TLS, killed by PID on drop) and `TlsClient` (a blocking rustls client with
//! read and write timeouts that speaks RESP, and tells which certificate it was served).
//!
//! Every certificate's validity is counted from now, so that a run on any date sees the good
//! ones valid and the expired one expired.

use super::{config_over, free_port, wait_until, RawClient, TestProxy};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use respite::resp::{encode_request, ReplyScanner};
use respite::Config;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days the served certificate (`Pki::server_cert`) stays valid from now.
pub const SERVER_CERT_DAYS: u64 = 30;

const DAY_SECS: i64 = 86_400;

/// A test PKI in a temp dir: PEM files for a CA and the certificates it signed, and another CA.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    /// The CA that signed the server and the good client certificates.
    pub ca: PathBuf,
    /// A server certificate for IP 127.0.0.1 and DNS localhost, valid `SERVER_CERT_DAYS`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate signed by `ca`.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing respite or the servers trust.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`.
    pub other_client_cert: PathBuf,
    pub other_client_key: PathBuf,
    /// A client certificate signed by `ca` that expired a year ago.
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
}

impl Pki {
    /// Generates every key and certificate and writes them.
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let at = |name: &str| dir.path().join(name);
        let issuer = new_ca("respite test CA", &at("ca.pem"));
        let other = new_ca("respite other CA", &at("other-ca.pem"));
        let pki = Pki {
            ca: at("ca.pem"),
            server_cert: at("server.pem"),
            server_key: at("server.key"),
            client_cert: at("client.pem"),
            client_key: at("client.key"),
            other_ca: at("other-ca.pem"),
            other_client_cert: at("other-client.pem"),
            other_client_key: at("other-client.key"),
            expired_cert: at("expired.pem"),
            expired_key: at("expired.key"),
            issuer,
            dir,
        };
        pki.issue_server(
            "respite-server",
            SERVER_CERT_DAYS,
            &pki.server_cert,
            &pki.server_key,
        );
        let client = Leaf::client("respite-client", -1, 365);
        client.sign(&pki.issuer, &pki.client_cert, &pki.client_key);
        let stranger = Leaf::client("respite-stranger", -1, 365);
        stranger.sign(&other, &pki.other_client_cert, &pki.other_client_key);
        let expired = Leaf::client("respite-expired", -730, -365);
        expired.sign(&pki.issuer, &pki.expired_cert, &pki.expired_key);
        pki
    }

    /// A path in the PKI's temp dir (for files a test writes, such as rotated certificates).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a fresh server certificate named `common_name` (SANs IP 127.0.0.1 and DNS
    /// localhost), signed by `ca` and valid for `days` from now, and writes it and its key.
    pub fn issue_server(&self, common_name: &str, days: u64, cert: &Path, key: &Path) {
        let mut leaf = Leaf::new(common_name, &["127.0.0.1", "localhost"], -1, days as i64);
        leaf.params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        leaf.sign(&self.issuer, cert, key);
    }
}

/// Writes a self-signed CA to `path`; its issuer signs leaves.
fn new_ca(name: &str, path: &Path) -> Issuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    valid_between(&mut params, -1, 3650);
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("self-signed CA");
    std::fs::write(path, cert.pem()).expect("write CA");
    Issuer::new(params, key)
}

/// An end-entity certificate about to be signed.
struct Leaf {
    params: CertificateParams,
}

impl Leaf {
    fn new(common_name: &str, sans: &[&str], from_days: i64, to_days: i64) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        valid_between(&mut params, from_days, to_days);
        Leaf { params }
    }

    fn client(common_name: &str, from_days: i64, to_days: i64) -> Leaf {
        let mut leaf = Leaf::new(common_name, &[], from_days, to_days);
        leaf.params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
        leaf
    }

    fn sign(&self, issuer: &Issuer<'static, KeyPair>, cert: &Path, key: &Path) {
        let pair = KeyPair::generate().expect("leaf key");
        let signed = self.params.signed_by(&pair, issuer).expect("sign leaf");
        std::fs::write(cert, signed.pem()).expect("write cert");
        std::fs::write(key, pair.serialize_pem()).expect("write key");
    }
}

/// Valid from `from_days` to `to_days` days from now (negative: in the past).
fn valid_between(params: &mut CertificateParams, from_days: i64, to_days: i64) {
    let now = unix_now() as i64;
    let at = |days: i64| {
        let secs = u64::try_from(now + days * DAY_SECS).expect("after 1970");
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(secs)
    };
    params.not_before = at(from_days);
    params.not_after = at(to_days);
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The DER of the first certificate in the PEM file at `path`.
pub fn cert_der(path: &Path) -> Vec<u8> {
    let first = CertificateDer::pem_file_iter(path)
        .expect("PEM file")
        .next()
        .expect("a certificate")
        .expect("a valid PEM certificate");
    first.to_vec()
}

/// A rustls client config trusting `ca`, presenting `identity` (cert, key) when asked.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("cert file")
                .collect::<Result<Vec<_>, _>>()
                .expect("cert PEM");
            let key = PrivateKeyDer::from_pem_file(key).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// The first bytes a rustls client writes: its whole ClientHello record.
pub fn client_hello(ca: &Path) -> Vec<u8> {
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut conn = ClientConnection::new(client_config(ca, None), name).expect("client conn");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    out
}

/// How many reads and writes a handshake may take (it needs a handful).
const HANDSHAKE_ROUNDS: usize = 32;

/// A blocking TLS client speaking RESP, with 5 s read and write timeouts.
pub struct TlsClient {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
    scanner: ReplyScanner,
}

impl TlsClient {
    /// Connects to `addr` trusting `ca` and presenting `identity` when asked, checking the
    /// server's certificate for its IP; the handshake's error if it failed.
    pub fn connect(
        addr: SocketAddr,
        ca: &Path,
        identity: Option<(&Path, &Path)>,
    ) -> std::io::Result<TlsClient> {
        Self::connect_with(addr, client_config(ca, identity))
    }

    /// Connects with `config`, checking the server's certificate for `addr`'s IP.
    pub fn connect_with(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsClient> {
        let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let mut conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut rounds = 0;
        while conn.is_handshaking() {
            rounds += 1;
            if rounds > HANDSHAKE_ROUNDS {
                return Err(std::io::Error::other("handshake did not finish"));
            }
            conn.complete_io(&mut tcp)?;
        }
        Ok(TlsClient {
            stream: StreamOwned::new(conn, tcp),
            buf: Vec::new(),
            scanner: ReplyScanner::new(),
        })
    }

    /// The TLS version the handshake agreed on.
    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.conn.protocol_version()
    }

    /// The DER of the certificate the server presented.
    pub fn peer_cert(&self) -> Vec<u8> {
        let certs = self.stream.conn.peer_certificates().expect("a server cert");
        certs[0].to_vec()
    }

    /// Writes bytes and flushes them onto the socket.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads one complete reply, or the I/O error (EOF is `UnexpectedEof`).
    pub fn try_reply(&mut self) -> std::io::Result<Vec<u8>> {
        self.reply_by(65536, Duration::ZERO)
    }

    /// Reads one complete reply `chunk` bytes at a time, pausing `pause` between reads (a slow
    /// reader keeps the server's socket full).
    pub fn reply_by(&mut self, chunk: usize, pause: Duration) -> std::io::Result<Vec<u8>> {
        let (buf, scanner) = (&mut self.buf, &mut self.scanner);
        super::proxy::read_reply(&mut self.stream, buf, scanner, chunk, pause)
    }

    /// The TCP socket under the TLS session, to write what is not TLS.
    pub fn sock_mut(&mut self) -> &mut TcpStream {
        &mut self.stream.sock
    }

    /// Sends `bytes` and a close_notify in one flight, keeping the TCP connection open.
    pub fn send_then_close_notify(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.conn.writer().write_all(bytes)?;
        self.stream.conn.send_close_notify();
        let mut flight = Vec::new();
        while self.stream.conn.wants_write() {
            self.stream.conn.write_tls(&mut flight)?;
        }
        self.stream.sock.write_all(&flight)
    }

    /// Sends a command and reads its reply, or the error of either.
    pub fn try_cmd(&mut self, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
        self.try_send(&encode_request(args))?;
        self.try_reply()
    }

    /// Sends a command and reads its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.try_cmd(args).expect("reply over TLS")
    }
}

/// What a TLS client with `identity` gets for PING at `addr`: the reply, or the error of the
/// handshake or of the first read (with TLS 1.3, a server refuses a client certificate only
/// after the client has finished its side of the handshake).
pub fn ping_over_tls(
    addr: SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> std::io::Result<Vec<u8>> {
    TlsClient::connect(addr, ca, identity)?.try_cmd(&[b"PING"])
}

/// A `redis-server` that listens only on a TLS port, with its certificate from a `Pki`;
/// killed by PID on drop.
pub struct TlsRedis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    ca: PathBuf,
    identity: (PathBuf, PathBuf),
}

impl TlsRedis {
    /// Starts one serving `pki.server_cert`; with `auth_clients` it requires client
    /// certificates signed by `pki.ca`. Waits until a TLS PING answers; tries another port
    /// when its port was taken, 3 times at the most.
    pub fn start(pki: &Pki, auth_clients: bool) -> TlsRedis {
        let mut last = String::new();
        for _ in 0..3 {
            let mut s = TlsRedis {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir"),
                ca: pki.ca.clone(),
                identity: (pki.client_cert.clone(), pki.client_key.clone()),
            };
            s.spawn(pki, auth_clients);
            if s.answers() {
                return s;
            }
            let log = std::fs::read_to_string(s.dir.path().join("redis.log")).unwrap_or_default();
            if !log.contains("Address already in use") {
                panic!(
                    "TLS redis-server on port {} did not start; log:\n{log}",
                    s.port
                );
            }
            last = log;
        }
        panic!("TLS redis-server found no free port in 3 tries; last log:\n{last}");
    }

    fn spawn(&mut self, pki: &Pki, auth_clients: bool) {
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--tls-cert-file", &path(&pki.server_cert)])
            .args(["--tls-key-file", &path(&pki.server_key)])
            .args(["--tls-ca-cert-file", &path(&pki.ca)])
            .args([
                "--tls-auth-clients",
                if auth_clients { "yes" } else { "no" },
            ])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", &path(self.dir.path()), "--logfile", &path(&log)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/install-deps)");
        self.child = Some(child);
    }

    /// True once a TLS PING answers +PONG (within 10 s); false at once if it exited.
    fn answers(&mut self) -> bool {
        wait_until(Duration::from_secs(10), || {
            let exited = self
                .child
                .as_mut()
                .map(|c| !matches!(c.try_wait(), Ok(None)));
            if exited != Some(false) {
                return true;
            }
            self.try_client()
                .and_then(|mut c| c.try_cmd(&[b"PING"]))
                .is_ok_and(|r| r == b"+PONG\r\n")
        }) && self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn try_client(&self) -> std::io::Result<TlsClient> {
        let (cert, key) = (&self.identity.0, &self.identity.1);
        TlsClient::connect(self.addr(), &self.ca, Some((cert.as_path(), key.as_path())))
    }

    /// A TLS client connected straight to it (with the good client certificate).
    pub fn client(&self) -> TlsClient {
        self.try_client().expect("TLS connection to redis-server")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The number after `field:` in an INFO reply, if there is one.
pub fn info_number(info: &[u8], field: &str) -> Option<u64> {
    let text = String::from_utf8_lossy(info);
    let key = format!("{field}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

/// respite on a plaintext and a TLS port, serving `pki.server_cert`, in front of `backends`,
/// with what `set` changes.
pub fn tls_proxy(pki: &Pki, backends: Vec<SocketAddr>, set: impl FnOnce(&mut Config)) -> TestProxy {
    let mut c = config_over(backends);
    c.tls.cert = Some(pki.server_cert.clone());
    c.tls.key = Some(pki.server_key.clone());
    set(&mut c);
    TestProxy::start_tls(c)
}

/// A number from respite's `INFO tls`.
pub fn tls_stat(raw: &mut RawClient, field: &str) -> u64 {
    let info = raw.cmd(&[b"INFO", b"tls"]);
    info_number(&info, field).unwrap_or_else(|| {
        panic!(
            "INFO tls has no {field}:\n{}",
            String::from_utf8_lossy(&info)
        )
    })
}
