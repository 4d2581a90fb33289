//! Runs: consecutive requests of one command forwarded as one buffer with one reply slot. Their
//! replies must come back byte-exact and in order however the backend's reads cut them, their
//! statistics must count every request, and a failure must answer every request still owed.

mod support;

use respite::resp::encode_request;
use std::time::Duration;
use support::*;

/// A run: `GET key` for each of `keys`, in one buffer.
fn gets<K: AsRef<str>>(keys: impl IntoIterator<Item = K>) -> Vec<u8> {
    let mut run = Vec::new();
    for key in keys {
        run.extend_from_slice(&encode_request(&[
            b"GET".as_slice(),
            key.as_ref().as_bytes(),
        ]));
    }
    run
}

/// The value of `field` in the `cmdstat_<cmd>` line of `INFO commandstats`.
fn cmdstat(raw: &mut RawClient, cmd: &str, field: &str) -> Option<u64> {
    let info = raw.cmd(&[b"INFO", b"commandstats"]);
    let text = String::from_utf8_lossy(&info).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{cmd}:")))?;
    line.split([':', ','])
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_run_of_big_replies_cut_by_many_reads_arrives_byte_exact_and_in_order() {
    let redis = RedisServer::start();
    let values: Vec<Vec<u8>> = (0..24u8)
        .map(|i| {
            (0..150_000)
                .map(|j| b'a' + ((i as usize + j) % 26) as u8)
                .collect()
        })
        .collect();
    let mut direct = redis.client();
    for (i, v) in values.iter().enumerate() {
        let () = redis::cmd("SET")
            .arg(format!("big{i}"))
            .arg(v)
            .query(&mut direct)
            .expect("set");
    }
    let proxy = TestProxy::over(&[&redis]);
    let mut raw = proxy.raw();
    // Two runs of 24 GETs (3.6 MB of replies each) around a PING, sent at once.
    let mut pipeline = gets((0..24).map(|i| format!("big{i}")));
    pipeline.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    pipeline.extend(gets((0..24).rev().map(|i| format!("big{i}"))));
    raw.send(&pipeline);
    for (n, i) in (0..24).chain(24..25).chain((0..24).rev()).enumerate() {
        let reply = raw.reply();
        if i == 24 {
            assert_eq!(reply, b"+PONG\r\n", "reply {n}");
        } else {
            assert!(reply == bulk(&values[i]), "reply {n} is not big{i}");
        }
    }
    assert_eq!(cmdstat(&mut raw, "get", "calls"), Some(48));
}

#[test]
fn a_run_with_errors_in_it_counts_every_call_and_every_failure() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"SET", b"word", b"abc"]), b"+OK\r\n");
    let mut pipeline = Vec::new();
    for i in 0..10 {
        let key: &[u8] = if i % 3 == 0 { b"word" } else { b"counter" };
        pipeline.extend_from_slice(&encode_request(&[b"INCR".as_slice(), key]));
    }
    raw.send(&pipeline);
    let mut count = 0;
    for i in 0..10 {
        let reply = raw.reply();
        if i % 3 == 0 {
            assert!(reply.starts_with(b"-ERR value is not an integer"), "{i}");
        } else {
            count += 1;
            assert_eq!(reply, format!(":{count}\r\n").into_bytes(), "{i}");
        }
    }
    assert_eq!(cmdstat(&mut raw, "incr", "calls"), Some(10));
    assert_eq!(cmdstat(&mut raw, "incr", "failed_calls"), Some(4));
}

#[test]
fn the_slow_log_lists_each_request_of_a_slow_run_with_its_own_arguments() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over_with(&[&redis], |c| c.slowlog_micros = 0);
    let mut raw = proxy.raw();
    raw.send(&gets((0..5).map(|i| format!("slow{i}"))));
    for _ in 0..5 {
        assert_eq!(raw.reply(), b"$-1\r\n");
    }
    let log = raw.cmd(&[b"SLOWLOG", b"GET", b"10"]);
    for i in 0..5 {
        let key = format!("slow{i}");
        let needle = bulk(key.as_bytes());
        assert!(
            log.windows(needle.len()).any(|w| w == needle.as_slice()),
            "no slow log entry for GET {key}"
        );
    }
    // The five GETs and the SLOWLOG GET itself.
    assert_eq!(raw.cmd(&[b"SLOWLOG", b"LEN"]), b":6\r\n");
}

#[test]
fn a_backend_lost_with_runs_in_flight_fails_each_unanswered_request_in_order() {
    let mut redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"SET", b"here", b"1"]), b"+OK\r\n");
    raw.send(&gets(["here"; 3]));
    for _ in 0..3 {
        assert_eq!(raw.reply(), b"$1\r\n1\r\n");
    }
    // [a 2 s script] [GET x3], written together: the backend dies while it runs.
    let mut pipeline = sleep_request(2_000_000);
    pipeline.extend(gets(["here"; 3]));
    raw.send(&pipeline);
    std::thread::sleep(Duration::from_millis(300));
    redis.kill();
    for i in 0..4 {
        let reply = raw.reply();
        assert!(
            reply.starts_with(b"-ERR backend") && reply.ends_with(b"connection lost\r\n"),
            "reply {i}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    // The client keeps working once the backend is back.
    redis.restart();
    let back = wait_until(Duration::from_secs(10), || {
        raw.cmd(&[b"SET", b"again", b"2"]) == b"+OK\r\n"
    });
    assert!(back, "respite serves again after the backend restarts");
}

/// A backend that answers PING at once and every GET after `delay`, one reply per write, so
/// that a run's replies trickle in over several reads.
fn slow_backend(delay: Duration) -> FakeBackend {
    FakeBackend::start(move |cmd| match cmd {
        b"PING" => Reply::now(b"+PONG\r\n"),
        b"GET" => Reply::after(delay, b"$1\r\nx\r\n"),
        _ => Reply::now(b"-ERR unknown command\r\n"),
    })
}

#[test]
fn a_run_whose_replies_keep_coming_is_not_timed_out() {
    let backend = slow_backend(Duration::from_millis(100));
    let mut config = respite::config::Config::with_backends(vec![backend.addr]);
    config.backend_timeout = Duration::from_millis(400);
    let proxy = TestProxy::start(config);
    let mut raw = proxy.raw();
    // Ten GETs, one run: the backend takes 1 s for all of them, 100 ms for each.
    raw.send(&gets((0..10).map(|i| format!("k{i}"))));
    for i in 0..10 {
        assert_eq!(raw.reply(), b"$1\r\nx\r\n", "reply {i}");
    }
}
