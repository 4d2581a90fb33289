//! Behind twemproxy with its pool (`--twemproxy-config`): what twemproxy refuses runs on the
//! shard master that holds its keys, through respite in front of 2 nutcrackers over 3 masters
//! with replicas.

mod support;

use std::time::Duration;
use support::*;

/// The fleet and respite in front of it, with the pool, once every shard reported its role.
fn routed() -> (Fleet, TestProxy) {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.routed_config());
    wait_for_roles(&proxy);
    (fleet, proxy)
}

/// Two keys on different masters, and one more on the first one's, all starting with `prefix`.
fn keys_apart(fleet: &Fleet, prefix: &str) -> (String, String, String) {
    let keys: Vec<String> = (0..1000).map(|i| format!("{prefix}{i}")).collect();
    let a = &keys[0];
    let home = fleet.master_of(a.as_bytes());
    let b = keys.iter().find(|k| fleet.master_of(k.as_bytes()) != home);
    let c = keys[1..]
        .iter()
        .find(|k| fleet.master_of(k.as_bytes()) == home);
    (
        a.clone(),
        b.expect("a key elsewhere").clone(),
        c.expect("a neighbour").clone(),
    )
}

#[test]
fn streams_run_on_the_master_of_their_key() {
    let (fleet, proxy) = routed();
    let mut c = proxy.client();
    for i in 0..20 {
        let id: String = redis::cmd("XADD")
            .arg("events")
            .arg("*")
            .arg("n")
            .arg(i)
            .query(&mut c)
            .expect("XADD through respite");
        assert!(id.contains('-'), "{id}");
    }
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("events")
        .arg("workers")
        .arg("0")
        .query(&mut c)
        .expect("XGROUP CREATE");
    let range: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("events")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("XRANGE");
    assert_eq!(range.len(), 20);
    type Read = Vec<(String, Vec<(String, Vec<(String, String)>)>)>;
    let read: Read = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("w1")
        .arg("COUNT")
        .arg(5)
        .arg("STREAMS")
        .arg("events")
        .arg(">")
        .query(&mut c)
        .expect("XREADGROUP");
    let ids: Vec<&String> = read[0].1.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 5);
    let mut ack = redis::cmd("XACK");
    ack.arg("events").arg("workers").arg(&ids);
    assert_eq!(ack.query::<u64>(&mut c).expect("XACK"), 5);
    // The stream is on the master twemproxy places "events" on, and only there.
    let home = fleet.master_of(b"events");
    for (i, m) in fleet.masters.iter().enumerate() {
        let len: u64 = redis::cmd("XLEN")
            .arg("events")
            .query(&mut m.client())
            .expect("XLEN");
        assert_eq!(len, if i == home { 20 } else { 0 }, "master {i}");
    }
}

#[test]
fn keyed_commands_twemproxy_refuses_find_what_twemproxy_stored() {
    let (fleet, proxy) = routed();
    let mut c = proxy.client();
    let (a, b, neighbour) = keys_apart(&fleet, "k");
    for (k, v) in [(&a, "12345"), (&b, "some text"), (&neighbour, "x")] {
        let () = redis::cmd("SET").arg(k).arg(v).query(&mut c).expect("SET");
    }
    let enc: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&a)
        .query(&mut c)
        .expect("OBJECT ENCODING");
    assert_eq!(enc, "int");
    let enc: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg(&b)
        .query(&mut c)
        .expect("OBJECT ENCODING");
    assert_eq!(enc, "embstr");
    // RENAME of two keys on one master runs there; across masters it is refused, and nothing
    // is renamed.
    let () = redis::cmd("RENAME")
        .arg(&a)
        .arg(&neighbour)
        .query(&mut c)
        .expect("RENAME on one master");
    let moved: String = redis::cmd("GET")
        .arg(&neighbour)
        .query(&mut c)
        .expect("GET");
    assert_eq!(moved, "12345");
    let err = redis::cmd("RENAME")
        .arg(&neighbour)
        .arg(&b)
        .query::<()>(&mut c)
        .expect_err("keys on two masters");
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    let kept: String = redis::cmd("GET")
        .arg(&neighbour)
        .query(&mut c)
        .expect("GET");
    assert_eq!(kept, "12345", "nothing ran");
    let count: u64 = redis::cmd("COMMAND")
        .arg("COUNT")
        .query(&mut c)
        .expect("COMMAND COUNT");
    assert!(count > 200, "{count}");
    let time: Vec<String> = redis::cmd("TIME").query(&mut c).expect("TIME");
    assert_eq!(time.len(), 2);
}

