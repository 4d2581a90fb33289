//! Streaming: a request of several megabytes goes on to a backend connection of its own while
//! it arrives, instead of waiting whole in respite's memory. It must still run after the
//! client's earlier requests and before its later ones, arrive byte-exact, and fail cleanly
//! (answered, then closed) when its connection is lost half way.

mod support;

use respite::resp::encode_request;
use std::time::Duration;
use support::*;

const VALUE_BYTES: usize = 3 << 20;

/// `MSET big0 <3 MB> ... big3 <3 MB> order new`: 12 MB, with distinct contents per value.
fn big_mset() -> (Vec<u8>, Vec<Vec<u8>>) {
    let values: Vec<Vec<u8>> = (0..4usize)
        .map(|i| {
            (0..VALUE_BYTES)
                .map(|j| b'a' + ((i * 7 + j) % 26) as u8)
                .collect()
        })
        .collect();
    let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for (i, v) in values.iter().enumerate() {
        args.push(format!("big{i}").into_bytes());
        args.push(v.clone());
    }
    args.push(b"order".to_vec());
    args.push(b"new".to_vec());
    (encode_request(&args).to_vec(), values)
}

/// The largest `tot-mem` of any client of `redis` but the one asking.
fn biggest_client(redis: &RedisServer) -> (u64, Option<String>) {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut redis.client())
        .expect("client list");
    list.lines()
        .filter_map(|line| {
            let field = |name: &str| {
                line.split(' ')
                    .find_map(|kv| kv.strip_prefix(name))
                    .map(str::to_owned)
            };
            let mem = field("tot-mem=")?.parse::<u64>().ok()?;
            Some((mem, field("id=")))
        })
        .max()
        .unwrap_or((0, None))
}

/// Waits up to 10 s until a client of `redis` holds more than `bytes`; returns its id.
fn wait_for_big_client(redis: &RedisServer, bytes: u64) -> Option<String> {
    let mut id = None;
    wait_until(Duration::from_secs(10), || {
        let (mem, who) = biggest_client(redis);
        id = who;
        mem > bytes
    });
    id.filter(|_| biggest_client(redis).0 > bytes)
}

/// Waits up to 5 s until no client of `redis` holds a megabyte: the streamed request's
/// connection is gone.
fn half_request_gone(redis: &RedisServer) -> bool {
    wait_until(Duration::from_secs(5), || biggest_client(redis).0 < 1 << 20)
}

#[test]
fn a_large_request_reaches_the_backend_before_it_is_whole_and_keeps_its_order() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    let mut raw = proxy.raw();
    let (mset, values) = big_mset();
    let mut before = encode_request(&[b"SET".as_slice(), b"order", b"old"]).to_vec();
    before.extend_from_slice(&mset[..8 << 20]);
    raw.send(&before);
    // 8 MB of the request are in; the backend holds most of them already.
    assert!(
        wait_for_big_client(&redis, 6 << 20).is_some(),
        "the backend never saw the partial request"
    );
    let mut after = mset[8 << 20..].to_vec();
    after.extend_from_slice(&encode_request(&[b"GET".as_slice(), b"order"]));
    raw.send(&after);
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b"+OK\r\n");
    // The GET ran after the MSET, the SET before it.
    assert_eq!(raw.reply(), b"$3\r\nnew\r\n");
    let mut client = proxy.client();
    for (i, v) in values.iter().enumerate() {
        let got: Vec<u8> = redis::cmd("GET")
            .arg(format!("big{i}"))
            .query(&mut client)
            .expect("get");
        assert!(got == *v, "big{i} differs ({} bytes)", got.len());
    }
    // The streamed request's own connection closes once it is answered.
    assert!(
        half_request_gone(&redis),
        "the stream's connection stayed open"
    );
    // And the client goes on as usual.
    assert_eq!(raw.cmd(&[b"GET", b"order"]), b"$3\r\nnew\r\n");
}

