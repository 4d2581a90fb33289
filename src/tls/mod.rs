//! TLS on both sides: the settings (`TlsSettings`, from the flags), the certificates loaded
//! from them (`Tls`, re-read on SIGHUP), and the reasons a handshake fails (`Failure`).
//!
//! ```text
//!  client ──TLS (--tls-listen, --tls-cert/--tls-key, mTLS with --tls-client-ca)──▶ respite
//!  respite ──TLS (--backend-tls, --backend-ca, --backend-cert/--backend-key, SNI)──▶ backends
//! ```
//!
//! rustls with the `ring` provider: it builds from crates with the C compiler every Rust
//! machine has (aws-lc-rs would also need cmake). Loading is all-or-nothing per side: a file
//! that fails to load on SIGHUP leaves that side's previous certificates in use.

mod der;
pub mod stream;

pub use stream::{Stream, TlsEvents};

use log::{info, warn};
use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What the flags say about TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// Where TLS clients connect (`--tls-listen`).
    pub listen: Option<SocketAddr>,
    /// The served certificate chain, PEM (`--tls-cert`).
    pub cert: Option<PathBuf>,
    /// Its private key, PEM (`--tls-key`).
    pub key: Option<PathBuf>,
    /// Clients must present a certificate signed by these CAs (`--tls-client-ca`).
    pub client_ca: Option<PathBuf>,
    /// Time a client has to finish its handshake.
    pub handshake_timeout: Duration,
    /// Speak TLS to backends, shards and the pub/sub target (`--backend-tls`).
    pub backend: bool,
    /// CAs that sign the backends' certificates (default: the system's trust store).
    pub backend_ca: Option<PathBuf>,
    /// respite's client certificate for backends that require one.
    pub backend_cert: Option<PathBuf>,
    /// Its private key.
    pub backend_key: Option<PathBuf>,
    /// The name checked in every backend's certificate (default: each address's host).
    pub backend_sni: Option<String>,
    /// Accept any backend certificate (development only).
    pub backend_insecure: bool,
}

/// Why a TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not finished within the handshake timeout.
    Timeout,
    /// The peer closed the connection during the handshake.
    Eof,
    /// Not TLS, or TLS that breaks the protocol.
    Protocol,
    /// A client certificate was required and none was sent.
    NoCertificate,
    /// The peer's certificate is not trusted (unknown issuer, expired, wrong name...).
    BadCertificate,
    /// The peer refused the handshake with an alert (it did not trust respite's certificate).
    RejectedByPeer,
    /// Anything else.
    Other,
}

impl Failure {
    /// Every reason, in the order INFO and `/metrics` list them.
    pub const ALL: [Failure; 7] = [
        Failure::Timeout,
        Failure::Eof,
        Failure::Protocol,
        Failure::NoCertificate,
        Failure::BadCertificate,
        Failure::RejectedByPeer,
        Failure::Other,
    ];

    /// Its name in INFO and `/metrics`.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Eof => "eof",
            Failure::Protocol => "protocol",
            Failure::NoCertificate => "no_certificate",
            Failure::BadCertificate => "bad_certificate",
            Failure::RejectedByPeer => "rejected_by_peer",
            Failure::Other => "other",
        }
    }

    /// The reason behind a rustls error.
    pub fn of(e: &rustls::Error) -> Failure {
        use rustls::Error as E;
        match e {
            E::NoCertificatesPresented => Failure::NoCertificate,
            E::InvalidCertificate(_) | E::UnsupportedNameType => Failure::BadCertificate,
            E::AlertReceived(_) => Failure::RejectedByPeer,
            E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. }
            | E::InvalidMessage(_)
            | E::PeerIncompatible(_)
            | E::PeerMisbehaved(_)
            | E::PeerSentOversizedRecord
            | E::DecryptError => Failure::Protocol,
            _ => Failure::Other,
        }
    }

    /// The reason behind a socket error during a handshake.
    pub fn of_io(e: &std::io::Error) -> Failure {
        use std::io::ErrorKind as K;
        if let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            return Failure::of(tls);
        }
        match e.kind() {
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                Failure::Eof
            }
            _ => Failure::Other,
        }
    }

    /// Its index in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What INFO and `/metrics` report about TLS.
#[derive(Debug, Default, Clone)]
pub struct TlsCounters {
    /// TLS clients connected (in their handshake or past it).
    pub clients: u64,
    /// Client handshakes completed.
    pub handshakes: u64,
    /// Client handshakes failed, by `Failure::index`.
    pub client_failures: [u64; Failure::ALL.len()],
    /// Handshakes with backends failed, by `Failure::index`.
    pub backend_failures: [u64; Failure::ALL.len()],
}

/// The certificates in use, loaded from `TlsSettings`.
#[derive(Debug, Default)]
pub struct Tls {
    server: Option<Arc<ServerConfig>>,
    client: Option<Arc<ClientConfig>>,
    /// `notAfter` of the served certificate (seconds since the epoch).
    pub served_expiry: Option<i64>,
    /// `notAfter` of respite's client certificate for backends.
    pub client_cert_expiry: Option<i64>,
    sni: Option<ServerName<'static>>,
    /// Host names the addresses were given by (`redis.example:6380`), for SNI.
    names: Vec<(SocketAddr, ServerName<'static>)>,
}

impl Tls {
    /// Loads what `s` names; `names` are the host names addresses were given by.
    pub fn load(s: &TlsSettings, names: &[(SocketAddr, String)]) -> Result<Tls, String> {
        let mut tls = Tls::default();
        tls.name_backends(s, names)?;
        if s.listen.is_some() {
            let (config, expiry) = server_config(s)?;
            tls.server = Some(config);
            tls.served_expiry = expiry;
        }
        if s.backend {
            let (config, expiry) = client_config(s)?;
            tls.client = Some(config);
            tls.client_cert_expiry = expiry;
        }
        Ok(tls)
    }

