//! Faithful relaying: the same bytes sent straight to redis-server and through respite get the
//! same bytes back — pipelines that mix pub/sub with other commands, RESET, transactions and
//! blocking reads for RESP3 clients.

mod support;

use respite::resp::encode_request;
use std::time::Duration;
use support::*;

/// Sends `pipeline` in one write to `raw` and reads `replies` frames back.
fn exchange(raw: &mut RawClient, pipeline: &[&[&[u8]]], replies: usize) -> Vec<String> {
    let bytes: Vec<u8> = pipeline
        .iter()
        .flat_map(|c| encode_request(c).to_vec())
        .collect();
    raw.send(&bytes);
    (0..replies)
        .map(|_| String::from_utf8_lossy(&raw.reply()).into_owned())
        .collect()
}

/// The replies of `pipeline` from Redis directly and through respite, after `setup` ran on
/// both (its replies are not compared: respite answers HELLO with its own id).
fn both(
    redis: &RedisServer,
    proxy: &TestProxy,
    setup: &[&[&[u8]]],
    pipeline: &[&[&[u8]]],
    replies: usize,
) -> (Vec<String>, Vec<String>) {
    let run = |mut raw: RawClient| {
        exchange(&mut raw, setup, setup.len());
        let got = exchange(&mut raw, pipeline, replies);
        // Nothing more may follow: the pipeline was answered exactly.
        raw.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        assert!(raw.try_reply().is_err(), "an extra reply after {got:?}");
        got
    };
    (run(RawClient::connect(redis.addr())), run(proxy.raw()))
}

/// A proxy over `redis` that knows whether it speaks RESP3 before the test starts.
fn proxy_over(redis: &RedisServer) -> TestProxy {
    let proxy = TestProxy::over(&[redis]);
    // The probe learns RESP3 in its second round (the first checks PING).
    std::thread::sleep(Duration::from_millis(700));
    proxy
}

#[test]
fn subscribe_pipelined_with_other_commands_is_answered_in_redis_order() {
    let redis = RedisServer::start();
    let proxy = proxy_over(&redis);
    let pipeline: &[&[&[u8]]] = &[
        &[b"SUBSCRIBE", b"ch", b"other"],
        &[b"GET", b"x"],
        &[b"PING"],
        &[b"PSUBSCRIBE", b"p*"],
        &[b"UNSUBSCRIBE"],
        &[b"PING", b"hi"],
        &[b"PUNSUBSCRIBE"],
        &[b"GET", b"x"],
    ];
    let (direct, via) = both(&redis, &proxy, &[], pipeline, 10);
    assert_eq!(via, direct);
    assert!(direct[2].contains("Can't execute 'get'"), "{direct:?}");
    assert_eq!(direct[9], "$-1\r\n", "back in normal mode: {direct:?}");
}

#[test]
fn subscribe_pipelined_with_other_commands_is_answered_in_redis_order_in_resp3() {
    let redis = RedisServer::start();
    let proxy = proxy_over(&redis);
    let pipeline: &[&[&[u8]]] = &[
        &[b"SUBSCRIBE", b"ch"],
        &[b"GET", b"x"],
        &[b"PING"],
        &[b"UNSUBSCRIBE", b"ch"],
        &[b"PING"],
    ];
    let (direct, via) = both(&redis, &proxy, &[&[b"HELLO", b"3"]], pipeline, 5);
    assert_eq!(via, direct);
    assert_eq!(direct[1], "_\r\n", "{direct:?}");
}

#[test]
fn reset_while_subscribed_leaves_subscribed_mode_and_keeps_the_connection() {
    let redis = RedisServer::start();
    let proxy = proxy_over(&redis);
    let pipeline: &[&[&[u8]]] = &[&[b"SUBSCRIBE", b"ch"], &[b"RESET"], &[b"GET", b"x"]];
    let (direct, via) = both(&redis, &proxy, &[], pipeline, 3);
    assert_eq!(via, direct);
    assert_eq!(direct[1..], ["+RESET\r\n", "$-1\r\n"]);
}

#[test]
fn messages_follow_the_confirmation_of_their_channel() {
    let redis = RedisServer::start();
    let proxy = proxy_over(&redis);
    let mut publisher = proxy.client();
    let mut sub = proxy.raw();
    // A publisher floods the channel while the subscriber's pipeline is still being answered.
    let flood = std::thread::spawn(move || {
        for i in 0..2000 {
            let _: i64 = redis::cmd("PUBLISH")
                .arg("busy")
                .arg(i)
                .query(&mut publisher)
                .expect("publish");
        }
    });
    let pipeline: &[&[&[u8]]] = &[&[b"PING"], &[b"SUBSCRIBE", b"busy"], &[b"PING"]];
    let got = exchange(&mut sub, pipeline, 2);
    assert_eq!(got[0], "+PONG\r\n", "{got:?}");
    assert!(got[1].contains("subscribe\r\n$4\r\nbusy\r\n:1"), "{got:?}");
    flood.join().expect("publisher");
    let _ = redis;
}

