//! Health checks and failover with real redis-server processes that are killed and restarted.

mod support;

use std::time::{Duration, Instant};
use support::*;

#[test]
fn killing_one_of_two_backends_under_load_recovers_within_fall_times_interval() {
    let a = RedisServer::start();
    let mut b = RedisServer::start();
    let config = config_for(&[&a, &b]);
    let (interval, fall, rise) = (config.health_interval, config.fall, config.rise);
    let proxy = TestProxy::start(config);
    let load = Load::start(proxy.addr, 4, "t");
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    b.kill();
    std::thread::sleep(interval * fall + Duration::from_secs(2));
    let restarted_at = Instant::now();
    b.restart();
    let back = wait_until(interval * rise + Duration::from_secs(1), || {
        b.calls("set") > 0
    });
    let back_after = restarted_at.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let log = load.stop();
    let window = interval * fall + Duration::from_secs(1);
    let slowest = log.slowest();
    assert!(
        slowest < Duration::from_secs(3),
        "a request took {slowest:?}"
    );
    let last_error = log.last_error_since(killed_at);
    let errors = log.errors();
    eprintln!("failover: {errors} errors, last {last_error:?} after kill -9; slowest request {slowest:?}; restarted backend served again after {back_after:?}");
    let late_errors = log.errors_after(killed_at + window);
    assert_eq!(
        late_errors, 0,
        "errors after the failover window of {window:?}"
    );
    let ok_after = log.oks_after(killed_at + window);
    assert!(
        ok_after > 100,
        "requests kept succeeding after the kill ({ok_after})"
    );
    assert!(
        back,
        "restarted backend got no traffic within {:?} (rise x interval + 1 s)",
        back_after
    );
}

#[test]
fn with_every_backend_down_clients_get_an_error_at_once() {
    let mut a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    a.kill();
    // The first request may be the one that discovers the failure.
    let first = raw.cmd(&[b"GET", b"k"]);
    assert!(
        first.starts_with(b"-ERR "),
        "{}",
        String::from_utf8_lossy(&first)
    );
    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(raw.cmd(&[b"GET", b"k"]), b"-ERR no backend available\r\n");
        assert!(start.elapsed() < Duration::from_millis(100));
    }
    let mut fresh = proxy.raw();
    assert_eq!(
        fresh.cmd(&[b"PING"]),
        b"+PONG\r\n",
        "local commands still work"
    );
    a.restart();
    let recovered = wait_until(Duration::from_secs(3), || {
        raw.cmd(&[b"SET", b"k", b"2"]) == b"+OK\r\n"
    });
    assert!(recovered, "backend re-admitted after restart");
}

#[test]
fn a_backend_that_answers_errors_to_ping_is_ejected_and_readmitted() {
    // A password on the backend that respite does not know: PING answers -NOAUTH, so the probe
    // fails even though the port is open.
    let a = RedisServer::start();
    let locked = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let proxy = TestProxy::over(&[&a, &locked]);
    let mut raw = proxy.raw();
    let down = wait_until(Duration::from_secs(3), || {
        let info = raw.cmd(&[b"INFO", b"backends"]);
        String::from_utf8_lossy(&info).contains(&format!("addr={},state=down", locked.addr()))
    });
    assert!(down, "backend answering -NOAUTH is ejected");
    for i in 0..20 {
        let k = format!("k{i}");
        assert_eq!(raw.cmd(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
    }
    let mut admin = redis::Client::open(format!("redis://:s3cret@{}/", locked.addr()))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query(&mut admin)
        .unwrap();
    assert_eq!(
        locked.calls("set"),
        0,
        "an ejected backend gets no requests"
    );
    let up = wait_until(Duration::from_secs(3), || {
        let info = raw.cmd(&[b"INFO", b"backends"]);
        String::from_utf8_lossy(&info).contains(&format!("addr={},state=up", locked.addr()))
    });
    assert!(up, "backend re-admitted after rise good probes");
}

#[test]
fn respite_authenticates_to_backends_with_backend_password() {
    let a = RedisServer::start_with(&["--requirepass", "pw"]);
    let proxy = TestProxy::over_with(&[&a], |c| c.backend_password = Some("pw".into()));
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    std::thread::sleep(Duration::from_millis(700));
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"backends"])).into_owned();
    assert!(
        info.contains("state=up,") && info.contains(",fails=0,"),
        "{info}"
    );
}

#[test]
fn a_backend_closing_an_idle_connection_is_not_a_failure() {
    let a = RedisServer::start_with(&["--timeout", "1"]);
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(raw.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"backends"])).into_owned();
    assert!(
        info.contains("state=up") && info.contains("transitions=0"),
        "{info}"
    );
}

#[test]
fn requests_never_written_to_a_dead_backend_are_rerouted_not_failed() {
    // The first backend refuses connections; respite starts optimistic, so the first pick queues
    // requests on a connection that then fails to connect: they must move to the live backend.
    let live = RedisServer::start();
    let dead = RefusedPort::bind();
    let proxy = TestProxy::over_with(&[&live], |c| c.backends.insert(0, dead.addr));
    let mut raw = proxy.raw();
    let mut p = Vec::new();
    for i in 0..100 {
        p.extend_from_slice(&respite::resp::encode_request(&[
            b"SET".as_slice(),
            format!("r{i}").as_bytes(),
            b"v",
        ]));
    }
    raw.send(&p);
    for i in 0..100 {
        assert_eq!(raw.reply(), b"+OK\r\n", "reply {i}");
    }
    let n: u64 = redis::cmd("DBSIZE").query(&mut live.client()).unwrap();
    assert_eq!(n, 100);
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"backends"])).into_owned();
    assert!(
        info.contains(&format!("addr={},state=down", dead.addr)),
        "{info}"
    );
}