#[test]
fn scripts_run_where_their_key_lives() {
    let (fleet, proxy) = routed();
    let mut c = proxy.client();
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        .query(&mut c)
        .expect("SCRIPT LOAD");
    for key in ["s1", "s2", "s3", "s4", "s5", "s6"] {
        let n: i64 = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(key)
            .arg(5)
            .query(&mut c)
            .expect("EVALSHA");
        assert_eq!(n, 5);
        let n: i64 = redis::cmd("EVAL")
            .arg("return redis.call('INCRBY', KEYS[1], ARGV[1])")
            .arg(1)
            .arg(key)
            .arg(1)
            .query(&mut c)
            .expect("EVAL");
        assert_eq!(n, 6);
        let home = &fleet.masters[fleet.master_of(key.as_bytes())];
        let stored: i64 = redis::cmd("GET")
            .arg(key)
            .query(&mut home.client())
            .expect("GET");
        assert_eq!(stored, 6, "{key} on its master");
    }
    // A script without keys runs on one master.
    let one: i64 = redis::cmd("EVAL")
        .arg("return 1")
        .arg(0)
        .query(&mut c)
        .expect("EVAL with no keys");
    assert_eq!(one, 1);
}

#[test]
fn a_pipeline_across_both_paths_keeps_its_order_and_reads_its_writes() {
    let (_fleet, proxy) = routed();
    // One hash tag: one master.
    let (a, neighbour) = ("{t}a", "{t}b");
    let mut raw = proxy.raw();
    let mut pipeline = Vec::new();
    for round in 0..20 {
        let v = format!("{round}");
        let cmds: Vec<Vec<&[u8]>> = vec![
            vec![b"SET", a.as_bytes(), v.as_bytes()],
            vec![b"OBJECT", b"ENCODING", a.as_bytes()],
            vec![b"APPEND", a.as_bytes(), b"-text"],
            vec![b"OBJECT", b"ENCODING", a.as_bytes()],
            vec![b"RENAME", a.as_bytes(), neighbour.as_bytes()],
            vec![b"GET", neighbour.as_bytes()],
            vec![b"EXISTS", a.as_bytes()],
        ];
        for cmd in cmds {
            pipeline.extend_from_slice(&respite::resp::encode_request(&cmd));
        }
    }
    raw.send(&pipeline);
    for round in 0..20 {
        let expected: Vec<Vec<u8>> = vec![
            b"+OK\r\n".to_vec(),
            b"$3\r\nint\r\n".to_vec(),
            format!(":{}\r\n", format!("{round}-text").len()).into_bytes(),
            b"$3\r\nraw\r\n".to_vec(),
            b"+OK\r\n".to_vec(),
            bulk(format!("{round}-text").as_bytes()),
            b":0\r\n".to_vec(),
        ];
        for want in expected {
            let got = raw.reply();
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "round {round}"
            );
        }
    }
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert!(raw.try_reply().is_err(), "no extra reply");
}

#[test]
fn without_the_pool_a_refused_command_says_how_to_route_it() {
    let fleet = Fleet::start();
    let proxy = TestProxy::start(fleet.config());
    wait_for_roles(&proxy);
    let mut raw = proxy.raw();
    let reply = String::from_utf8_lossy(&raw.cmd(&[b"XADD", b"s", b"*", b"f", b"v"])).into_owned();
    assert!(
        reply.starts_with(
            "-ERR XADD is not supported by the twemproxy backends; give --twemproxy-config"
        ),
        "{reply}"
    );
    // A keyless one runs on a master.
    let time = raw.cmd(&[b"TIME"]);
    assert!(
        time.starts_with(b"*2\r\n"),
        "{}",
        String::from_utf8_lossy(&time)
    );
}

#[test]
fn watch_multi_exec_counts_exactly_from_four_writers() {
    let (fleet, proxy) = routed();
    let done = watched_increments(&proxy, "counter", 4, 200);
    assert_eq!(done, 800);
    let home = &fleet.masters[fleet.master_of(b"counter")];
    let n: i64 = redis::cmd("GET")
        .arg("counter")
        .query(&mut home.client())
        .expect("GET");
    assert_eq!(n, 800);
}

