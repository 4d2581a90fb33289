//! Cluster-wide commands through respite over a real fleet: 3 redis-server masters with a replica
//! each, and 2 twemproxy (nutcracker) instances sharding over the masters as the backends.

mod support;

use respite::resp::encode_request;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// Writes `n` keys `user:{i}` (and every 1000th also `rare:{i}`, every 7th a hash) through respite.
fn write_keys(proxy: &TestProxy, n: usize) {
    let mut raw = proxy.raw();
    let mut p = Vec::new();
    let mut replies = 0;
    for i in 0..n {
        if i % 7 == 0 {
            p.extend_from_slice(&encode_request(&[
                b"HSET".as_slice(),
                format!("user:{i}").as_bytes(),
                b"f",
                b"v",
            ]));
        } else {
            p.extend_from_slice(&encode_request(&[
                b"SET".as_slice(),
                format!("user:{i}").as_bytes(),
                b"v",
            ]));
        }
        replies += 1;
        if i % 1000 == 0 {
            p.extend_from_slice(&encode_request(&[
                b"SET".as_slice(),
                format!("rare:{i}").as_bytes(),
                b"v",
            ]));
            replies += 1;
        }
    }
    raw.send(&p);
    for _ in 0..replies {
        let r = raw.reply();
        assert!(
            r == b"+OK\r\n" || r == b":1\r\n",
            "{}",
            String::from_utf8_lossy(&r)
        );
    }
}

/// Walks SCAN to the end through `raw`; returns how often each key was seen.
fn scan_all(raw: &mut RawClient, extra: &[&[u8]]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    let mut cursor = b"0".to_vec();
    for _ in 0..100_000 {
        let mut args: Vec<&[u8]> = vec![b"SCAN", &cursor];
        args.extend_from_slice(extra);
        let reply = raw.cmd(&args);
        let (next, keys) = parse_scan(&reply);
        for k in keys {
            *seen.entry(k).or_insert(0) += 1;
        }
        if next == "0" {
            return seen;
        }
        cursor = next.into_bytes();
    }
    panic!("SCAN did not terminate");
}

fn parse_scan(reply: &[u8]) -> (String, Vec<String>) {
    let text = String::from_utf8_lossy(reply);
    assert!(text.starts_with("*2\r\n$"), "not a SCAN reply: {text}");
    let lines: Vec<&str> = text.split("\r\n").collect();
    let cursor = lines[2].to_string();
    let n: usize = lines[3][1..].parse().unwrap();
    let keys = (0..n).map(|i| lines[5 + 2 * i].to_string()).collect();
    (cursor, keys)
}

#[test]
fn scan_keys_and_dbsize_see_every_key_of_every_master_exactly_once() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    write_keys(&proxy, 30_000);
    let truth = fleet.truth();
    assert_eq!(truth, 30_030);
    let mut raw = proxy.raw();

    let start = Instant::now();
    let seen = scan_all(&mut raw, &[b"COUNT", b"1000"]);
    let through = start.elapsed();
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        dups.is_empty(),
        "keys seen twice: {:?}",
        &dups[..dups.len().min(5)]
    );
    assert_eq!(seen.len() as u64, truth, "every key once");
    let start = Instant::now();
    for m in &fleet.masters {
        let mut c = RawClient::connect(m.addr());
        let mut cursor = b"0".to_vec();
        loop {
            let (next, _) = parse_scan(&c.cmd(&[b"SCAN", &cursor, b"COUNT", b"1000"]));
            if next == "0" {
                break;
            }
            cursor = next.into_bytes();
        }
    }
    eprintln!(
        "full SCAN of {truth} keys: {through:?} through respite, {:?} directly over 3 masters",
        start.elapsed()
    );

    let rare = scan_all(&mut raw, &[b"MATCH", b"rare:*", b"COUNT", b"500"]);
    assert_eq!(rare.len(), 30);
    let hashes = scan_all(&mut raw, &[b"TYPE", b"hash", b"COUNT", b"1000"]);
    assert_eq!(hashes.len(), 30_000 / 7 + 1);

    let keys = raw.cmd(&[b"KEYS", b"rare:*"]);
    assert!(
        keys.starts_with(b"*30\r\n"),
        "{}",
        String::from_utf8_lossy(&keys)
    );
    let all = raw.cmd(&[b"KEYS", b"*"]);
    assert!(all.starts_with(format!("*{truth}\r\n").as_bytes()));
    assert_eq!(raw.cmd(&[b"DBSIZE"]), format!(":{truth}\r\n").into_bytes());
    let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"keyspace"])).into_owned();
    assert!(info.contains(&format!("db0:keys={truth},")), "{info}");
    let rk = raw.cmd(&[b"RANDOMKEY"]);
    assert!(rk.starts_with(b"$") && rk != b"$-1\r\n");
    assert!(raw
        .cmd(&[b"SCAN", b"x"])
        .starts_with(b"-ERR invalid cursor"));
    assert!(raw.cmd(&[b"SCAN", b"1023"]).starts_with(b"-ERR "));
}

