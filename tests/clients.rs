//! Real clients and the commands respite answers itself: redis-cli, redis-py, AUTH, HELLO,
//! CLIENT, SELECT, INFO, maxclients, and the binary's configuration errors and graceful stop.

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn auth_is_required_refused_when_wrong_and_accepted_when_right() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| c.password = Some("letmein".into()));
    let mut raw = proxy.raw();
    assert_eq!(
        raw.cmd(&[b"GET", b"k"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(raw.cmd(&[b"PING"]), b"-NOAUTH Authentication required.\r\n");
    assert!(raw.cmd(&[b"AUTH", b"nope"]).starts_with(b"-WRONGPASS"));
    assert!(raw
        .cmd(&[b"AUTH", b"bob", b"letmein"])
        .starts_with(b"-WRONGPASS"));
    assert_eq!(
        raw.cmd(&[b"GET", b"k"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(raw.cmd(&[b"AUTH", b"letmein"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    let mut other = proxy.raw();
    assert_eq!(other.cmd(&[b"AUTH", b"default", b"letmein"]), b"+OK\r\n");
    assert_eq!(other.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    let mut hello = proxy.raw();
    let r = hello.cmd(&[
        b"HELLO", b"2", b"AUTH", b"default", b"letmein", b"SETNAME", b"app",
    ]);
    assert!(
        r.starts_with(b"*14\r\n$6\r\nserver\r\n"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    assert_eq!(hello.cmd(&[b"CLIENT", b"GETNAME"]), b"$3\r\napp\r\n");
    let url = format!("redis://:letmein@{}/", proxy.addr);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v");
}

#[test]
fn auth_without_a_configured_password_is_an_error_like_redis() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let r = proxy.raw().cmd(&[b"AUTH", b"x"]);
    assert!(r.starts_with(b"-ERR AUTH <password> called without any password configured"));
}

#[test]
fn maxclients_is_enforced() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| c.maxclients = 3);
    let mut held: Vec<_> = (0..3).map(|_| proxy.raw()).collect();
    for c in &mut held {
        assert_eq!(c.cmd(&[b"PING"]), b"+PONG\r\n");
    }
    let mut extra = proxy.raw();
    assert_eq!(extra.reply(), b"-ERR max number of clients reached\r\n");
    assert!(extra.is_closed());
    drop(held.pop());
    let ok = wait_until(Duration::from_secs(3), || {
        let mut c = proxy.raw();
        c.send(b"PING\r\n");
        c.try_reply().map(|r| r == b"+PONG\r\n").unwrap_or(false)
    });
    assert!(ok, "a slot frees up when a client leaves");
}

#[test]
fn idle_clients_are_closed_after_timeout() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| c.timeout = Some(Duration::from_secs(1)));
    let mut idle = proxy.raw();
    assert_eq!(idle.cmd(&[b"PING"]), b"+PONG\r\n");
    let start = Instant::now();
    assert!(idle.is_closed());
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[test]
fn handshake_commands_are_answered_like_redis() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"SELECT", b"0"]), b"+OK\r\n");
    assert!(raw
        .cmd(&[b"SELECT", b"3"])
        .starts_with(b"-ERR SELECT is not supported"));
    assert_eq!(raw.cmd(&[b"PING", b"hi"]), b"$2\r\nhi\r\n");
    assert_eq!(raw.cmd(&[b"ECHO", b"x\r\ny"]), b"$4\r\nx\r\ny\r\n");
    assert_eq!(raw.cmd(&[b"CLIENT", b"GETNAME"]), b"$-1\r\n");
    assert_eq!(raw.cmd(&[b"CLIENT", b"SETNAME", b"worker-1"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"CLIENT", b"GETNAME"]), b"$8\r\nworker-1\r\n");
    assert!(raw
        .cmd(&[b"CLIENT", b"SETNAME", b"a b"])
        .starts_with(b"-ERR Client names cannot contain spaces"));
    assert_eq!(
        raw.cmd(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"mylib"]),
        b"+OK\r\n"
    );
    let id = raw.cmd(&[b"CLIENT", b"ID"]);
    assert!(id.starts_with(b":"));
    let info = String::from_utf8_lossy(&raw.cmd(&[b"CLIENT", b"INFO"])).into_owned();
    assert!(
        info.contains("name=worker-1") && info.contains("lib-name=mylib"),
        "{info}"
    );
    let list = String::from_utf8_lossy(&raw.cmd(&[b"CLIENT", b"LIST"])).into_owned();
    assert!(list.contains("name=worker-1"), "{list}");
    assert!(raw
        .cmd(&[b"CLIENT", b"KILL", b"ID", b"1"])
        .starts_with(b"-ERR CLIENT KILL is not supported"));
    assert!(raw.cmd(&[b"HELLO", b"4"]).starts_with(b"-NOPROTO"));
    let hello = raw.cmd(&[b"HELLO", b"2"]);
    assert!(hello.starts_with(b"*14\r\n"));
    assert!(String::from_utf8_lossy(&hello).contains("proto\r\n:2\r\n"));
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO"])).into_owned();
    for needle in [
        "# Server",
        "redis_version:",
        "respite_version:",
        "# Clients",
        "connected_clients:1",
        "# Stats",
        "# Backends",
        &format!("addr={},state=up", a.addr()),
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}: {info}");
    }
    let only = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"backends"])).into_owned();
    assert!(only.starts_with("$") && only.contains("# Backends") && !only.contains("# Server"));
    assert_eq!(raw.cmd(&[b"QUIT"]), b"+OK\r\n");
    assert!(raw.is_closed());
}