#[test]
fn multi_waits_for_its_first_key_and_a_second_master_aborts_it() {
    let (fleet, proxy) = routed();
    let (a, b, neighbour) = keys_apart(&fleet, "tx");
    let mut raw = proxy.raw();
    // Keyless commands first: held with MULTI until the first key picks the master.
    let replies: Vec<Vec<u8>> = [
        vec![&b"MULTI"[..]],
        vec![b"PING"],
        vec![b"SET", a.as_bytes(), b"1"],
        vec![b"INCR", neighbour.as_bytes()],
        vec![b"EXEC"],
    ]
    .iter()
    .map(|c| raw.cmd(c))
    .collect();
    assert_eq!(replies[0], b"+OK\r\n");
    assert_eq!(replies[1], b"+QUEUED\r\n");
    assert_eq!(replies[4], b"*3\r\n+PONG\r\n+OK\r\n:1\r\n");
    // A key on another master: -CROSSSLOT, and nothing of the transaction runs.
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"SET", a.as_bytes(), b"2"]), b"+QUEUED\r\n");
    let cross = raw.cmd(&[b"SET", b.as_bytes(), b"2"]);
    assert!(
        cross.starts_with(b"-CROSSSLOT"),
        "{}",
        String::from_utf8_lossy(&cross)
    );
    assert_eq!(raw.cmd(&[b"INCR", neighbour.as_bytes()]), b"+QUEUED\r\n");
    let exec = raw.cmd(&[b"EXEC"]);
    assert!(
        exec.starts_with(b"-EXECABORT"),
        "{}",
        String::from_utf8_lossy(&exec)
    );
    assert_eq!(raw.cmd(&[b"GET", a.as_bytes()]), b"$1\r\n1\r\n");
    assert_eq!(raw.cmd(&[b"GET", b.as_bytes()]), b"$-1\r\n");
    assert_eq!(raw.cmd(&[b"GET", neighbour.as_bytes()]), b"$1\r\n1\r\n");
    // Only keyless commands: they run on one master.
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"PING"]), b"+QUEUED\r\n");
    assert_eq!(raw.cmd(&[b"EXEC"]), b"*1\r\n+PONG\r\n");
    // RESET while held answers what was held, in order.
    let pipeline: Vec<u8> = [
        &[&b"MULTI"[..]][..],
        &[b"PING"],
        &[b"RESET"],
        &[b"GET", a.as_bytes()],
    ]
    .iter()
    .flat_map(|c| respite::resp::encode_request(c).to_vec())
    .collect();
    raw.send(&pipeline);
    assert_eq!(raw.reply(), b"+OK\r\n");
    assert_eq!(raw.reply(), b"+QUEUED\r\n");
    assert_eq!(raw.reply(), b"+RESET\r\n");
    assert_eq!(raw.reply(), b"$1\r\n1\r\n");
}

#[test]
fn blocking_commands_wait_on_the_master_of_their_key() {
    let (_fleet, proxy) = routed();
    let mut blocked = proxy.client();
    let waiter = std::thread::spawn(move || {
        let got: Option<(String, String)> = redis::cmd("BLPOP")
            .arg("jobs")
            .arg(5)
            .query(&mut blocked)
            .expect("BLPOP");
        let popped: Option<(String, String, f64)> = redis::cmd("BZPOPMIN")
            .arg("ranks")
            .arg(5)
            .query(&mut blocked)
            .expect("BZPOPMIN");
        (got, popped)
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut c = proxy.client();
    let _: i64 = redis::cmd("LPUSH")
        .arg("jobs")
        .arg("j1")
        .query(&mut c)
        .expect("LPUSH");
    let _: i64 = redis::cmd("ZADD")
        .arg("ranks")
        .arg(2.5)
        .arg("r")
        .query(&mut c)
        .expect("ZADD");
    let (got, popped) = waiter.join().expect("waiter");
    assert_eq!(got, Some(("jobs".into(), "j1".into())));
    assert_eq!(popped, Some(("ranks".into(), "r".into(), 2.5)));
    // XREAD BLOCK is woken by an XADD on the same master.
    let mut reader = proxy.client();
    let read = std::thread::spawn(move || {
        redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(5000)
            .arg("STREAMS")
            .arg("feed")
            .arg("$")
            .query::<redis::Value>(&mut reader)
            .expect("XREAD BLOCK")
    });
    std::thread::sleep(Duration::from_millis(300));
    let _: String = redis::cmd("XADD")
        .arg("feed")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .expect("XADD");
    let value = read.join().expect("reader");
    assert!(format!("{value:?}").contains("feed"), "{value:?}");
}

#[test]
fn a_clients_session_follows_its_keys_from_master_to_master() {
    let (fleet, proxy) = routed();
    let (a, b, _) = keys_apart(&fleet, "moving");
    let mut raw = proxy.raw();
    // A transaction on a's master leaves the client a session there...
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"SET", a.as_bytes(), b"1"]), b"+QUEUED\r\n");
    assert_eq!(raw.cmd(&[b"EXEC"]), b"*1\r\n+OK\r\n");
    // ...and WATCH on b's key, the transaction after it and blocking pops go to b's master.
    assert_eq!(raw.cmd(&[b"WATCH", b.as_bytes()]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"GET", b.as_bytes()]), b"$-1\r\n");
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"SET", b.as_bytes(), b"2"]), b"+QUEUED\r\n");
    assert_eq!(raw.cmd(&[b"EXEC"]), b"*1\r\n+OK\r\n");
    for (key, value) in [(&a, "x"), (&b, "y"), (&a, "z")] {
        let pushed = raw.cmd(&[b"RPUSH", format!("{key}:q").as_bytes(), value.as_bytes()]);
        assert_eq!(pushed, b":1\r\n");
        let popped = raw.cmd(&[b"BLPOP", format!("{key}:q").as_bytes(), b"1"]);
        let want = format!("*2\r\n${}\r\n{key}:q\r\n$1\r\n{value}\r\n", key.len() + 2);
        assert_eq!(String::from_utf8_lossy(&popped), want);
    }
    let on = |key: &str| -> Option<String> {
        let mut m = fleet.masters[fleet.master_of(key.as_bytes())].client();
        redis::cmd("GET")
            .arg(key)
            .query(&mut m)
            .expect("GET on its master")
    };
    assert_eq!(on(&a).as_deref(), Some("1"));
    assert_eq!(on(&b).as_deref(), Some("2"));
}