#[test]
fn reset_before_auth_is_answered_and_a_wrong_auth_does_not_log_a_client_out() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over_with(&[&redis], |c| c.password = Some("secret".into()));
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"RESET"]), b"+RESET\r\n");
    assert!(raw.cmd(&[b"GET", b"x"]).starts_with(b"-NOAUTH"));
    assert_eq!(raw.cmd(&[b"AUTH", b"secret"]), b"+OK\r\n");
    assert!(raw.cmd(&[b"AUTH", b"wrong"]).starts_with(b"-WRONGPASS"));
    assert_eq!(
        raw.cmd(&[b"GET", b"x"]),
        b"$-1\r\n",
        "still authenticated, as in Redis"
    );
}

#[test]
fn transactions_and_blocking_reads_have_their_resp3_shapes() {
    let redis = RedisServer::start();
    let proxy = proxy_over(&redis);
    let mut c = redis.client();
    let () = redis::cmd("HSET")
        .arg("h")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .expect("hset");
    let _: i64 = redis::cmd("ZADD")
        .arg("z")
        .arg(1.5)
        .arg("m")
        .query(&mut c)
        .expect("zadd");
    let _: String = redis::cmd("XADD")
        .arg("s")
        .arg("1-1")
        .arg("a")
        .arg("1")
        .query(&mut c)
        .expect("xadd");
    let pipeline: &[&[&[u8]]] = &[
        &[b"MULTI"],
        &[b"HGETALL", b"h"],
        &[b"ZSCORE", b"z", b"m"],
        &[b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"],
        &[b"EXEC"],
        &[b"XREAD", b"BLOCK", b"100", b"STREAMS", b"s", b"0"],
        &[b"XREAD", b"COUNT", b"5", b"STREAMS", b"s", b"0"],
    ];
    let (direct, via) = both(&redis, &proxy, &[&[b"HELLO", b"3"]], pipeline, 7);
    assert_eq!(via, direct);
    assert!(direct[4].starts_with("*3\r\n%1\r\n"), "{direct:?}");
    assert!(direct[5].starts_with("%1\r\n"), "{direct:?}");
}

#[test]
fn resp3_clients_are_served_natively_from_the_first_request() {
    let redis = RedisServer::start();
    // No wait: the first requests arrive while the probe is still learning the backend.
    let proxy = TestProxy::over(&[&redis]);
    let pipeline: &[&[&[u8]]] = &[&[b"COMMAND", b"DOCS", b"GET"], &[b"HGETALL", b"nothing"]];
    let (direct, via) = both(&redis, &proxy, &[&[b"HELLO", b"3"]], pipeline, 2);
    assert_eq!(
        via, direct,
        "nested maps only come from a backend speaking RESP3"
    );
    assert!(direct[0].starts_with("%1\r\n$3\r\nget\r\n%"), "{direct:?}");
}

#[test]
fn resp3_clients_of_a_twemproxy_backend_are_converted_without_waiting_long() {
    let redis = RedisServer::start();
    let twemproxy = Nutcracker::start(&[redis.addr()]);
    let proxy = TestProxy::start(config_over(vec![twemproxy.addr()]));
    let mut raw = proxy.raw();
    let started = std::time::Instant::now();
    raw.cmd(&[b"HELLO", b"3"]);
    raw.cmd(&[b"HSET", b"h", b"f", b"v"]);
    assert_eq!(
        raw.cmd(&[b"HGETALL", b"h"]),
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// Sends `bytes` in one write and reads until the server closes the connection or is quiet
/// for 300 ms: the bytes that came back, and whether it closed.
fn replies_to(mut raw: RawClient, bytes: &[u8]) -> (String, bool) {
    use std::io::Read;
    raw.send(bytes);
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..1000 {
        match raw.stream.read(&mut chunk) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true)
            }
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

#[test]
fn broken_streams_get_redis_protocol_errors_and_type_bytes_start_inline_commands() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    let long_inline = vec![b'a'; 70 * 1024];
    let cases: &[&[u8]] = &[
        b"*1\r\n:1\r\n",
        b"*2\r\n$3\r\nGET\r\n+k\r\n",
        b"*1\r\n$04\r\nPING\r\n",
        b"*01\r\n$4\r\nPING\r\n",
        b"*-0\r\n",
        b"*1\r\n$-0\r\n",
        b"*1\r\n$-3\r\n",
        b"*x\r\n",
        b"*1\r\n$1x\r\n",
        b"$4\r\nPING\r\n",
        b"%1\r\n+a\r\n+b\r\n",
        b":1\r\nPING\r\n",
        b"ECHO \"unbalanced\r\n",
        b"ECHO 'a'b\r\n",
        &long_inline,
        b"*0\r\n*-1\r\nPING\r\n",
    ];
    for case in cases {
        let direct = replies_to(RawClient::connect(redis.addr()), case);
        let via = replies_to(proxy.raw(), case);
        assert_eq!(via, direct, "{:?}", String::from_utf8_lossy(case));
    }
}

#[test]
fn unauthenticated_clients_get_redis_small_limits() {
    let redis = RedisServer::start_with(&["--requirepass", "secret"]);
    let proxy = TestProxy::over_with(&[&redis], |c| {
        c.password = Some("secret".into());
        c.backend_password = Some("secret".into());
    });
    let value = vec![b'v'; 16385];
    let big = encode_request(&[&b"SET"[..], b"k", &value]);
    let keys: Vec<&[u8]> = [
        &b"DEL"[..],
        b"a",
        b"b",
        b"c",
        b"d",
        b"e",
        b"f",
        b"g",
        b"h",
        b"i",
        b"j",
    ]
    .into();
    let many = encode_request(&keys);
    let auth = encode_request(&[&b"AUTH"[..], b"secret"]);
    let cases: Vec<Vec<u8>> = vec![
        big.to_vec(),
        many.to_vec(),
        b"*1\r\n$16385\r\n".to_vec(),
        b"*11\r\n".to_vec(),
        [&auth[..], &big[..], &many[..]].concat(),
    ];
    for case in &cases {
        let direct = replies_to(RawClient::connect(redis.addr()), case);
        let via = replies_to(proxy.raw(), case);
        assert_eq!(via, direct, "{:?}", String::from_utf8_lossy(&case[..40]));
    }
}

#[test]
fn resp3_clients_of_a_resp2_only_backend_get_redis_shapes_for_exec_streams_and_geo() {
    let redis = RedisServer::start();
    // A redis-server without HELLO answers in RESP2 only: respite converts for RESP3 clients.
    let resp2 = RedisServer::start_with(&["--rename-command", "HELLO", ""]);
    let proxy = proxy_over(&resp2);
    let setup: &[&[&[u8]]] = &[
        &[b"HSET", b"h", b"f", b"v"],
        &[b"ZADD", b"z", b"1.5", b"m"],
        &[b"XADD", b"s", b"1-1", b"a", b"1"],
        &[b"XGROUP", b"CREATE", b"s", b"g", b"0"],
        &[
            b"GEOADD",
            b"geo",
            b"13.361389",
            b"38.115556",
            b"Palermo",
            b"15.087269",
            b"37.502669",
            b"Catania",
        ],
    ];
    for server in [&redis, &resp2] {
        let mut raw = RawClient::connect(server.addr());
        for cmd in setup {
            assert!(!raw.cmd(cmd).starts_with(b"-"), "{cmd:?}");
        }
    }
    let pipeline: &[&[&[u8]]] = &[
        &[b"MULTI"],
        &[b"HGETALL", b"h"],
        &[b"ZSCORE", b"z", b"m"],
        &[b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES"],
        &[b"XREAD", b"STREAMS", b"s", b"0"],
        &[b"GEOPOS", b"geo", b"Palermo"],
        &[b"EXEC"],
        &[b"MULTI"],
        &[b"HGETALL", b"h"],
        &[b"DISCARD"],
        &[b"XREAD", b"BLOCK", b"100", b"STREAMS", b"s", b"0"],
        &[b"XREAD", b"BLOCK", b"50", b"STREAMS", b"s", b"$"],
        &[b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"s", b">"],
        &[
            b"GEOSEARCH",
            b"geo",
            b"FROMLONLAT",
            b"15",
            b"37",
            b"BYRADIUS",
            b"200",
            b"km",
            b"ASC",
            b"WITHCOORD",
            b"WITHDIST",
            b"WITHHASH",
        ],
        &[
            b"GEORADIUS",
            b"geo",
            b"15",
            b"37",
            b"200",
            b"km",
            b"WITHCOORD",
        ],
        &[
            b"GEORADIUS",
            b"geo",
            b"15",
            b"37",
            b"200",
            b"km",
            b"WITHDIST",
        ],
    ];
    let (direct, via) = both(&redis, &proxy, &[&[b"HELLO", b"3"]], pipeline, 16);
    assert_eq!(via, direct);
    assert!(direct[6].starts_with("*5\r\n%1\r\n"), "{direct:?}");
    assert!(direct[10].starts_with("%1\r\n"), "{direct:?}");
    assert_eq!(direct[11], "_\r\n", "{direct:?}");
}
