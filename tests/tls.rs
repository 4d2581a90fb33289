//! TLS at both ends with real processes: clients (redis-cli, redis-py, ioredis, rustls) on
//! respite's TLS port, client certificates, TLS backends (`redis-server --tls-port`) that
//! respite must verify or that verify respite, certificate rotation on SIGHUP with the binary,
//! the counters in `INFO tls` and `/metrics`, and hostile peers on the TLS port.

mod support;

use respite::Config;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const DAY_SECS: u64 = 86_400;

/// Speak TLS to the backends, trusting `pki.ca`.
fn tls_backends(c: &mut Config, pki: &Pki) {
    c.tls.backend = true;
    c.tls.backend_ca = Some(pki.ca.clone());
}

/// Asserts that `left` seconds is what remains of a certificate valid `days` from a moment ago.
fn assert_expires_in(left: u64, days: u64) {
    let full = days * DAY_SECS;
    assert!(
        left <= full + 60 && left + 3600 >= full,
        "expires in {left} s, expected just under {days} days ({full} s)"
    );
}

#[test]
fn a_tls_client_is_served_and_counted_in_info_tls() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let proxy = tls_proxy(&pki, vec![backend.addr()], |_| {});
    let addr = proxy.tls_addr.expect("a TLS listener");
    let mut raw = proxy.raw();
    let mut c = TlsClient::connect(addr, &pki.ca, None).expect("handshake");
    assert_eq!(c.peer_cert(), cert_der(&pki.server_cert), "the --tls-cert");
    assert_eq!(c.cmd(&[b"SET", b"tls:k", b"over tls"]), b"+OK\r\n");
    assert_eq!(c.cmd(&[b"GET", b"tls:k"]), bulk(b"over tls"));
    assert_eq!(raw.cmd(&[b"GET", b"tls:k"]), bulk(b"over tls"), "plaintext");
    let mut direct = backend.client();
    let stored: String = redis::cmd("GET").arg("tls:k").query(&mut direct).unwrap();
    assert_eq!(stored, "over tls");
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"tls"])).into_owned();
    assert!(info.contains("backend_tls:no\r\n"), "{info}");
    assert_eq!(tls_stat(&mut raw, "tls_clients"), 1, "{info}");
    assert_eq!(tls_stat(&mut raw, "tls_handshakes"), 1, "{info}");
    assert_eq!(tls_stat(&mut raw, "tls_handshake_failures"), 0, "{info}");
    for reason in [
        "timeout",
        "eof",
        "protocol",
        "no_certificate",
        "bad_certificate",
        "other",
    ] {
        let field = format!("tls_handshake_failures_{reason}");
        assert_eq!(tls_stat(&mut raw, &field), 0, "{info}");
    }
    assert_eq!(tls_stat(&mut raw, "backend_tls_handshake_failures"), 0);
    let left = tls_stat(&mut raw, "tls_served_cert_expires_in_seconds");
    assert_expires_in(left, SERVER_CERT_DAYS);
    drop(c);
    let gone = wait_until(Duration::from_secs(3), || {
        tls_stat(&mut raw, "tls_clients") == 0
    });
    assert!(gone, "a TLS client that left is no longer counted");
}

/// `redis-cli --tls --cacert CA -h 127.0.0.1 -p PORT ARGS` with `input` on its stdin (files,
/// not pipes: a 1 MB reply must not fill a pipe nobody reads), killed after 60 s: its stdout,
/// or what went wrong.
fn cli_tls(port: u16, ca: &Path, args: &[&str], input: &[u8]) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (stdin, stdout) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&stdin, input).expect("write stdin");
    let mut child = Command::new("redis-cli")
        .args(["--tls", "--cacert", ca.to_str().expect("utf-8 path")])
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(std::fs::File::open(&stdin).expect("stdin file"))
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli must be installed (scripts/install-deps)");
    let mut status = None;
    let exited = wait_until(Duration::from_secs(60), || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("redis-cli {args:?} still running after 60 s"));
    }
    let out = std::fs::read(&stdout).unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(out),
        _ => Err(format!(
            "redis-cli {args:?} exited with {status:?}: {}",
            String::from_utf8_lossy(&out)
        )),
    }
}

