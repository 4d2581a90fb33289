//! Forwarding through respite to real redis-server backends: order, spread, framing, byte-exact
//! replies.

mod support;

use respite::picker::PickerKind;
use respite::resp::encode_request;
use std::time::Duration;
use support::*;

/// Writes the same `key{i} -> val{i}` data straight into every server, so that any backend can
/// answer any read (the backends of a real deployment serve one keyspace).
fn preload(servers: &[&RedisServer], prefix: &str, n: usize) {
    for s in servers {
        let mut c = s.client();
        let mut p = redis::pipe();
        for i in 0..n {
            p.set(format!("{prefix}{i}"), format!("val{prefix}{i}"))
                .ignore();
        }
        let () = p.query(&mut c).expect("preload");
    }
}

#[test]
fn replies_keep_request_order_for_a_10000_command_pipeline_across_two_backends() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    preload(&[&a, &b], "k", 10_000);
    let proxy = TestProxy::over(&[&a, &b]);
    let mut raw = proxy.raw();
    // Ten bursts of 1000 without reading replies; the pause between bursts lets the client's
    // in-flight count reach zero, so each burst gets a fresh pick and the bursts alternate.
    for burst in 0..10 {
        let mut pipeline = Vec::new();
        for i in burst * 1000..(burst + 1) * 1000 {
            pipeline.extend_from_slice(&encode_request(&[
                b"GET".as_slice(),
                format!("k{i}").as_bytes(),
            ]));
            if i % 1000 == 0 {
                pipeline.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            }
        }
        raw.send(&pipeline);
        std::thread::sleep(Duration::from_millis(30));
    }
    for i in 0..10_000 {
        let want = format!("valk{i}");
        assert_eq!(raw.reply(), bulk(want.as_bytes()), "reply {i}");
        if i % 1000 == 0 {
            assert_eq!(raw.reply(), b"+PONG\r\n");
        }
    }
    assert!(
        a.calls("get") > 0 && b.calls("get") > 0,
        "both backends served the pipeline"
    );
}

/// Sends 1000 GETs one after another through respite over two backends with `picker` (and
/// `seed`): how many each backend served.
fn spread_of_1000_gets(picker: PickerKind, seed: Option<u64>) -> (u64, u64) {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let proxy = TestProxy::over_with(&[&a, &b], |c| {
        c.picker = picker;
        c.seed = seed;
    });
    let mut c = proxy.client();
    for i in 0..1000 {
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("x{i}"))
            .query(&mut c)
            .unwrap();
    }
    (a.calls("get"), b.calls("get"))
}

#[test]
fn sequential_requests_spread_round_robin_near_even() {
    let (ga, gb) = spread_of_1000_gets(PickerKind::RoundRobin, None);
    assert_eq!(ga + gb, 1000);
    assert!((450..=550).contains(&ga), "round-robin split {ga}/{gb}");
}

#[test]
fn random_picker_spreads_within_a_loose_band_with_a_fixed_seed() {
    let (ga, gb) = spread_of_1000_gets(PickerKind::Random, Some(42));
    assert_eq!(ga + gb, 1000);
    assert!((350..=650).contains(&ga), "random split {ga}/{gb}");
}

#[test]
fn four_pipelining_clients_never_see_each_others_replies() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    for t in 0..4 {
        preload(&[&a, &b], &format!("c{t}:"), 2000);
    }
    let proxy = TestProxy::over(&[&a, &b]);
    let addr = proxy.addr;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut raw = RawClient::connect(addr);
                for round in 0..4 {
                    let mut p = Vec::new();
                    for i in 0..2000 {
                        p.extend_from_slice(&encode_request(&[
                            b"GET".as_slice(),
                            format!("c{t}:{i}").as_bytes(),
                        ]));
                    }
                    raw.send(&p);
                    for i in 0..2000 {
                        let want = format!("valc{t}:{i}");
                        let got = raw.reply();
                        assert_eq!(
                            got,
                            bulk(want.as_bytes()),
                            "client {t} round {round} reply {i}"
                        );
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

#[test]
fn a_request_split_into_one_byte_writes_is_served() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    let req = encode_request(&[&b"SET"[..], b"onebyte", b"hello world"]);
    for &byte in req.iter() {
        raw.send(&[byte]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(raw.reply(), b"+OK\r\n");
    for &byte in b"GET onebyte\r\n" {
        raw.send(&[byte]);
    }
    assert_eq!(raw.reply(), b"$11\r\nhello world\r\n");
}

#[test]
fn a_pipeline_split_at_every_point_is_served_in_order() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut pipeline = Vec::new();
    pipeline.extend_from_slice(&encode_request(&[&b"SET"[..], b"sp", b"v1"]));
    pipeline.extend_from_slice(&encode_request(&[&b"GET"[..], b"sp"]));
    pipeline.extend_from_slice(b"PING\r\n");
    pipeline.extend_from_slice(&encode_request(&[&b"APPEND"[..], b"sp", b"23"]));
    pipeline.extend_from_slice(&encode_request(&[&b"GET"[..], b"sp"]));
    let expect: Vec<&[u8]> = vec![
        b"+OK\r\n",
        b"$2\r\nv1\r\n",
        b"+PONG\r\n",
        b":4\r\n",
        b"$4\r\nv123\r\n",
    ];
    let mut raw = proxy.raw();
    for split in 1..pipeline.len() {
        raw.send(&pipeline[..split]);
        std::thread::sleep(Duration::from_micros(300));
        raw.send(&pipeline[split..]);
        for (i, want) in expect.iter().enumerate() {
            assert_eq!(raw.reply(), want.to_vec(), "split {split} reply {i}");
        }
    }
}

#[test]
fn a_50_mb_value_round_trips() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut c = proxy.client();
    let value: Vec<u8> = (0..50 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut c)
        .unwrap();
    let back: Vec<u8> = redis::cmd("GET").arg("big").query(&mut c).unwrap();
    assert!(back == value, "50 MB value changed on the way");
}

#[test]
fn binary_safe_keys_and_values_with_crlf_inside() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut c = proxy.client();
    let key = b"k\r\ney\0\xff*1\r\n".to_vec();
    let value = b"\r\n$-1\r\n\0\x01\x02+OK\r\n".to_vec();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(&value)
        .query(&mut c)
        .unwrap();
    let back: Vec<u8> = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
    assert_eq!(back, value);
}

