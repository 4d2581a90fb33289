//! Transactions, blocking commands and pub/sub through respite, on connections of their own.

mod support;

use respite::resp::encode_request;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

#[test]
fn four_writers_with_optimistic_transactions_count_to_exactly_800() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let addr = proxy.addr;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut raw = RawClient::connect(addr);
                let mut retries = 0;
                for _ in 0..200 {
                    for attempt in 0..1000 {
                        assert!(attempt < 999, "too many retries");
                        assert_eq!(raw.cmd(&[b"WATCH", b"counter"]), b"+OK\r\n");
                        let v = raw.cmd(&[b"GET", b"counter"]);
                        let n: i64 = if v == b"$-1\r\n" {
                            0
                        } else {
                            String::from_utf8_lossy(&v)
                                .lines()
                                .nth(1)
                                .unwrap()
                                .parse()
                                .unwrap()
                        };
                        assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
                        assert_eq!(
                            raw.cmd(&[b"SET", b"counter", (n + 1).to_string().as_bytes()]),
                            b"+QUEUED\r\n"
                        );
                        match raw.cmd(&[b"EXEC"]).as_slice() {
                            b"*1\r\n+OK\r\n" => break,
                            b"*-1\r\n" => retries += 1,
                            other => panic!("EXEC: {}", String::from_utf8_lossy(other)),
                        }
                    }
                }
                retries
            })
        })
        .collect();
    let retries: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let v: i64 = redis::cmd("GET")
        .arg("counter")
        .query(&mut a.client())
        .unwrap();
    assert_eq!(v, 800, "after {retries} retries");
}

#[test]
fn a_write_between_watch_and_exec_makes_exec_return_null() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let (mut x, mut y) = (proxy.raw(), proxy.raw());
    assert_eq!(x.cmd(&[b"WATCH", b"k"]), b"+OK\r\n");
    assert_eq!(y.cmd(&[b"SET", b"k", b"theirs"]), b"+OK\r\n");
    assert_eq!(x.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(x.cmd(&[b"SET", b"k", b"mine"]), b"+QUEUED\r\n");
    assert_eq!(x.cmd(&[b"EXEC"]), b"*-1\r\n");
    assert_eq!(x.cmd(&[b"GET", b"k"]), bulk(b"theirs"));
    // redis-py sees a WatchError.
    let script = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=2, socket_timeout=5)
other = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), protocol=2, socket_timeout=5)
with r.pipeline() as p:
    p.watch("w")
    other.set("w", "1")
    p.multi()
    p.set("w", "2")
    try:
        p.execute()
        print("no error")
    except redis.WatchError:
        print("WatchError")
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &proxy.addr.port().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "WatchError",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn exec_replies_are_byte_exact_and_errors_behave_as_in_redis() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut direct = RawClient::connect(a.addr());
    let mut raw = proxy.raw();
    direct.cmd(&[b"XADD", b"s", b"1-1", b"f", b"v"]);
    direct.cmd(&[b"RPUSH", b"l", b"a", b"b"]);
    let script: &[&[&[u8]]] = &[
        &[b"MULTI"],
        &[b"INCR", b"n"],
        &[b"LRANGE", b"l", b"0", b"-1"],
        &[b"XRANGE", b"s", b"-", b"+"],
        &[b"GET", b"missing"],
        &[b"EXEC"],
    ];
    let via: Vec<Vec<u8>> = script.iter().map(|c| raw.cmd(c)).collect();
    direct.cmd(&[b"DEL", b"n"]);
    let want: Vec<Vec<u8>> = script.iter().map(|c| direct.cmd(c)).collect();
    assert_eq!(via, want);
    assert!(via[5].starts_with(b"*4\r\n:1\r\n*2\r\n"));

    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"SET", b"d", b"1"]), b"+QUEUED\r\n");
    assert_eq!(raw.cmd(&[b"DISCARD"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"GET", b"d"]), b"$-1\r\n");
    assert_eq!(raw.cmd(&[b"EXEC"]), b"-ERR EXEC without MULTI\r\n");
    assert_eq!(raw.cmd(&[b"DISCARD"]), b"-ERR DISCARD without MULTI\r\n");
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert!(raw
        .cmd(&[b"MULTI"])
        .starts_with(b"-ERR MULTI calls can not be nested"));
    assert!(raw
        .cmd(&[b"SET", b"only-one-arg"])
        .starts_with(b"-ERR wrong number of arguments"));
    assert!(raw.cmd(&[b"EXEC"]).starts_with(b"-EXECABORT"));
    assert_eq!(raw.cmd(&[b"SET", b"after", b"1"]), b"+OK\r\n");
}

