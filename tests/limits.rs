//! Per-client limits: backpressure on pending requests and queued output, and the output limit.

mod support;

use respite::resp::encode_request;
use std::time::Duration;
use support::*;

#[test]
fn a_client_over_max_pending_is_paused_then_resumed_without_losing_order() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| c.client_max_pending = 64);
    let mut raw = proxy.raw();
    let mut p = Vec::new();
    for i in 0..20_000 {
        p.extend_from_slice(&encode_request(&[b"INCR".as_slice(), b"ctr"]));
        if i % 5000 == 0 {
            p.extend_from_slice(b"PING\r\n");
        }
    }
    let writer = {
        let mut w = raw.stream.try_clone().unwrap();
        std::thread::spawn(move || std::io::Write::write_all(&mut w, &p).unwrap())
    };
    for i in 0..20_000 {
        assert_eq!(raw.reply(), format!(":{}\r\n", i + 1).into_bytes());
        if i % 5000 == 0 {
            assert_eq!(raw.reply(), b"+PONG\r\n");
        }
    }
    writer.join().unwrap();
}

#[test]
fn a_client_that_never_reads_is_disconnected_at_the_output_limit_and_others_are_unharmed() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| {
        c.client_output_limit = 8 << 20;
        // Requests already forwarded cannot be recalled: their replies still cross the shared
        // backend connection. The pending cap bounds that to 16 MB here.
        c.client_max_pending = 16;
    });
    let mut setup = proxy.raw();
    let big = vec![b'x'; 1 << 20];
    assert_eq!(setup.cmd(&[b"SET", b"big", &big]), b"+OK\r\n");
    let mut hog = proxy.raw();
    hog.stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let get = encode_request(&[&b"GET"[..], b"big"]);
    let mut sent = 0;
    for _ in 0..2000 {
        if std::io::Write::write_all(&mut hog.stream, &get).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 20, "sent {sent}");
    let mut other = proxy.raw();
    for i in 0..50 {
        let k = format!("o{i}");
        assert_eq!(other.cmd(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
    }
    // The hog is cut off: reading its socket reaches EOF (or a reset) after at most the limit.
    let (closed, total) = hog.read_until_closed();
    assert!(closed, "hog disconnected (read {total} bytes)");
    assert!(total < 64 << 20, "hog got {total} bytes before the cut");
    assert_eq!(other.cmd(&[b"GET", b"o1"]), b"$1\r\nv\r\n");
}