/// With redis-cli at `port`: 10,000 RPUSH through `--pipe` (then the list read back in order)
/// and a 1 MB value set with `-x` and read back.
fn cli_pipeline_and_big_value(port: u16, ca: &Path) -> Result<(), String> {
    cli_tls(port, ca, &["DEL", "cli:tls:list", "cli:tls:big"], b"")?;
    let mut pipe = Vec::new();
    for i in 0..10_000 {
        let i = i.to_string();
        pipe.extend_from_slice(&respite::resp::encode_request(&[
            &b"RPUSH"[..],
            b"cli:tls:list",
            i.as_bytes(),
        ]));
    }
    let piped = String::from_utf8_lossy(&cli_tls(port, ca, &["--pipe"], &pipe)?).into_owned();
    if !piped.contains("errors: 0, replies: 10000") {
        return Err(format!("--pipe: {piped}"));
    }
    let listed = cli_tls(port, ca, &["LRANGE", "cli:tls:list", "0", "-1"], b"")?;
    let want: String = (0..10_000).map(|i| format!("{i}\n")).collect();
    if listed != want.as_bytes() {
        return Err(format!(
            "LRANGE: {} bytes, not 0..10000 in order",
            listed.len()
        ));
    }
    let big: Vec<u8> = (0..1 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let set = cli_tls(port, ca, &["-x", "SET", "cli:tls:big"], &big)?;
    if set != b"OK\n" {
        return Err(format!("SET -x: {}", String::from_utf8_lossy(&set)));
    }
    let mut got = cli_tls(port, ca, &["GET", "cli:tls:big"], b"")?;
    if got.pop() != Some(b'\n') || got != big {
        return Err(format!("GET of 1 MB: {} bytes, not the same", got.len()));
    }
    cli_tls(port, ca, &["DEL", "cli:tls:list", "cli:tls:big"], b"").map(|_| ())
}

#[test]
fn redis_cli_redis_py_and_ioredis_pipeline_and_move_1mb_over_tls_at_both_ends() {
    let _one = one_at_a_time();
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false);
    let proxy = tls_proxy(&pki, vec![redis.addr()], |c| tls_backends(c, &pki));
    let port = proxy.tls_addr.expect("a TLS listener").port();
    let ca = pki.ca.to_str().expect("utf-8 path");
    for app in [
        App::python("redis-py over TLS", "tls_clients.py", &[ca]),
        App::node("ioredis over TLS", "tls_clients.js", &[ca]),
    ] {
        let direct = app.run(redis.port);
        assert_passed_directly(&app, &direct);
        let via = app.run(port);
        compare_runs("tls", &app, &direct, &via);
    }
    cli_pipeline_and_big_value(redis.port, &pki.ca)
        .unwrap_or_else(|e| panic!("redis-cli directly against the TLS redis-server: {e}"));
    cli_pipeline_and_big_value(port, &pki.ca)
        .unwrap_or_else(|e| panic!("redis-cli through respite: {e}"));
    let mut raw = proxy.raw();
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"tls"])).into_owned();
    assert!(info.contains("backend_tls:yes\r\n"), "{info}");
    assert_eq!(tls_stat(&mut raw, "tls_handshake_failures"), 0, "{info}");
    assert!(tls_stat(&mut raw, "tls_handshakes") >= 8, "{info}");
}