#[test]
fn empty_bulk_null_bulk_and_null_array_pass_through_byte_exact() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"GET", b"missing"]), b"$-1\r\n");
    assert_eq!(raw.cmd(&[b"SET", b"empty", b""]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"GET", b"empty"]), b"$0\r\n\r\n");
    assert_eq!(
        raw.cmd(&[b"XREAD", b"COUNT", b"1", b"STREAMS", b"nostream", b"0"]),
        b"*-1\r\n"
    );
    assert_eq!(raw.cmd(&[b"LRANGE", b"nolist", b"0", b"-1"]), b"*0\r\n");
}

#[test]
fn nested_replies_are_byte_exact() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut direct = RawClient::connect(a.addr());
    for i in 0..50 {
        let id = format!("{}-1", i + 1);
        direct.cmd(&[
            b"XADD",
            b"s",
            id.as_bytes(),
            b"f",
            b"v\r\n",
            b"g",
            format!("{i}").as_bytes(),
        ]);
    }
    let mut raw = proxy.raw();
    let via = raw.cmd(&[b"XRANGE", b"s", b"-", b"+"]);
    assert_eq!(via, direct.cmd(&[b"XRANGE", b"s", b"-", b"+"]));
    assert!(via.starts_with(b"*50\r\n*2\r\n$3\r\n1-1\r\n*4\r\n"));
    let info = raw.cmd(&[b"XINFO", b"STREAM", b"s"]);
    assert!(info.starts_with(b"*"), "{}", String::from_utf8_lossy(&info));
}

#[test]
fn inline_commands_are_served() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    raw.send(b"PING\r\nset inl \"a b\\r\\n\"\r\n\r\nget inl\nECHO 'it''s'\r\n");
    assert_eq!(raw.reply(), b"+PONG\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b"$5\r\na b\r\n\r\n");
    let echo = raw.reply();
    assert!(
        echo.starts_with(b"-ERR Protocol error"),
        "{}",
        String::from_utf8_lossy(&echo)
    );
}

#[test]
fn malformed_frames_get_a_protocol_error_and_a_close_while_others_keep_working() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut good = proxy.raw();
    assert_eq!(good.cmd(&[b"SET", b"g", b"1"]), b"+OK\r\n");
    let bad: &[&[u8]] = &[
        b"*1\r\n*1\r\n$4\r\nPING\r\n",
        b"*2147483647\r\n",
        b"*1\r\n$-5\r\n",
        b"*1\r\n$x\r\n",
        b"*1\r\n:1\r\n",
        b"*1\r\n$-0\r\n",
        b"*1\r\n$999999999999\r\n",
    ];
    for b in bad {
        let mut raw = proxy.raw();
        raw.send(b);
        let reply = raw.reply();
        assert!(
            reply.starts_with(b"-ERR Protocol error: "),
            "{:?} -> {}",
            String::from_utf8_lossy(b),
            String::from_utf8_lossy(&reply)
        );
        assert!(
            raw.is_closed(),
            "connection closed after {:?}",
            String::from_utf8_lossy(b)
        );
        assert_eq!(good.cmd(&[b"GET", b"g"]), b"$1\r\n1\r\n");
    }
}

#[test]
fn an_unknown_command_keeps_the_connection_open() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut raw = proxy.raw();
    let r = raw.cmd(&[b"NOSUCHCOMMAND", b"x"]);
    assert!(
        r.starts_with(b"-ERR unknown command"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    assert_eq!(raw.cmd(&[b"PING"]), b"+PONG\r\n");
    assert_eq!(raw.cmd(&[b"SET", b"u", b"1"]), b"+OK\r\n");
}

#[test]
fn a_client_leaving_with_requests_in_flight_does_not_disturb_others() {
    let a = RedisServer::start();
    let proxy = TestProxy::over(&[&a]);
    let mut other = proxy.raw();
    for round in 0..5 {
        let mut leaver = proxy.raw();
        let mut p = sleep_request(50_000);
        for i in 0..100 {
            p.extend_from_slice(&encode_request(&[
                b"SET".as_slice(),
                format!("l{i}").as_bytes(),
                b"x",
            ]));
        }
        leaver.send(&p);
        drop(leaver);
        let key = format!("o{round}");
        assert_eq!(other.cmd(&[b"SET", key.as_bytes(), b"mine"]), b"+OK\r\n");
        assert_eq!(other.cmd(&[b"GET", key.as_bytes()]), b"$4\r\nmine\r\n");
    }
}
