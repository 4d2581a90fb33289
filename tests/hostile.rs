//! Hostile input, backend failures under load, and bounded memory.

mod support;

use respite::resp::encode_request;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

fn expect_protocol_error_and_close(proxy: &TestProxy, bytes: &[u8]) {
    let mut raw = proxy.raw();
    let _ = raw.stream.write_all(bytes);
    let reply = raw.reply();
    assert!(
        reply.starts_with(b"-ERR Protocol error: "),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(raw.is_closed());
}

#[test]
fn hostile_frames_get_an_error_and_a_close_and_leave_others_alone() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| c.limits.max_bulk_bytes = 1 << 20);
    let mut good = proxy.raw();
    assert_eq!(good.cmd(&[b"SET", b"g", b"1"]), b"+OK\r\n");
    let cases: Vec<Vec<u8>> = vec![
        b"*1\r\n".repeat(100_000),
        b"*2147483647\r\n".to_vec(),
        b"*1\r\n$2097152\r\n".to_vec(),
        b"*1\r\n$-3\r\n".to_vec(),
        b"*-x\r\n".to_vec(),
        b"*1\r\n$1x\r\n".to_vec(),
        b"*2\r\n$3\r\nGET\r\n+k\r\n".to_vec(),
        b"*1\r\n$04\r\nPING\r\n".to_vec(),
        vec![b'a'; 70 * 1024],
    ];
    for case in &cases {
        expect_protocol_error_and_close(&proxy, case);
        assert_eq!(good.cmd(&[b"GET", b"g"]), b"$1\r\n1\r\n");
    }
    let info = String::from_utf8_lossy(&good.cmd(&[b"INFO", b"stats"])).into_owned();
    assert!(
        info.contains(&format!("protocol_errors:{}", cases.len())),
        "{info}"
    );
}