#[test]
fn a_blocked_brpop_never_delays_other_clients() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut blocker = proxy.raw();
    blocker.send(&encode_request(&[&b"BRPOP"[..], b"emptyq", b"5"]));
    std::thread::sleep(Duration::from_millis(100));
    let mut info = proxy.raw();
    let text = String::from_utf8_lossy(&info.cmd(&[b"INFO", b"clients"])).into_owned();
    assert!(text.contains("blocked_clients:1"), "{text}");
    let mut others: Vec<_> = (0..4).map(|_| proxy.raw()).collect();
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        for (j, c) in others.iter_mut().enumerate() {
            let k = format!("k{i}:{j}");
            let start = Instant::now();
            assert_eq!(c.cmd(&[b"SET", k.as_bytes(), b"v"]), b"+OK\r\n");
            assert_eq!(c.cmd(&[b"GET", k.as_bytes()]), b"$1\r\nv\r\n");
            slowest = slowest.max(start.elapsed());
        }
    }
    assert!(
        slowest < Duration::from_millis(100),
        "slowest SET+GET {slowest:?}"
    );
    assert_eq!(others[0].cmd(&[b"LPUSH", b"emptyq", b"job"]), b":1\r\n");
    assert_eq!(blocker.reply(), b"*2\r\n$6\r\nemptyq\r\n$3\r\njob\r\n");
    assert_eq!(
        blocker.cmd(&[b"BRPOP", b"emptyq", b"0.2"]),
        b"*-1\r\n",
        "timeout returns null"
    );
    assert_eq!(blocker.cmd(&[b"SET", b"after", b"1"]), b"+OK\r\n");
}