#[test]
fn a_backend_lost_mid_stream_answers_the_request_and_closes_the_client() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    let mut raw = proxy.raw();
    let (mset, _) = big_mset();
    raw.send(&mset[..8 << 20]);
    let id = wait_for_big_client(&redis, 6 << 20).expect("the backend never saw the request");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(&id)
        .query(&mut redis.client())
        .expect("client kill");
    assert_eq!(killed, 1);
    let reply = raw.reply();
    assert!(
        reply.starts_with(b"-ERR backend") && reply.ends_with(b"connection lost\r\n"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(raw.is_closed(), "the client was not closed");
    // Nothing of the half request was stored, and other clients are served.
    let mut other = proxy.raw();
    assert_eq!(other.cmd(&[b"EXISTS", b"big0"]), b":0\r\n");
    assert_eq!(other.cmd(&[b"SET", b"k", b"v"]), b"+OK\r\n");
    assert_eq!(other.cmd(&[b"GET", b"k"]), b"$1\r\nv\r\n");
}

#[test]
fn a_client_gone_mid_stream_takes_its_backend_connection_with_it() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    let mut raw = proxy.raw();
    let (mset, _) = big_mset();
    raw.send(&mset[..8 << 20]);
    assert!(wait_for_big_client(&redis, 6 << 20).is_some());
    drop(raw);
    assert!(
        half_request_gone(&redis),
        "the half request's connection stayed open"
    );
    let mut other = proxy.raw();
    assert_eq!(other.cmd(&[b"EXISTS", b"big0"]), b":0\r\n");
    assert_eq!(other.cmd(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn a_protocol_error_mid_stream_answers_the_request_and_closes_the_client() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over(&[&redis]);
    let mut raw = proxy.raw();
    let (mset, _) = big_mset();
    // Two whole 3 MB values and their keys, streamed; then a header that is not a bulk string.
    let cut = mset
        .windows(7)
        .enumerate()
        .filter(|(_, w)| w == b"$4\r\nbig")
        .nth(2)
        .map(|(at, _)| at)
        .expect("the third key");
    raw.send(&mset[..cut]);
    assert!(wait_for_big_client(&redis, 5 << 20).is_some());
    raw.send(b":4\r\nbig2\r\n");
    assert_eq!(
        raw.reply(),
        b"-ERR Protocol error: expected '$', got ':'\r\n"
    );
    assert!(raw.is_closed(), "the client was not closed");
    assert!(
        half_request_gone(&redis),
        "the half request's connection stayed open"
    );
    let mut other = proxy.raw();
    assert_eq!(other.cmd(&[b"EXISTS", b"big0"]), b":0\r\n");
}

/// Sends `SET big <value>` for a value of `len` bytes, but only its first 5 MB, and waits until
/// the backend holds them (the request is streaming). Returns 1 MB of the value, to send more.
fn start_big_set(raw: &mut RawClient, redis: &RedisServer, len: usize) -> Vec<u8> {
    raw.send(format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${len}\r\n").as_bytes());
    let mb = vec![b'x'; 1 << 20];
    for _ in 0..5 {
        raw.send(&mb);
    }
    assert!(
        wait_for_big_client(redis, 4 << 20).is_some(),
        "the backend never saw the request"
    );
    mb
}

#[test]
fn a_backend_that_stops_reading_stops_a_streaming_client() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over_with(&[&redis], patient);
    let mut raw = proxy.raw();
    let mb = start_big_set(&mut raw, &redis, 300 << 20);
    // The stream is under way; then the backend stops reading.
    let accepted = redis.while_stopped(|| raw.write_until_blocked(&mb, 295));
    eprintln!(
        "a streaming client feeding a stopped backend got {} MB in",
        accepted >> 20
    );
    assert!(
        accepted < 80 << 20,
        "respite kept reading: {} MB",
        accepted >> 20
    );
}

#[test]
fn a_client_stalled_inside_a_streamed_request_is_closed_as_idle() {
    let redis = RedisServer::start();
    let proxy = TestProxy::over_with(&[&redis], |c| c.timeout = Some(Duration::from_secs(1)));
    let mut raw = proxy.raw();
    start_big_set(&mut raw, &redis, 64 << 20);
    // Nothing more comes: within a few ticks past --timeout the client is gone, and so is the
    // connection holding its half request.
    assert!(raw.is_closed(), "the stalled client was not closed");
    assert!(
        half_request_gone(&redis),
        "the half request's connection stayed open"
    );
}

#[test]
fn shutdown_answers_a_request_still_streaming_in_at_once() {
    let redis = RedisServer::start();
    let mut proxy =
        TestProxy::over_with(&[&redis], |c| c.shutdown_timeout = Duration::from_secs(20));
    let mut raw = proxy.raw();
    start_big_set(&mut raw, &redis, 64 << 20);
    let started = std::time::Instant::now();
    proxy.stop().expect("clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown waited {:?} for a request that could not finish",
        started.elapsed()
    );
    assert_eq!(raw.reply(), b"-ERR respite is shutting down\r\n");
    let mut direct = redis.client();
    let exists: i64 = redis::cmd("EXISTS")
        .arg("big")
        .query(&mut direct)
        .expect("exists");
    assert_eq!(exists, 0);
}