#[test]
fn a_pipeline_mixing_commands_and_fan_outs_keeps_order_and_sees_its_own_writes() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    let mut raw = proxy.raw();
    let mut p = Vec::new();
    for i in 0..50 {
        p.extend_from_slice(&encode_request(&[
            b"SET".as_slice(),
            format!("p:{i}").as_bytes(),
            b"v",
        ]));
        p.extend_from_slice(&encode_request(&[&b"DBSIZE"[..]]));
        p.extend_from_slice(&encode_request(&[
            b"GET".as_slice(),
            format!("p:{i}").as_bytes(),
        ]));
    }
    p.extend_from_slice(&encode_request(&[&b"FLUSHALL"[..]]));
    p.extend_from_slice(&encode_request(&[&b"SET"[..], b"after", b"1"]));
    p.extend_from_slice(&encode_request(&[&b"DBSIZE"[..]]));
    raw.send(&p);
    for i in 0..50 {
        assert_eq!(raw.reply(), b"+OK\r\n");
        assert_eq!(
            raw.reply(),
            format!(":{}\r\n", i + 1).into_bytes(),
            "DBSIZE after {} SETs",
            i + 1
        );
        assert_eq!(raw.reply(), b"$1\r\nv\r\n");
    }
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b":1\r\n", "the SET after FLUSHALL survives");
}

#[test]
fn a_promoted_replica_takes_over_and_old_cursors_are_refused() {
    let mut fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    write_keys(&proxy, 3000);
    let truth = fleet.truth();
    for m in &fleet.masters {
        let _: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(2000)
            .query(&mut m.client())
            .unwrap();
    }
    let mut raw = proxy.raw();
    let (old_cursor, _) = parse_scan(&raw.cmd(&[b"SCAN", b"0", b"COUNT", b"10"]));
    fleet.masters[1].kill();
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut fleet.replicas[1].client())
        .unwrap();
    let recovered = wait_until(Duration::from_secs(5), || {
        raw.cmd(&[b"DBSIZE"]) == format!(":{truth}\r\n").into_bytes()
    });
    assert!(recovered, "DBSIZE counts the promoted replica's keys");
    let seen = scan_all(&mut raw, &[b"COUNT", b"1000"]);
    assert_eq!(seen.len() as u64, truth);
    assert!(seen.values().all(|&n| n == 1));
    let r = raw.cmd(&[b"SCAN", old_cursor.as_bytes()]);
    assert_eq!(
        r,
        b"-ERR SCAN cursor refers to a different shard set; restart the scan from 0\r\n"
    );
}

#[test]
fn a_shard_that_is_down_makes_fan_outs_fail_naming_it_until_it_is_back() {
    let mut fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    write_keys(&proxy, 300);
    let truth = fleet.truth();
    let mut raw = proxy.raw();
    let down = fleet.masters[2].addr();
    fleet.masters[2].kill();
    let named = wait_until(Duration::from_secs(5), || {
        let r = raw.cmd(&[b"DBSIZE"]);
        String::from_utf8_lossy(&r).starts_with(&format!("-ERR shard {down}"))
    });
    assert!(named, "DBSIZE names the shard that is down");
    let r = raw.cmd(&[b"SCAN", b"0"]);
    assert!(
        String::from_utf8_lossy(&r).starts_with(&format!("-ERR shard {down}")),
        "{}",
        String::from_utf8_lossy(&r)
    );
    fleet.masters[2].restart();
    // The restarted master is empty (no persistence): the fleet's truth is what is left.
    let back = wait_until(Duration::from_secs(5), || {
        raw.cmd(&[b"DBSIZE"]).starts_with(b":")
    });
    assert!(back, "fan-outs work again when the shard is back");
    assert_eq!(
        raw.cmd(&[b"DBSIZE"]),
        format!(":{}\r\n", fleet.truth()).into_bytes()
    );
    assert!(fleet.truth() < truth);
}

#[test]
fn script_load_reaches_every_master_so_evalsha_works_for_every_key() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    let mut c = proxy.client();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('SET', KEYS[1], ARGV[1])")
        .query(&mut c)
        .unwrap();
    for i in 0..30 {
        let () = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(format!("ev:{i}"))
            .arg("x")
            .query(&mut c)
            .unwrap();
    }
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, vec![1, 0]);
    let () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, vec![0]);
}

#[test]
fn redis_cli_scan_and_redis_py_scan_iter_walk_the_whole_fleet() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    write_keys(&proxy, 5000);
    let truth = fleet.truth();
    let port = proxy.addr.port().to_string();
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port, "--scan"])
        .output()
        .expect("redis-cli");
    let keys: std::collections::HashSet<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(keys.len() as u64, truth);
    let out = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "--scan",
            "--pattern",
            "rare:*",
        ])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=2, socket_timeout=5)
keys = list(r.scan_iter(count=300))
print(len(keys), len(set(keys)), r.dbsize())
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, &port])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let _ = child.stdin.take().map(|mut s| s.flush());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{truth} {truth} {truth}"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn without_shards_scan_is_forwarded_to_one_backend() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    raw.cmd(&[b"SET", b"only", b"1"]);
    assert_eq!(
        raw.cmd(&[b"SCAN", b"0"]),
        b"*2\r\n$1\r\n0\r\n*1\r\n$4\r\nonly\r\n"
    );
    assert_eq!(raw.cmd(&[b"DBSIZE"]), b":1\r\n");
}