    /// The names checked in backend certificates: `--backend-sni`, else each address's host.
    fn name_backends(
        &mut self,
        s: &TlsSettings,
        names: &[(SocketAddr, String)],
    ) -> Result<(), String> {
        self.sni = match &s.backend_sni {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| format!("invalid --backend-sni '{name}': {e}"))?,
            ),
            None => None,
        };
        self.names = names
            .iter()
            .filter_map(|(a, n)| Some((*a, ServerName::try_from(n.clone()).ok()?)))
            .collect();
        Ok(())
    }

    /// Re-reads the files of `s` (SIGHUP): each side that loads replaces the old one for new
    /// connections; one that fails is logged and keeps its old certificates.
    pub fn reload(&mut self, s: &TlsSettings, names: &[(SocketAddr, String)]) {
        if let Err(e) = self.name_backends(s, names) {
            warn!("TLS: keeping the backend names: {e}");
        }
        if self.server.is_some() {
            replace(
                &mut self.server,
                &mut self.served_expiry,
                server_config(s),
                "served certificate",
            );
        }
        if self.client.is_some() {
            let loaded = client_config(s);
            replace(
                &mut self.client,
                &mut self.client_cert_expiry,
                loaded,
                "backend CA and client certificate",
            );
        }
    }

    /// True when backends are spoken to over TLS.
    pub fn to_backends(&self) -> bool {
        self.client.is_some()
    }

    /// A client's stream over `tcp`, accepted on the TLS listener.
    pub fn accept(&self, tcp: TcpStream) -> Result<Stream, String> {
        let config = self.server.clone().ok_or("TLS is not configured")?;
        let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
        Ok(Stream::tls(tcp, conn))
    }

    /// The stream to the upstream at `addr` over `tcp`: TLS when backends speak it.
    pub fn connect(&self, tcp: TcpStream, addr: SocketAddr) -> std::io::Result<Stream> {
        let Some(config) = self.client.clone() else {
            return Ok(Stream::Plain(tcp));
        };
        let name = self.sni.clone().unwrap_or_else(|| {
            let named = self.names.iter().find(|(a, _)| *a == addr);
            named.map_or(ServerName::IpAddress(addr.ip().into()), |(_, n)| n.clone())
        });
        let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        Ok(Stream::tls(tcp, conn))
    }
}

/// One side's configuration after a reload: the new one if it loaded, else the old one kept.
fn replace<C>(
    config: &mut Option<Arc<C>>,
    expiry: &mut Option<i64>,
    loaded: Result<(Arc<C>, Option<i64>), String>,
    what: &str,
) {
    match loaded {
        Ok((new, new_expiry)) => {
            *config = Some(new);
            *expiry = new_expiry;
            info!("TLS: {what} reloaded");
        }
        Err(e) => warn!("TLS: keeping the {what}: {e}"),
    }
}

/// Seconds from now until `not_after` (negative once expired).
pub fn seconds_left(not_after: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    not_after - now
}

/// `notAfter` of a DER certificate (seconds since the epoch), `None` if it cannot be read.
pub fn not_after(der: &[u8]) -> Option<i64> {
    der::not_after(der)
}

/// `notAfter` of the leaf of a chain.
pub fn expiry_of(chain: &[CertificateDer<'_>]) -> Option<i64> {
    der::not_after(chain.first()?)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {}: {e}", path.display()))
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn required<'a>(path: &'a Option<PathBuf>, flag: &str) -> Result<&'a Path, String> {
    path.as_deref().ok_or_else(|| format!("{flag} is required"))
}

fn server_config(s: &TlsSettings) -> Result<(Arc<ServerConfig>, Option<i64>), String> {
    let certs = load_certs(required(&s.cert, "--tls-cert")?)?;
    let key = load_key(required(&s.key, "--tls-key")?)?;
    let expiry = expiry_of(&certs);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &s.client_ca {
        Some(ca) => {
            let roots = Arc::new(load_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok((Arc::new(config), expiry))
}

fn client_config(s: &TlsSettings) -> Result<(Arc<ClientConfig>, Option<i64>), String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if s.backend_insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
    } else {
        let roots = match &s.backend_ca {
            Some(ca) => load_roots(ca)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    };
    match (&s.backend_cert, &s.backend_key) {
        (Some(cert), Some(key)) => {
            let certs = load_certs(cert)?;
            let expiry = expiry_of(&certs);
            let config = builder
                .with_client_auth_cert(certs, load_key(key)?)
                .map_err(|e| format!("--backend-cert/--backend-key: {e}"))?;
            Ok((Arc::new(config), expiry))
        }
        _ => Ok((Arc::new(builder.with_no_client_auth()), None)),
    }
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_default();
        return Err(format!(
            "no CA certificates in the system trust store ({why}): give --backend-ca"
        ));
    }
    Ok(roots)
}

/// `--backend-tls-insecure`: any certificate is accepted; signatures are still checked, so the
/// handshake itself is sound.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_of_a_real_certificate_is_read() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 4);
        let cert = params.self_signed(&key).unwrap();
        // 2031-07-04T00:00:00Z
        assert_eq!(expiry_of(&[cert.der().clone()]), Some(1_940_889_600));
    }

    #[test]
    fn failures_are_named_by_their_cause() {
        use rustls::{CertificateError, Error};
        let bad = Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(Failure::of(&bad), Failure::BadCertificate);
        assert_eq!(
            Failure::of(&Error::NoCertificatesPresented),
            Failure::NoCertificate
        );
        let names: Vec<_> = Failure::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), 7);
        assert!(Failure::ALL.iter().enumerate().all(|(i, f)| f.index() == i));
    }
}