#[test]
fn client_certificates_are_required_and_verified_against_the_client_ca() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false);
    let proxy = tls_proxy(&pki, vec![redis.addr()], |c| {
        tls_backends(c, &pki);
        c.tls.client_ca = Some(pki.ca.clone());
    });
    let addr = proxy.tls_addr.expect("a TLS listener");
    let mut raw = proxy.raw();
    let cases = [
        ("no certificate", None, "no_certificate"),
        (
            "a certificate from another CA",
            Some((
                pki.other_client_cert.as_path(),
                pki.other_client_key.as_path(),
            )),
            "bad_certificate",
        ),
        (
            "an expired certificate",
            Some((pki.expired_cert.as_path(), pki.expired_key.as_path())),
            "bad_certificate",
        ),
    ];
    for (what, identity, reason) in cases {
        let field = format!("tls_handshake_failures_{reason}");
        let before = tls_stat(&mut raw, &field);
        let ping = ping_over_tls(addr, &pki.ca, identity);
        assert!(ping.is_err(), "a client with {what} was served: {ping:?}");
        let counted = wait_until(Duration::from_secs(2), || {
            tls_stat(&mut raw, &field) > before
        });
        assert!(counted, "a client with {what} counted in {field}");
    }
    assert_eq!(tls_stat(&mut raw, "tls_handshake_failures"), 3);
    let identity = (pki.client_cert.as_path(), pki.client_key.as_path());
    let mut good = TlsClient::connect(addr, &pki.ca, Some(identity)).expect("handshake");
    assert_eq!(good.cmd(&[b"SET", b"mtls:k", b"v"]), b"+OK\r\n");
    assert_eq!(good.cmd(&[b"GET", b"mtls:k"]), bulk(b"v"));
    assert_eq!(redis.client().cmd(&[b"GET", b"mtls:k"]), bulk(b"v"));
    assert_eq!(tls_stat(&mut raw, "tls_clients"), 1);
    // redis-cli alike: refused without its --cert, served with it.
    let port = addr.port();
    let bare = cli_tls(port, &pki.ca, &["PING"], b"");
    assert!(!matches!(&bare, Ok(out) if out == b"PONG\n"), "{bare:?}");
    let (cert, key) = (pki.client_cert.to_str(), pki.client_key.to_str());
    let (cert, key) = (cert.expect("utf-8 path"), key.expect("utf-8 path"));
    let with_cert = cli_tls(port, &pki.ca, &["--cert", cert, "--key", key, "PING"], b"");
    assert_eq!(with_cert, Ok(b"PONG\n".to_vec()));
}

/// Asserts that respite (with one backend, at `backend`) answers every request with an error
/// at once, before and after its health checks mark the backend down; with `counted`, that
/// the failures show in `backend_tls_handshake_failures`.
fn assert_backend_refused(proxy: &TestProxy, backend: SocketAddr, counted: bool) {
    let mut raw = proxy.raw();
    let answer_at_once = |raw: &mut RawClient, limit: Duration| {
        let began = Instant::now();
        let reply = raw.cmd(&[b"GET", b"k"]);
        let took = began.elapsed();
        let text = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with(b"-ERR"), "not an error: {text}");
        assert!(took < limit, "{text} after {took:?}");
    };
    for _ in 0..3 {
        answer_at_once(&mut raw, Duration::from_secs(1));
    }
    let down = wait_until(Duration::from_secs(3), || {
        let info = raw.cmd(&[b"INFO", b"backends"]);
        String::from_utf8_lossy(&info).contains(&format!("addr={backend},state=down"))
    });
    assert!(down, "the backend that failed TLS is ejected");
    for _ in 0..20 {
        answer_at_once(&mut raw, Duration::from_millis(200));
    }
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"tls"])).into_owned();
    assert!(info.contains("backend_tls:yes\r\n"), "{info}");
    if counted {
        assert!(
            tls_stat(&mut raw, "backend_tls_handshake_failures") >= 1,
            "{info}"
        );
    }
}

/// Asserts that respite serves a SET and a GET through to `backend`.
fn assert_served(proxy: &TestProxy, backend: &TlsRedis) {
    let mut raw = proxy.raw();
    let set = wait_until(Duration::from_secs(3), || {
        raw.cmd(&[b"SET", b"served", b"yes"]) == b"+OK\r\n"
    });
    assert!(set, "SET served through TLS to the backend");
    assert_eq!(raw.cmd(&[b"GET", b"served"]), bulk(b"yes"));
    assert_eq!(backend.client().cmd(&[b"GET", b"served"]), bulk(b"yes"));
}

