//! TLS corner cases found in review, each against a real respite and real peers: a close_notify
//! that arrives with the last request, a shutdown while a TLS client is still reading a large
//! reply, handshakes that fail at either end counted once with their reason, and requests sent
//! toward a backend whose handshake fails re-routed rather than failed.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn a_close_notify_sent_with_the_last_request_closes_after_its_reply() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let proxy = tls_proxy(&pki, vec![backend.addr()], |_| {});
    let addr = proxy.tls_addr.expect("a TLS listener");
    let mut client = TlsClient::connect(addr, &pki.ca, None).expect("handshake");
    // PING and close_notify in one flight; the TCP connection stays open.
    client
        .send_then_close_notify(b"*1\r\n$4\r\nPING\r\n")
        .expect("send");
    let began = Instant::now();
    assert_eq!(client.try_reply().expect("PONG first"), b"+PONG\r\n");
    let end = client.try_reply();
    assert!(end.is_err(), "respite closes after the reply: {end:?}");
    assert!(began.elapsed() < Duration::from_secs(2), "closed at once");
    assert_eq!(tls_stat(&mut proxy.raw(), "tls_handshake_failures"), 0);
}

#[test]
fn shutdown_finishes_writing_a_large_reply_to_a_slow_tls_reader() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let big = vec![b'x'; 4 << 20];
    let () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut backend.client())
        .expect("SET big");
    let mut proxy = tls_proxy(&pki, vec![backend.addr()], |_| {});
    let addr = proxy.tls_addr.expect("a TLS listener");
    let mut client = TlsClient::connect(addr, &pki.ca, None).expect("handshake");
    client
        .try_send(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
        .expect("GET");
    // The reply fills the socket buffers while the client reads nothing; then respite stops.
    std::thread::sleep(Duration::from_millis(300));
    let stopper = std::thread::spawn(move || proxy.stop());
    std::thread::sleep(Duration::from_millis(300));
    // Slowly, so that respite's socket stays full to the last record.
    let reply = client
        .reply_by(16 << 10, Duration::from_millis(1))
        .expect("the whole reply");
    assert_eq!(
        reply.len(),
        big.len() + format!("${}\r\n\r\n", big.len()).len()
    );
    assert!(reply.ends_with(b"xxx\r\n"));
    stopper.join().expect("stopper").expect("a clean stop");
}

#[test]
fn client_handshakes_that_break_are_counted_once_by_reason() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let proxy = tls_proxy(&pki, vec![backend.addr()], |_| {});
    let addr = proxy.tls_addr.expect("a TLS listener");
    // A reset halfway through the handshake: eof.
    let hello = client_hello(&pki.ca);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(&hello[..hello.len() / 2])
        .expect("half a hello");
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("linger 0: close sends RST");
    drop(s);
    let counted = wait_until(Duration::from_secs(3), || {
        tls_stat(&mut proxy.raw(), "tls_handshake_failures_eof") == 1
    });
    assert!(counted, "a reset during the handshake is an eof failure");
    // Garbage after a good handshake and a request is not a handshake failure.
    let mut good = TlsClient::connect(addr, &pki.ca, None).expect("handshake");
    assert_eq!(good.cmd(&[b"PING"]), b"+PONG\r\n");
    let closed = good
        .sock_mut()
        .write_all(&[0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5]);
    assert!(closed.is_ok());
    assert!(good.try_reply().is_err(), "closed after garbage");
    assert_eq!(tls_stat(&mut proxy.raw(), "tls_handshakes"), 1);
    assert_eq!(
        tls_stat(&mut proxy.raw(), "tls_handshake_failures"),
        1,
        "only the reset"
    );
    assert_eq!(tls_stat(&mut proxy.raw(), "tls_clients"), 0);
}

