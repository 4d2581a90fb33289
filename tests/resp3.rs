//! RESP3 clients (`HELLO 3`): raw replies, and a default redis-py 8 client getting the same
//! Python values through respite as from redis-server itself, over a plain Redis backend and over
//! twemproxy backends (which speak only RESP2: respite converts).

mod support;

use respite::resp::encode_request;
use std::process::Command;
use support::*;

#[test]
fn hello_3_switches_the_client_to_resp3_and_hello_2_back() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    let hello = raw.cmd(&[b"HELLO", b"3"]);
    assert!(
        hello.starts_with(b"%7\r\n$6\r\nserver\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert!(String::from_utf8_lossy(&hello).contains("$5\r\nproto\r\n:3\r\n"));
    assert_eq!(raw.cmd(&[b"GET", b"missing"]), b"_\r\n");
    raw.cmd(&[b"HSET", b"h", b"a", b"1"]);
    assert_eq!(
        raw.cmd(&[b"HGETALL", b"h"]),
        b"%1\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
    raw.cmd(&[b"ZADD", b"z", b"1.5", b"m"]);
    assert_eq!(raw.cmd(&[b"ZSCORE", b"z", b"m"]), b",1.5\r\n");
    assert!(raw.cmd(&[b"INFO", b"server"]).starts_with(b"="));
    let hello = raw.cmd(&[b"HELLO", b"2"]);
    assert!(hello.starts_with(b"*14\r\n"));
    assert_eq!(raw.cmd(&[b"GET", b"missing"]), b"$-1\r\n");
    assert_eq!(
        raw.cmd(&[b"HGETALL", b"h"]),
        b"*2\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
    assert!(raw.cmd(&[b"HELLO", b"4"]).starts_with(b"-NOPROTO"));
}

#[test]
fn a_resp2_clients_bytes_are_unchanged() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut direct = RawClient::connect(a.addr());
    let mut via = proxy.raw();
    direct.cmd(&[b"ZADD", b"z", b"1.5", b"m", b"2", b"n"]);
    direct.cmd(&[b"HSET", b"h", b"a", b"1"]);
    let cmds: &[&[&[u8]]] = &[
        &[b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"],
        &[b"HGETALL", b"h"],
        &[b"ZSCORE", b"z", b"m"],
        &[b"GET", b"nope"],
        &[b"SMEMBERS", b"nope"],
    ];
    for c in cmds {
        assert_eq!(via.cmd(c), direct.cmd(c));
    }
}

fn python_values(port: u16, prefix: &str, twemproxy: bool) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/resp3_values.py");
    let mut cmd = Command::new("python3");
    cmd.args([script, &port.to_string(), prefix]);
    if twemproxy {
        cmd.arg("twemproxy");
    }
    let out = cmd.output().expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn compare(direct: &[String], via: &[String]) {
    assert_eq!(direct.len(), via.len());
    let diffs: Vec<String> = direct
        .iter()
        .zip(via)
        .filter(|(d, v)| d != v)
        .map(|(d, v)| format!("direct  {d}\nrespite {v}"))
        .collect();
    assert!(diffs.is_empty(), "values differ:\n{}", diffs.join("\n"));
    assert!(direct.len() >= 40, "{} commands compared", direct.len());
}

#[test]
fn default_redis_py_gets_the_same_values_through_respite_over_a_plain_redis() {
    let truth = RedisServer::start();
    let backend = RedisServer::start();
    let proxy = TestProxy::over(&[&backend]);
    compare(
        &python_values(truth.port, "t", false),
        &python_values(proxy.addr.port(), "t", false),
    );
}

#[test]
fn default_redis_py_gets_the_same_values_through_respite_over_twemproxy() {
    let truth = RedisServer::start();
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    compare(
        &python_values(truth.port, "t", true),
        &python_values(proxy.addr.port(), "t", true),
    );
}

#[test]
fn default_redis_py_pubsub_and_scan_work_through_respite() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    let script = r#"
import sys, time, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), socket_timeout=10)
for i in range(500):
    r.set(f"k{i}", i)
keys = set(r.scan_iter(count=100))
assert len(keys) == 500, len(keys)
p = r.pubsub()
p.subscribe("news")
m = p.get_message(timeout=5)
assert m["type"] == "subscribe", m
assert r.publish("news", "hello") == 1
for _ in range(50):
    m = p.get_message(timeout=1)
    if m and m["type"] == "message":
        break
assert m["data"] == b"hello", m
p.unsubscribe("news")
print("ok")
"#;
    let out = Command::new("python3")
        .args(["-c", script, &proxy.addr.port().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut raw = proxy.raw();
    raw.cmd(&[b"HELLO", b"3"]);
    raw.send(&encode_request(&[&b"SUBSCRIBE"[..], b"c"]));
    assert_eq!(raw.reply(), b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n");
    assert_eq!(
        raw.cmd(&[b"SET", b"while-subscribed", b"1"]),
        b"+OK\r\n",
        "RESP3 allows commands while subscribed"
    );
}

#[test]
fn resp3_clients_use_resp3_backend_connections_where_the_backend_accepts_hello_3() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    let learned = wait_until(std::time::Duration::from_secs(3), || {
        let mut c = a.client();
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut c)
            .unwrap_or_default();
        list.contains("resp=3")
    });
    assert!(learned, "the probe asked HELLO 3");
    raw.cmd(&[b"HELLO", b"3"]);
    raw.cmd(&[b"HSET", b"h", b"a", b"1"]);
    assert_eq!(
        raw.cmd(&[b"HGETALL", b"h"]),
        b"%1\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut a.client())
        .unwrap();
    let resp3_data = list
        .lines()
        .filter(|l| l.contains("resp=3") && l.contains("cmd=hgetall"))
        .count();
    assert_eq!(
        resp3_data, 1,
        "HGETALL went over a RESP3 connection:\n{list}"
    );
    let mut resp2 = proxy.raw();
    assert_eq!(
        resp2.cmd(&[b"HGETALL", b"h"]),
        b"*2\r\n$1\r\na\r\n$1\r\n1\r\n"
    );
}

#[test]
fn a_resp2_only_proxy_backend_is_probed_without_being_ejected() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let mut raw = proxy.raw();
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"backends"])).into_owned();
    assert!(
        !info.contains("state=down") && info.contains("transitions=0"),
        "{info}"
    );
    raw.cmd(&[b"HELLO", b"3"]);
    assert_eq!(raw.cmd(&[b"GET", b"missing"]), b"_\r\n");
}

#[test]
fn default_ioredis_6_works_through_respite_over_twemproxy() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/ioredis_check.js");
    let out = Command::new("node")
        .args([script, &proxy.addr.port().to_string()])
        .output()
        .expect("node must be installed (scripts/install-deps)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