#[test]
fn a_backend_whose_certificate_another_ca_signed_is_ejected_and_requests_fail_at_once() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false);
    let mut wrong = config_over(vec![redis.addr()]);
    tls_backends(&mut wrong, &pki);
    wrong.tls.backend_ca = Some(pki.other_ca.clone());
    let proxy = TestProxy::start(wrong);
    assert_backend_refused(&proxy, redis.addr(), true);
    let mut right = config_over(vec![redis.addr()]);
    tls_backends(&mut right, &pki);
    assert_served(&TestProxy::start(right), &redis);
    // --backend-tls-insecure takes any certificate, even one the given CA did not sign.
    let mut insecure = config_over(vec![redis.addr()]);
    tls_backends(&mut insecure, &pki);
    insecure.tls.backend_ca = Some(pki.other_ca.clone());
    insecure.tls.backend_insecure = true;
    assert_served(&TestProxy::start(insecure), &redis);
}

#[test]
fn a_backend_whose_certificate_does_not_name_it_is_ejected_and_the_right_name_works() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, false);
    let with_sni = |sni: &str| {
        let mut c = config_over(vec![redis.addr()]);
        tls_backends(&mut c, &pki);
        c.tls.backend_sni = Some(sni.to_string());
        TestProxy::start(c)
    };
    assert_backend_refused(&with_sni("wrong.example"), redis.addr(), true);
    // The certificate's DNS name, as the default (the address's IP) is tested everywhere else.
    assert_served(&with_sni("localhost"), &redis);
}

#[test]
fn respite_presents_its_client_certificate_to_a_backend_that_requires_one() {
    let pki = Pki::new();
    let redis = TlsRedis::start(&pki, true);
    let mut bare = config_over(vec![redis.addr()]);
    tls_backends(&mut bare, &pki);
    let mut with_cert = bare.clone();
    // Without one, the backend refuses it (after the handshake, with TLS 1.3).
    assert_backend_refused(&TestProxy::start(bare), redis.addr(), false);
    with_cert.tls.backend_cert = Some(pki.client_cert.clone());
    with_cert.tls.backend_key = Some(pki.client_key.clone());
    assert_served(&TestProxy::start(with_cert), &redis);
}

/// The respite binary in front of `backend` on a free plaintext port and a free TLS port,
/// serving `cert`/`key`, with `extra` flags: the process and its TLS address.
fn tls_binary(
    backend: SocketAddr,
    cert: &Path,
    key: &Path,
    extra: &[&str],
) -> (RespiteProcess, SocketAddr) {
    let mut tls_addr = None;
    let p = RespiteProcess::start_with(|addr| {
        let tls = SocketAddr::from(([127, 0, 0, 1], free_port()));
        tls_addr = Some(tls);
        let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["--listen".to_string(), addr.to_string()];
        args.extend(["--tls-listen".to_string(), tls.to_string()]);
        args.extend(["--tls-cert".to_string(), path(cert)]);
        args.extend(["--tls-key".to_string(), path(key)]);
        args.extend(["--backends".to_string(), backend.to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    });
    (p, tls_addr.expect("a TLS address"))
}

/// Whether a new TLS client at `addr` is served the certificate `der`.
fn served(addr: SocketAddr, ca: &Path, der: &[u8]) -> bool {
    TlsClient::connect(addr, ca, None).is_ok_and(|c| c.peer_cert() == der)
}

#[test]
fn sighup_serves_a_rotated_certificate_to_new_clients_while_old_ones_keep_going() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let (cert, key) = (pki.path("served.pem"), pki.path("served.key"));
    pki.issue_server("respite-first", 30, &cert, &key);
    let first = cert_der(&cert);
    let (p, addr) = tls_binary(backend.addr(), &cert, &key, &[]);
    let mut plain = RawClient::connect(p.addr);
    let mut old = TlsClient::connect(addr, &pki.ca, None).expect("handshake");
    assert_eq!(old.peer_cert(), first);
    assert_eq!(old.cmd(&[b"SET", b"rot:k", b"1"]), b"+OK\r\n");
    assert_expires_in(
        tls_stat(&mut plain, "tls_served_cert_expires_in_seconds"),
        30,
    );

    pki.issue_server("respite-rotated", 60, &cert, &key);
    let rotated = cert_der(&cert);
    assert_ne!(rotated, first);
    p.signal("-HUP");
    let seen = wait_until(Duration::from_secs(5), || served(addr, &pki.ca, &rotated));
    assert!(seen, "a new client is served the rotated certificate");
    assert_expires_in(
        tls_stat(&mut plain, "tls_served_cert_expires_in_seconds"),
        60,
    );
    assert_eq!(
        old.cmd(&[b"PING"]),
        b"+PONG\r\n",
        "the old connection goes on"
    );
    assert_eq!(old.cmd(&[b"GET", b"rot:k"]), bulk(b"1"));
    assert_eq!(old.cmd(&[b"SET", b"rot:k", b"2"]), b"+OK\r\n");
    assert_eq!(old.peer_cert(), first);

    // A broken file: the reload fails and the rotated certificate stays.
    std::fs::write(&cert, "not a certificate\n").expect("break the cert file");
    p.signal("-HUP");
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        assert!(served(addr, &pki.ca, &rotated), "broken file kept out");
    }
    assert_eq!(old.cmd(&[b"GET", b"rot:k"]), bulk(b"2"));
    assert_eq!(plain.cmd(&[b"PING"]), b"+PONG\r\n");

    // A good file again is taken at the next SIGHUP.
    pki.issue_server("respite-third", 90, &cert, &key);
    let third = cert_der(&cert);
    p.signal("-HUP");
    let seen = wait_until(Duration::from_secs(5), || served(addr, &pki.ca, &third));
    assert!(seen, "a reload after a failed one works");
}