#[test]
fn three_consumers_receive_300_jobs_exactly_once() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let addr = proxy.addr;
    let got = Arc::new(Mutex::new(Vec::new()));
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let got = got.clone();
            std::thread::spawn(move || {
                let mut raw = RawClient::connect(addr);
                for _ in 0..400 {
                    let r = raw.cmd(&[b"BRPOP", b"jobs", b"1"]);
                    if r == b"*-1\r\n" {
                        return;
                    }
                    let text = String::from_utf8_lossy(&r).into_owned();
                    got.lock()
                        .unwrap()
                        .push(text.lines().nth(4).unwrap().to_string());
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut producer = proxy.raw();
    for i in 0..300 {
        producer.cmd(&[b"LPUSH", b"jobs", format!("job{i}").as_bytes()]);
    }
    for c in consumers {
        c.join().unwrap();
    }
    let mut got = got.lock().unwrap().clone();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 300);
}

/// Reads one pub/sub message frame and returns its elements as text.
fn message(raw: &mut RawClient) -> Vec<String> {
    let r = raw.reply();
    let text = String::from_utf8_lossy(&r).into_owned();
    text.split("\r\n")
        .skip(1)
        .filter(|l| !l.starts_with('$') && !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn pubsub_job_dispatch_delivers_every_job_and_every_result() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let addr = proxy.addr;
    let workers: Vec<_> = (1..=3)
        .map(|w| {
            let mut sub = RawClient::connect(addr);
            let ch = format!("CHANNEL_DISPATCH_{w}");
            sub.send(&encode_request(&[b"SUBSCRIBE".as_slice(), ch.as_bytes()]));
            assert_eq!(
                message(&mut sub),
                vec!["subscribe".to_string(), ch.clone(), ":1".into()]
            );
            std::thread::spawn(move || {
                let mut publisher = RawClient::connect(addr);
                for _ in 0..33 {
                    let m = message(&mut sub);
                    assert_eq!(m[0], "message");
                    let result = format!("done:{}", m[2]);
                    let n = publisher.cmd(&[b"PUBLISH", b"CHANNEL_RESULT", result.as_bytes()]);
                    assert_eq!(n, b":1\r\n");
                }
            })
        })
        .collect();
    let mut results = RawClient::connect(addr);
    results.send(&encode_request(&[&b"SUBSCRIBE"[..], b"CHANNEL_RESULT"]));
    assert_eq!(message(&mut results)[0], "subscribe");
    let mut dispatcher = proxy.raw();
    for job in 0..99 {
        let ch = format!("CHANNEL_DISPATCH_{}", job % 3 + 1);
        let n = dispatcher.cmd(&[b"PUBLISH", ch.as_bytes(), format!("job{job}").as_bytes()]);
        assert_eq!(n, b":1\r\n", "PUBLISH reached a worker");
    }
    let mut done: Vec<String> = (0..99).map(|_| message(&mut results)[2].clone()).collect();
    done.sort();
    done.dedup();
    assert_eq!(done.len(), 99);
    for w in workers {
        w.join().unwrap();
    }
    // PING in subscribed mode, a refused command, and leaving subscribed mode.
    assert_eq!(results.cmd(&[b"PING"]), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    let refused = results.cmd(&[b"GET", b"x"]);
    assert!(
        refused.starts_with(b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE"),
        "{}",
        String::from_utf8_lossy(&refused)
    );
    assert_eq!(
        results.cmd(&[b"UNSUBSCRIBE"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$14\r\nCHANNEL_RESULT\r\n:0\r\n"
    );
    assert_eq!(results.cmd(&[b"SET", b"back", b"1"]), b"+OK\r\n");
}

#[test]
fn psubscribe_patterns_receive_matching_messages() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut sub = proxy.raw();
    sub.send(&encode_request(&[&b"PSUBSCRIBE"[..], b"news.*"]));
    assert_eq!(message(&mut sub), vec!["psubscribe", "news.*", ":1"]);
    let mut p = proxy.raw();
    assert_eq!(p.cmd(&[b"PUBLISH", b"news.tech", b"hello"]), b":1\r\n");
    assert_eq!(p.cmd(&[b"PUBLISH", b"sports", b"nope"]), b":0\r\n");
    assert_eq!(
        message(&mut sub),
        vec!["pmessage", "news.*", "news.tech", "hello"]
    );
    let numpat = p.cmd(&[b"PUBSUB", b"NUMPAT"]);
    assert_eq!(numpat, b":1\r\n");
}

#[test]
fn a_subscriber_that_never_reads_is_disconnected_while_others_keep_receiving() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| c.pubsub_output_limit = 1 << 20);
    let mut lazy = proxy.raw();
    lazy.send(&encode_request(&[&b"SUBSCRIBE"[..], b"firehose"]));
    assert_eq!(message(&mut lazy)[0], "subscribe");
    let mut good = proxy.raw();
    good.send(&encode_request(&[&b"SUBSCRIBE"[..], b"firehose"]));
    assert_eq!(message(&mut good)[0], "subscribe");
    let payload = vec![b'x'; 10_000];
    let mut p = proxy.raw();
    for i in 0..2000 {
        p.cmd(&[b"PUBLISH", b"firehose", &payload]);
        let m = good.reply();
        assert!(m.len() > 10_000, "message {i}");
    }
    let (closed, total) = lazy.read_until_closed();
    assert!(
        closed && total < 20_000_000,
        "lazy subscriber cut off after {total} bytes"
    );
    assert_eq!(p.cmd(&[b"PUBLISH", b"firehose", b"still"]), b":1\r\n");
    assert!(good.reply().ends_with(b"still\r\n"));
}

#[test]
fn with_twemproxy_backends_pubsub_goes_through_the_shard_and_multi_gets_a_clear_error() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    let mut sub = proxy.raw();
    sub.send(&encode_request(&[&b"SUBSCRIBE"[..], b"ch"]));
    assert_eq!(message(&mut sub), vec!["subscribe", "ch", ":1"]);
    let mut p = proxy.raw();
    assert_eq!(p.cmd(&[b"PUBLISH", b"ch", b"hi"]), b":1\r\n");
    assert_eq!(message(&mut sub), vec!["message", "ch", "hi"]);
    // MULTI never reaches a twemproxy, which would close the connection over it.
    let r = p.cmd(&[b"MULTI"]);
    assert_eq!(
        String::from_utf8_lossy(&r),
        "-ERR MULTI is not supported by the twemproxy backends\r\n"
    );
    // EXEC without a transaction runs on a shard master, which answers as Redis does.
    assert_eq!(p.cmd(&[b"EXEC"]), b"-ERR EXEC without MULTI\r\n");
    assert_eq!(
        p.cmd(&[b"SET", b"k", b"v"]),
        b"+OK\r\n",
        "the connection stays usable"
    );
    assert_eq!(p.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // What twemproxy does not serve is refused here; twemproxy is never ejected for it.
    let r = p.cmd(&[b"XADD", b"s", b"*", b"f", b"v"]);
    assert!(
        r.starts_with(b"-ERR XADD is not supported by the twemproxy backends"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    let info = String::from_utf8_lossy(&p.cmd(&[b"INFO", b"backends"])).into_owned();
    assert!(!info.contains("state=down"), "{info}");
}

#[test]
fn monitor_is_refused_clearly() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    assert!(raw
        .cmd(&[b"MONITOR"])
        .starts_with(b"-ERR MONITOR is not supported"));
    assert_eq!(raw.cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn max_session_connections_is_enforced_with_a_clear_error() {
    let a = RedisServer::start();
    let proxy = TestProxy::over_with(&[&a], |c| c.max_session_connections = 1);
    let mut first = proxy.raw();
    first.send(&encode_request(&[&b"BLPOP"[..], b"q", b"2"]));
    std::thread::sleep(Duration::from_millis(100));
    let mut second = proxy.raw();
    let r = second.cmd(&[b"BLPOP", b"q", b"1"]);
    assert!(
        r.starts_with(b"-ERR max session connections (1) reached"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    assert_eq!(second.cmd(&[b"LPUSH", b"q", b"x"]), b":1\r\n");
    assert_eq!(first.reply(), b"*2\r\n$1\r\nq\r\n$1\r\nx\r\n");
    drop(first);
    let freed = wait_until(Duration::from_secs(2), || {
        second.cmd(&[b"BLPOP", b"q", b"0.1"]) == b"*-1\r\n"
    });
    assert!(freed, "the slot frees when its client leaves");
}

#[test]
fn a_client_that_closes_while_blocked_is_dropped_at_once() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    raw.send(&encode_request(&[&b"BLPOP"[..], b"never", b"10"]));
    std::thread::sleep(Duration::from_millis(100));
    raw.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let started = std::time::Instant::now();
    assert!(raw.is_closed());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut a.client())
        .unwrap();
    let blocked = clients.lines().filter(|l| l.contains("cmd=blpop")).count();
    assert!(
        wait_until(Duration::from_secs(2), || {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut a.client())
                .unwrap();
            !list.contains("cmd=blpop")
        }),
        "its session is gone from the backend too ({blocked} were blocked)"
    );
}