#[test]
fn backends_that_close_or_stall_the_handshake_are_counted_and_ejected() {
    let pki = Pki::new();
    // One that accepts and closes at once, one that accepts (the kernel does) and says nothing.
    let closer = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let closer_addr = closer.local_addr().expect("addr");
    let closing = std::thread::spawn(move || {
        closer.set_nonblocking(true).expect("nonblocking");
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(4) {
            match closer.accept() {
                Ok((s, _)) => drop(s),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let addrs = vec![closer_addr, silent.local_addr().expect("addr")];
    let proxy = tls_proxy(&pki, addrs, |c| {
        c.tls.backend = true;
        c.tls.backend_ca = Some(pki.ca.clone());
        // A request caught in the silent backend's handshake waits this long, like one a
        // plaintext backend never answers.
        c.backend_timeout = Duration::from_secs(1);
    });
    let counted = wait_until(Duration::from_secs(3), || {
        tls_stat(&mut proxy.raw(), "backend_tls_handshake_failures_eof") >= 1
            && tls_stat(&mut proxy.raw(), "backend_tls_handshake_failures_timeout") >= 1
    });
    assert!(
        counted,
        "a backend closing and one stalling the handshake are both counted"
    );
    let mut raw = proxy.raw();
    let reply = raw.cmd(&[b"GET", b"k"]);
    assert!(
        reply.starts_with(b"-ERR"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    closing.join().expect("closer");
}

/// A server that answers every connection with bytes that are not TLS, then closes it, for
/// `secs` seconds.
fn not_tls_server(secs: u64) -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serving = std::thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(secs) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"-ERR this is not TLS\r\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (addr, serving)
}

#[test]
fn requests_toward_a_backend_whose_handshake_fails_go_to_another() {
    let pki = Pki::new();
    let good = TlsRedis::start(&pki, false);
    // Its handshake fails, after requests were already routed to it.
    let (bad, serving) = not_tls_server(4);
    let proxy = tls_proxy(&pki, vec![good.addr(), bad], |c| {
        c.tls.backend = true;
        c.tls.backend_ca = Some(pki.ca.clone());
        // Probes far apart: the failing backend stays in the rotation while requests run.
        c.health_interval = Duration::from_secs(30);
        c.health_timeout = Duration::from_secs(5);
    });
    let mut raw = proxy.raw();
    let mut failed = Vec::new();
    for i in 0..40 {
        let key = format!("k{i}");
        let reply = raw.cmd(&[b"SET", key.as_bytes(), b"v"]);
        if reply != b"+OK\r\n" {
            failed.push(String::from_utf8_lossy(&reply).into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(tls_stat(&mut proxy.raw(), "backend_tls_handshake_failures") >= 1);
    serving.join().expect("server");
}

#[test]
fn tls_1_2_clients_are_served_too() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let proxy = tls_proxy(&pki, vec![backend.addr()], |_| {});
    let addr = proxy.tls_addr.expect("a TLS listener");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der(&pki.ca).into()).expect("CA");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client = TlsClient::connect_with(addr, std::sync::Arc::new(config)).expect("handshake");
    assert_eq!(client.version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(client.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    assert_eq!(client.cmd(&[b"GET", b"k"]), bulk(b"v"));
}

#[test]
fn clients_in_their_handshake_count_against_maxclients() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let proxy = tls_proxy(&pki, vec![backend.addr()], |c| c.maxclients = 3);
    let addr = proxy.tls_addr.expect("a TLS listener");
    // Serving (past discovery, when accepts wait), and that client gone again.
    assert_eq!(proxy.raw().cmd(&[b"PING"]), b"+PONG\r\n");
    let free = wait_until(Duration::from_secs(3), || {
        let info = proxy.raw().cmd(&[b"INFO", b"clients"]);
        info_number(&info, "connected_clients") == Some(1)
    });
    assert!(free, "only the asking client is connected");
    // Three connections that never say a word hold every place.
    let stalled: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let counted = wait_until(Duration::from_secs(3), || {
        let mut c = TcpStream::connect(proxy.addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut reply = [0u8; 64];
        let n = std::io::Read::read(&mut c, &mut reply).unwrap_or(0);
        reply[..n].starts_with(b"-ERR max number of clients reached")
    });
    assert!(
        counted,
        "a fourth client is refused while three handshakes wait"
    );
    drop(stalled);
    let served = wait_until(Duration::from_secs(3), || {
        let mut raw = proxy.raw();
        raw.send(b"PING\r\n");
        raw.try_reply().is_ok_and(|r| r == b"+PONG\r\n")
    });
    assert!(served, "a place is free again once they leave");
}

#[test]
fn random_bytes_before_during_and_after_handshakes_leave_a_good_tls_client_alone() {
    let pki = Pki::new();
    let backend = RedisServer::start();
    let proxy = tls_proxy(&pki, vec![backend.addr()], |c| {
        c.tls.handshake_timeout = Duration::from_secs(1);
    });
    let addr = proxy.tls_addr.expect("a TLS listener");
    let mut good = TlsClient::connect(addr, &pki.ca, None).expect("handshake");
    let hello = client_hello(&pki.ca);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut hostile = Vec::new();
    let mut established = Vec::new();
    for i in 0..200 {
        let mut bytes = noise(&mut seed, 2048);
        match i % 3 {
            // Noise instead of a ClientHello.
            0 => {}
            // The start of a real ClientHello, then noise.
            1 => bytes = [&hello[..hello.len() / 2], &bytes[..]].concat(),
            // A real session, then noise where records should be.
            _ => {
                let mut c = TlsClient::connect(addr, &pki.ca, None).expect("handshake");
                let _ = c.sock_mut().write_all(&bytes);
                established.push(c);
                continue;
            }
        }
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let _ = s.write_all(&bytes);
        hostile.push(s);
    }
    for i in 0..100 {
        let k = format!("k{i}");
        assert_eq!(good.cmd(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
        assert_eq!(good.cmd(&[b"GET", k.as_bytes()]), bulk(b"v"));
    }
    // Every hostile connection is closed (at once, or at the handshake timeout); the good one
    // stays.
    let closed = wait_until(Duration::from_secs(6), || {
        tls_stat(&mut proxy.raw(), "tls_clients") == 1
    });
    assert!(closed, "only the good TLS client is left");
    assert!(established.iter_mut().all(|c| c.try_reply().is_err()));
    assert_eq!(good.cmd(&[b"PING"]), b"+PONG\r\n");
    drop(hostile);
}