/// `GET /metrics` at `addr`: the body.
fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the sample `key` (`name{labels}`) in Prometheus text.
fn sample(body: &str, key: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn tls_clients_failures_and_served_cert_expiry_are_in_metrics() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let maddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (ca, maddr_s) = (pki.ca.to_str().expect("utf-8 path"), maddr.to_string());
    let extra = ["--tls-client-ca", ca, "--metrics-listen", &maddr_s];
    let (_p, addr) = tls_binary(backend.addr(), &pki.server_cert, &pki.server_key, &extra);
    let identity = (pki.client_cert.as_path(), pki.client_key.as_path());
    let mut good = TlsClient::connect(addr, &pki.ca, Some(identity)).expect("handshake");
    assert_eq!(good.cmd(&[b"PING"]), b"+PONG\r\n");
    assert!(
        ping_over_tls(addr, &pki.ca, None).is_err(),
        "no certificate"
    );
    let mut garbage = RawClient::connect(addr);
    garbage.send(b"*1\r\n$4\r\nPING\r\n");
    assert!(garbage.read_until_closed().0, "plaintext on the TLS port");
    let failures = |reason: &str| {
        format!("respite_tls_handshake_failures_total{{side=\"client\",reason=\"{reason}\"}}")
    };
    let mut body = String::new();
    let counted = wait_until(Duration::from_secs(3), || {
        body = metrics(maddr);
        sample(&body, &failures("no_certificate")) == Some(1.0)
            && sample(&body, &failures("protocol")) == Some(1.0)
    });
    assert!(counted, "{body}");
    assert_eq!(sample(&body, &failures("timeout")), Some(0.0), "{body}");
    assert_eq!(sample(&body, "respite_tls_clients"), Some(1.0), "{body}");
    let expiry = sample(&body, "respite_tls_cert_expiry_seconds{cert=\"served\"}");
    let expiry = expiry.unwrap_or_else(|| panic!("no served cert expiry:\n{body}"));
    assert_expires_in(expiry as u64, SERVER_CERT_DAYS);
    drop(good);
}

#[test]
fn bytes_that_are_not_tls_are_closed_at_once_as_protocol_failures() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    // The default handshake timeout (10 s): a close within 2 s is the protocol check's.
    let proxy = tls_proxy(&pki, vec![backend.addr()], |_| {});
    let addr = proxy.tls_addr.expect("a TLS listener");
    let mut plain = proxy.raw();
    let before = tls_stat(&mut plain, "tls_handshake_failures_protocol");
    // A plaintext client, an HTTP one, and a handshake record with a ClientHello cut short.
    let hostile: [&[u8]; 3] = [
        b"*1\r\n$4\r\nPING\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        &[0x16, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0],
    ];
    for bytes in hostile {
        let mut c = RawClient::connect(addr);
        c.send(bytes);
        let began = Instant::now();
        let (closed, _) = c.read_until_closed();
        let took = began.elapsed();
        let what = String::from_utf8_lossy(bytes);
        assert!(
            closed && took < Duration::from_secs(2),
            "{what:?}: {took:?}"
        );
    }
    let counted = wait_until(Duration::from_secs(2), || {
        tls_stat(&mut plain, "tls_handshake_failures_protocol") >= before + 3
    });
    assert!(counted, "3 protocol failures");
    assert_eq!(tls_stat(&mut plain, "tls_handshakes"), 0);
    assert_eq!(
        ping_over_tls(addr, &pki.ca, None).ok(),
        Some(b"+PONG\r\n".to_vec())
    );
}

