//! What respite refuses, redacts or guards so that one client cannot harm the fleet or read
//! its secrets: administrative commands, the cross-protocol guard, secrets in the slow log,
//! and scripts that must be killable while they run.

mod support;

use std::time::{Duration, Instant};
use support::*;

#[test]
fn commands_that_change_one_server_of_the_fleet_are_refused_clearly() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    let mut raw = proxy.raw();
    for cmd in [
        &[&b"REPLICAOF"[..], b"127.0.0.1", b"1"][..],
        &[b"SLAVEOF", b"no", b"one"],
        &[b"SWAPDB", b"0", b"1"],
        &[b"MOVE", b"k", b"1"],
        &[b"DEBUG", b"SLEEP", b"0"],
        &[b"BGSAVE"],
        &[b"CONFIG", b"SET", b"maxmemory", b"1"],
        &[b"config", b"rewrite"],
        &[b"ACL", b"SETUSER", b"eve", b"on"],
        &[b"ACL", b"LIST"],
    ] {
        let reply = String::from_utf8_lossy(&raw.cmd(cmd)).into_owned();
        assert!(
            reply.starts_with("-ERR ") && reply.contains("refused by respite"),
            "{reply}"
        );
    }
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut redis.client()).expect("role");
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
    let maxmemory: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut redis.client())
        .expect("config get");
    assert_eq!(
        maxmemory,
        ["maxmemory", "0"],
        "nothing changed on the server"
    );
    assert!(
        raw.cmd(&[b"ACL", b"WHOAMI"]).starts_with(b"$"),
        "reads still work"
    );
}

#[test]
fn config_get_never_reveals_the_backend_password() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret", "--masterauth", "m4ster"]);
    let proxy = TestProxy::over_with(&[&redis], |c| c.backend_password = Some("s3cret".into()));
    let mut c = proxy.client();
    let all: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("*")
        .query(&mut c)
        .expect("get *");
    assert!(all.len() > 100, "{} values", all.len());
    assert!(all.iter().any(|v| v == "maxmemory"));
    assert!(
        !all.iter()
            .any(|v| v.contains("s3cret") || v.contains("m4ster")),
        "{all:?}"
    );
    let pass: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("requirepass")
        .query(&mut c)
        .expect("get requirepass");
    assert!(pass.is_empty(), "{pass:?}");
}

#[test]
fn a_post_or_host_request_closes_its_client_and_runs_nothing() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    let mut load = proxy.raw();
    let mut browser = proxy.raw();
    browser
        .send(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 12\r\n\r\nSET pwned 1\r\n");
    assert!(
        browser.is_closed(),
        "the client is closed without an answer"
    );
    let mut host = proxy.raw();
    host.send(b"Host: evil.example\r\nSET pwned 1\r\n");
    assert!(host.is_closed());
    let exists: i64 = redis::cmd("EXISTS")
        .arg("pwned")
        .query(&mut redis.client())
        .expect("exists");
    assert_eq!(exists, 0, "nothing after the guard word ran");
    for _ in 0..100 {
        assert_eq!(
            load.cmd(&[b"GET", b"pwned"]),
            b"$-1\r\n",
            "others are unaffected"
        );
    }
}

#[test]
fn the_slow_log_redacts_credentials() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over_with(&[&redis], |c| {
        c.password = Some("topsecret".into());
        c.slowlog_micros = 0;
    });
    let mut raw = proxy.raw();
    raw.cmd(&[b"AUTH", b"wrong-guess"]);
    raw.cmd(&[b"HELLO", b"2", b"AUTH", b"default", b"topsecret"]);
    raw.cmd(&[b"AUTH", b"topsecret"]);
    let log = String::from_utf8_lossy(&raw.cmd(&[b"SLOWLOG", b"GET", b"-1"])).into_owned();
    assert!(log.contains("(redacted)"), "{log}");
    assert!(
        !log.contains("topsecret") && !log.contains("wrong-guess"),
        "{log}"
    );
}

/// Runs `script` (an endless Lua loop) from a client of its own; returns its reply.
fn run_forever(proxy: &TestProxy, script: &[&[u8]]) -> std::thread::JoinHandle<Vec<u8>> {
    let mut raw = proxy.raw();
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let script: Vec<Vec<u8>> = script.iter().map(|a| a.to_vec()).collect();
    std::thread::spawn(move || {
        let args: Vec<&[u8]> = script.iter().map(|a| &a[..]).collect();
        raw.cmd(&args)
    })
}

#[test]
fn script_kill_reaches_a_backend_busy_with_a_script_and_busy_is_not_down() {
    // Busy replies start 100 ms into a script (busy-reply-threshold).
    let redis = RedisServer::start_with(&["--busy-reply-threshold", "100"]);
    let other = RedisServer::start_with(&["--busy-reply-threshold", "100"]);
    let proxy = TestProxy::over(&[&redis, &other]);
    for (kill, script) in [
        (
            &[&b"SCRIPT"[..], b"KILL"][..],
            &[&b"EVAL"[..], b"while true do end", b"0"][..],
        ),
        (&[b"FUNCTION", b"KILL"], &[b"FCALL", b"spin", b"0"]),
    ] {
        if kill[0] == b"FUNCTION" {
            let lib = b"#!lua name=spinlib\nredis.register_function('spin', function() while true do end end)";
            let loaded = proxy.raw().cmd(&[b"FUNCTION", b"LOAD", lib]);
            assert_eq!(loaded, b"$7\r\nspinlib\r\n", "loaded on every backend");
        }
        let busy = run_forever(&proxy, script);
        std::thread::sleep(Duration::from_millis(400));
        // Long enough for probes to see -BUSY a few times: it must not eject the backend.
        std::thread::sleep(Duration::from_millis(800));
        let started = Instant::now();
        let mut killer = proxy.raw();
        assert_eq!(killer.cmd(kill), b"+OK\r\n");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let reply = String::from_utf8_lossy(&busy.join().expect("script thread")).into_owned();
        assert!(
            reply.starts_with("-ERR") && reply.contains("killed"),
            "{reply}"
        );
        let info = String::from_utf8_lossy(&killer.cmd(&[b"INFO", b"backends"])).into_owned();
        assert_eq!(info.matches("state=up").count(), 2, "{info}");
        assert!(killer.cmd(kill).starts_with(b"-NOTBUSY"));
    }
}