#[test]
fn random_bytes_on_200_connections_do_not_disturb_a_good_client() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let addr = proxy.addr;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut conns = Vec::new();
    for _ in 0..200 {
        let bytes = noise(&mut seed, 4096);
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
        let _ = s.write_all(&bytes);
        conns.push(s);
    }
    let mut good = proxy.raw();
    for i in 0..100 {
        let k = format!("k{i}");
        assert_eq!(good.cmd(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
    }
    drop(conns);
    assert_eq!(good.cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn a_slow_loris_is_closed_by_the_idle_timeout_while_others_are_served() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| c.timeout = Some(Duration::from_secs(1)));
    let mut loris = proxy.raw();
    let mut good = proxy.raw();
    let start = Instant::now();
    let mut closed_after = None;
    for &byte in b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\n"
        .iter()
        .cycle()
        .take(40)
    {
        if loris.stream.write_all(&[byte]).is_err() {
            closed_after = Some(start.elapsed());
            break;
        }
        assert_eq!(good.cmd(&[b"PING"]), b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(150));
    }
    let closed = closed_after.is_some() || loris.is_closed();
    assert!(closed, "the trickling client was closed");
    assert!(start.elapsed() < Duration::from_secs(6));
}

#[test]
fn thousands_of_connections_at_once_back_off_at_maxclients_without_spinning() {
    // The binary, so that its CPU time and memory are its own.
    let a = RedisServer::start();
    let child =
        RespiteProcess::start(&["--backends", &a.addr().to_string(), "--maxclients", "2000"]);
    let addr = child.addr;
    let rss_before = child.rss_kib();
    let conns: Vec<TcpStream> = (0..4000)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(conns.len() >= 3900, "opened {}", conns.len());
    let mut rejected = 0;
    for mut c in conns.iter().skip(2100).take(200) {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = c.read(&mut buf) {
            if buf[..n].starts_with(b"-ERR max number of clients reached") {
                rejected += 1;
            }
        }
    }
    assert!(rejected >= 190, "rejected {rejected} of 200 checked");
    std::thread::sleep(Duration::from_millis(300));
    let before = child.cpu_seconds();
    std::thread::sleep(Duration::from_secs(1));
    let used = child.cpu_seconds() - before;
    let rss = child.rss_kib();
    eprintln!(
        "2000 idle clients: RSS {} KiB (was {rss_before} KiB), CPU {used:.2}s in 1 s",
        rss
    );
    assert!(used < 0.2, "the proxy spun: {used:.2}s of CPU in 1 s idle");
    assert!(rss < 64 * 1024, "RSS {rss} KiB");
    drop(conns);
    let mut c = RawClient::connect(addr);
    assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn a_loading_backend_is_ejected_and_never_readmitted_while_loading() {
    let good = RedisServer::start();
    // Like a Redis loading its data set.
    let fake = FakeBackend::always(b"-LOADING Redis is loading the dataset in memory\r\n");
    let loading = fake.addr;
    let proxy = TestProxy::over_with(&[&good], |c| c.backends.push(loading));
    let mut raw = proxy.raw();
    let down = wait_until(Duration::from_secs(3), || {
        String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"backends"]))
            .contains(&format!("addr={loading},state=down"))
    });
    assert!(down, "-LOADING to PING ejects the backend");
    for round in 0..10 {
        for i in 0..20 {
            let k = format!("k{i}");
            assert_eq!(
                raw.cmd(&[b"SET", k.as_bytes(), b"v"]),
                b"+OK\r\n",
                "round {round}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"backends"])).into_owned();
    assert!(
        info.contains(&format!("addr={loading},state=down")),
        "still down while loading: {info}"
    );
}

#[test]
fn a_hung_backend_is_ejected_by_timeouts_and_readmitted_after_sigcont() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let mut config = config_for(&[&a, &b]);
    config.backend_timeout = Duration::from_millis(1000);
    let (interval, fall, rise) = (config.health_interval, config.fall, config.rise);
    let proxy = TestProxy::start(config);
    let load = Load::start(proxy.addr, 5, "t");
    std::thread::sleep(Duration::from_millis(300));
    let stopped_at = Instant::now();
    b.while_stopped(|| {
        std::thread::sleep(
            Duration::from_millis(1000) + interval * fall + Duration::from_millis(1500),
        )
    });
    let resumed_at = Instant::now();
    let before = b.calls("set");
    let back = wait_until(interval * rise + Duration::from_secs(2), || {
        b.calls("set") > before
    });
    let back_after = resumed_at.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let log = load.stop();
    let slowest = log.slowest();
    let window = Duration::from_millis(1000) + interval * fall + Duration::from_secs(1);
    let last_error = log.last_error_since(stopped_at);
    eprintln!("SIGSTOP: slowest request {slowest:?}, last error {last_error:?} after the stop, back after SIGCONT in {back_after:?}");
    assert!(
        slowest < Duration::from_secs(3),
        "a request took {slowest:?}"
    );
    assert!(
        log.errors_after(stopped_at + window) == 0,
        "errors after {window:?}"
    );
    assert!(back, "re-admitted after SIGCONT");
}

#[test]
fn reads_are_retried_once_on_another_backend_and_writes_never() {
    for retry in [true, false] {
        let mut a = RedisServer::start();
        let b = RedisServer::start();
        for s in [&a, &b] {
            let () = redis::cmd("SET")
                .arg("k")
                .arg("v")
                .query(&mut s.client())
                .unwrap();
        }
        let proxy = TestProxy::over_with(&[&a, &b], |c| c.retry_reads = retry);
        let mut raw = proxy.raw();
        // The first pick is backend 0 (a): the GET and SET queue behind a slow command there.
        let mut p = sleep_request(500_000);
        p.extend_from_slice(&encode_request(&[&b"GET"[..], b"k"]));
        p.extend_from_slice(&encode_request(&[&b"SET"[..], b"w", b"1"]));
        raw.send(&p);
        std::thread::sleep(Duration::from_millis(150));
        a.kill();
        assert!(
            raw.reply().starts_with(b"-ERR backend"),
            "the slow script fails"
        );
        let get = raw.reply();
        if retry {
            assert_eq!(
                get, b"$1\r\nv\r\n",
                "the read was retried on the other backend"
            );
        } else {
            assert!(
                get.starts_with(b"-ERR backend"),
                "{}",
                String::from_utf8_lossy(&get)
            );
        }
        let set = raw.reply();
        assert!(
            set.starts_with(b"-ERR backend"),
            "a write is never retried: {}",
            String::from_utf8_lossy(&set)
        );
        assert_eq!(
            b.calls("set"),
            1,
            "only the preload SET reached the other backend"
        );
    }
}

#[test]
fn writes_acknowledged_during_a_backend_kill_are_all_readable_afterwards() {
    let shard = RedisServer::start();
    let proxies: Vec<Nutcracker> = (0..2).map(|_| Nutcracker::start(&[shard.addr()])).collect();
    let proxy = TestProxy::start(config_over(proxies.iter().map(|p| p.addr()).collect()));
    let load = Load::start(proxy.addr, 5, "ack:");
    std::thread::sleep(Duration::from_millis(400));
    let mut proxies = proxies;
    drop(proxies.remove(0));
    std::thread::sleep(Duration::from_millis(1500));
    let acked = load.stop().acked_keys();
    assert!(acked.len() > 100);
    let mut c = shard.client();
    let mut missing = 0;
    for chunk in acked.chunks(1000) {
        let n: u64 = redis::cmd("EXISTS").arg(chunk).query(&mut c).unwrap();
        missing += chunk.len() as u64 - n;
    }
    assert_eq!(missing, 0, "every acknowledged write is readable");
}

#[test]
fn a_backend_that_stops_reading_stops_the_client_feeding_it() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], patient);
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"PING"]), b"+PONG\r\n");
    let value = vec![b'x'; 1 << 20];
    let req = encode_request(&[&b"SET"[..], b"big", &value]);
    let accepted = a.while_stopped(|| raw.write_until_blocked(&req, 300));
    eprintln!(
        "a client feeding a stopped backend got {} MB in before being stopped",
        accepted >> 20
    );
    assert!(
        accepted < 80 << 20,
        "respite kept reading: {} MB",
        accepted >> 20
    );
}