#[test]
fn a_handshake_that_stops_halfway_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let proxy = tls_proxy(&pki, vec![backend.addr()], |c| {
        c.tls.handshake_timeout = Duration::from_secs(1);
    });
    let addr = proxy.tls_addr.expect("a TLS listener");
    let mut plain = proxy.raw();
    let stat = |plain: &mut RawClient, reason: &str| {
        tls_stat(plain, &format!("tls_handshake_failures_{reason}"))
    };
    let (timeouts, eofs) = (stat(&mut plain, "timeout"), stat(&mut plain, "eof"));
    let hello = client_hello(&pki.ca);
    assert!(hello.len() > 100, "a ClientHello of {} bytes", hello.len());
    let mut part = RawClient::connect(addr);
    part.send(&hello[..50]);
    // A whole ClientHello and then silence: respite answers, the client never finishes.
    let mut whole = RawClient::connect(addr);
    whole.send(&hello);
    let began = Instant::now();
    let (part_closed, _) = part.read_until_closed();
    let part_after = began.elapsed();
    let (whole_closed, answered) = whole.read_until_closed();
    let whole_after = began.elapsed();
    assert!(part_closed && whole_closed, "both closed");
    assert!(answered > 0, "respite answered the whole ClientHello");
    for after in [part_after, whole_after] {
        let at_timeout = Duration::from_millis(900)..Duration::from_secs(4);
        assert!(at_timeout.contains(&after), "closed after {after:?}");
    }
    let counted = wait_until(Duration::from_secs(2), || {
        stat(&mut plain, "timeout") >= timeouts + 2
    });
    assert!(counted, "both counted as timeouts");
    // A client that leaves halfway is an `eof`.
    let mut quitter = TcpStream::connect(addr).expect("connect");
    quitter.write_all(&hello[..50]).expect("half a hello");
    drop(quitter);
    let counted = wait_until(Duration::from_secs(2), || stat(&mut plain, "eof") > eofs);
    let info = String::from_utf8_lossy(&plain.cmd(&[b"INFO", b"tls"])).into_owned();
    assert!(counted, "a client gone halfway counted as eof:\n{info}");
}