#[test]
fn redis_cli_ping_and_pipe_of_100000_keys_work_through_respite() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let port = proxy.addr.port().to_string();
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "ping"])
        .output()
        .expect("redis-cli must be installed");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
    let mut input = Vec::new();
    for i in 0..100_000 {
        input.extend_from_slice(&respite::resp::encode_request(&[
            b"SET".as_slice(),
            format!("pipe:{i}").as_bytes(),
            format!("{i}").as_bytes(),
        ]));
    }
    let mut child = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--pipe",
            "--pipe-timeout",
            "20",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli --pipe");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("pipe input");
    let out = child.wait_with_output().expect("redis-cli --pipe finished");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("errors: 0, replies: 100000"),
        "{text}"
    );
    let n: u64 = redis::cmd("DBSIZE").query(&mut a.client()).unwrap();
    assert_eq!(n, 100_000);
}

#[test]
fn redis_py_with_protocol_2_and_client_setinfo_works() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=2, client_name="pyclient", socket_timeout=5)
assert r.ping()
r.set("py:k", "v")
assert r.get("py:k") == b"v", r.get("py:k")
assert r.client_getname() == "pyclient" or r.client_getname() == b"pyclient"
p = r.pipeline(transaction=False)
for i in range(100):
    p.incr("py:counter")
assert p.execute()[-1] == 100
assert r.hset("py:h", mapping={"a": "1", "b": "2"}) == 2
assert r.hgetall("py:h") == {b"a": b"1", b"b": b"2"}
info = r.client_info()
assert info.get("lib-name", "").startswith("redis-py"), info
print("ok")
"#;
    let out = Command::new("python3")
        .args(["-c", script, &proxy.addr.port().to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "redis-py failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_config_prints_one_actionable_line_and_exits_non_zero() {
    let (code, err) = RespiteProcess::run(&["--backends", "not-an-address"]);
    assert_ne!(code, Some(0));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("invalid backend address 'not-an-address'"),
        "{err}"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let a = RedisServer::start();
    let mut child = RespiteProcess::start(&["--backends", &a.addr().to_string()]);
    let mut raw = RawClient::connect(child.addr);
    raw.send(&sleep_request(500_000));
    raw.send(&respite::resp::encode_request(&[
        &b"SET"[..],
        b"after-sleep",
        b"1",
    ]));
    std::thread::sleep(Duration::from_millis(100));
    child.signal("-TERM");
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(child.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(
        std::net::TcpStream::connect(child.addr).is_err(),
        "stopped accepting"
    );
}

#[test]
fn a_pipeline_past_client_max_pending_then_a_half_close_gets_every_reply() {
    // 3,000 requests (over the 1,024 a client may have waiting, so respite pauses it with
    // requests still unread), then the client closes its side: every reply comes, then EOF.
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut s = std::net::TcpStream::connect(proxy.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut req = b"*3\r\n$3\r\nSET\r\n$2\r\nof\r\n$3\r\nabc\r\n".to_vec();
    for _ in 0..3_000 {
        req.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$2\r\nof\r\n");
    }
    s.write_all(&req).expect("pipeline");
    s.shutdown(std::net::Shutdown::Write).expect("half close");
    let mut got = Vec::new();
    let read = s.read_to_end(&mut got);
    assert!(read.is_ok(), "EOF after the replies: {read:?}");
    let expected = [&b"+OK\r\n"[..], &b"$3\r\nabc\r\n".repeat(3_000)].concat();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
}