/// Whether the peer has closed `s` (non-blocking): EOF or an error; what it sent is skipped.
fn closed_now(mut s: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn two_thousand_stalled_handshakes_hold_up_no_one_and_are_closed_at_the_timeout() {
    let _one = one_at_a_time();
    let pki = Pki::new();
    let backend = RedisServer::start();
    let timeout = Duration::from_secs(3);
    let proxy = tls_proxy(&pki, vec![backend.addr()], |c| {
        c.tls.handshake_timeout = timeout;
    });
    let addr = proxy.tls_addr.expect("a TLS listener");
    let mut plain = proxy.raw();
    let mut early = TlsClient::connect(addr, &pki.ca, None).expect("handshake");
    let timeouts = tls_stat(&mut plain, "tls_handshake_failures_timeout");
    let hello = client_hello(&pki.ca);
    // Half of them send nothing, half send half a ClientHello.
    let stalled: Vec<(TcpStream, Instant)> = (0..2_000)
        .map(|i| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
            if i % 2 == 0 {
                s.write_all(&hello[..hello.len() / 2])
                    .expect("half a hello");
            }
            s.set_nonblocking(true).expect("nonblocking");
            (s, Instant::now())
        })
        .collect();
    let mut late =
        TlsClient::connect(addr, &pki.ca, None).expect("a handshake among 2,000 stalled");
    let mut slowest = Duration::ZERO;
    for i in 0..100 {
        let (k, v) = (format!("stall:{i}"), format!("v{i}"));
        let began = Instant::now();
        assert_eq!(early.cmd(&[b"SET", k.as_bytes(), v.as_bytes()]), b"+OK\r\n");
        assert_eq!(late.cmd(&[b"GET", k.as_bytes()]), bulk(v.as_bytes()));
        assert_eq!(plain.cmd(&[b"GET", k.as_bytes()]), bulk(v.as_bytes()));
        slowest = slowest.max(began.elapsed());
    }
    assert!(slowest < Duration::from_secs(1), "a round took {slowest:?}");
    // None closed before its time (those opened less than timeout - 1 s ago)...
    let young = stalled
        .iter()
        .filter(|(_, at)| at.elapsed() + Duration::from_secs(1) < timeout);
    let mut checked = 0;
    for (s, at) in young {
        assert!(!closed_now(s), "closed {:?} after it opened", at.elapsed());
        checked += 1;
    }
    // ...and every one closed by the timeout.
    let last_opened = stalled.last().map(|(_, at)| *at).expect("2,000 opened");
    let mut open: Vec<TcpStream> = stalled.into_iter().map(|(s, _)| s).collect();
    let all_closed = wait_until(timeout + Duration::from_secs(5), || {
        open.retain(|s| !closed_now(s));
        open.is_empty()
    });
    assert!(all_closed, "{} stalled handshakes still open", open.len());
    eprintln!(
        "2,000 stalled handshakes: slowest round {slowest:?}, {checked} young ones still open, \
         all closed {:?} after the last opened",
        last_opened.elapsed()
    );
    let counted = wait_until(Duration::from_secs(2), || {
        tls_stat(&mut plain, "tls_handshake_failures_timeout") >= timeouts + 2_000
    });
    assert!(counted, "2,000 timeouts counted");
    assert_eq!(early.cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(late.cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn sessions_fan_outs_and_pub_sub_run_over_tls_backends() {
    let pki = Pki::new();
    let (a, b) = (TlsRedis::start(&pki, false), TlsRedis::start(&pki, false));
    // One backend (backends are equivalent), two shards: `b` is empty, but SCAN walks it too.
    let proxy = tls_proxy(&pki, vec![a.addr()], |c| {
        tls_backends(c, &pki);
        c.shards = vec![a.addr(), b.addr()];
    });
    wait_for_roles(&proxy);
    // Sessions: WATCH/MULTI/EXEC and a blocking pop, each on a TLS connection of its own.
    assert_eq!(watched_increments(&proxy, "tls:counter", 2, 20), 40);
    assert_blpop_woken_by_lpush(&proxy, "tls:queue", "job");
    // Fan-outs: keys written through the backends are all found by SCAN over both shards.
    let mut c = proxy.client();
    for i in 0..100 {
        let () = redis::cmd("SET")
            .arg(format!("fan:{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET");
    }
    let mut found: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    for _ in 0..1_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("fan:*")
            .query(&mut c)
            .expect("SCAN");
        found.extend(keys);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    found.sort();
    found.dedup();
    assert_eq!((cursor, found.len()), (0, 100), "SCAN over two TLS shards");
    // Pub/sub, on a TLS connection to the pub/sub target.
    let mut sub = proxy.client();
    let mut ps = sub.as_pubsub();
    ps.subscribe("tls:news").expect("SUBSCRIBE");
    ps.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let published = wait_until(Duration::from_secs(3), || {
        redis::cmd("PUBLISH")
            .arg("tls:news")
            .arg("hello")
            .query::<i64>(&mut c)
            .is_ok_and(|n| n >= 1)
    });
    assert!(published, "PUBLISH reached the subscriber");
    let msg = ps.get_message().expect("a message");
    assert_eq!(msg.get_payload::<String>().expect("payload"), "hello");
    drop(ps);
    // Every upstream's certificate was seen, and no handshake failed.
    let mut raw = proxy.raw();
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"tls"])).into_owned();
    for line in ["backend0_cert:", "shard0_cert:", "shard1_cert:"] {
        assert!(info.contains(line), "INFO tls has {line}:\n{info}");
    }
    assert_eq!(tls_stat(&mut raw, "backend_tls_handshake_failures"), 0);
}
