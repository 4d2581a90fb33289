//! Behind Codis (`--codis`, no `--shards`): respite reads the slot table from the codis-proxies,
//! takes their group masters as its shards, and sends what Codis refuses (or would place on the
//! wrong group) to the group master of its keys — through respite in front of 2 codis-proxies
//! over 3 groups of a real Codis 3.2.2.

mod support;

use respite::resp::encode_request;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::*;

/// Codis and respite in front of it, once respite has learned the slot table and the roles.
fn routed() -> (Codis, TestProxy) {
    let codis = Codis::start(3, 2);
    let proxy = TestProxy::start(codis.config());
    let mut raw = proxy.raw();
    let ready = wait_until(Duration::from_secs(10), || {
        let info = String::from_utf8_lossy(&raw.cmd(&[b"INFO", b"shards"])).into_owned();
        info.contains("shard2:") && !info.contains("role=unknown")
    });
    assert!(ready, "the group masters became the shards");
    (codis, proxy)
}

#[test]
fn transactions_blocking_streams_and_scripts_run_on_the_group_master() {
    let (codis, proxy) = routed();
    let mut c = proxy.client();
    // MULTI/EXEC, refused by Codis, runs on the master of its keys.
    let (n,): (i64,) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("{acct}balance")
        .query(&mut c)
        .expect("MULTI/EXEC");
    assert_eq!(n, 1);
    // A counter under WATCH from four writers.
    let done = watched_increments(&proxy, "counter", 4, 50);
    assert_eq!(done, 200);
    let home = codis.masters[codis.master_of(b"counter")];
    let stored: i64 = redis::cmd("GET")
        .arg("counter")
        .query(&mut client_at(home))
        .expect("GET on the master");
    assert_eq!(stored, 200);
    // BLPOP (Codis refuses blocking commands) woken by an LPUSH through Codis.
    assert_blpop_woken_by_lpush(&proxy, "jobs", "j");
    // Streams: XREADGROUP's key is not where Codis looks for it.
    for i in 0..10 {
        let _: String = redis::cmd("XADD")
            .arg("events")
            .arg("*")
            .arg("n")
            .arg(i)
            .query(&mut c)
            .expect("XADD");
    }
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("events")
        .arg("g")
        .arg("0")
        .query(&mut c)
        .expect("XGROUP");
    type Read = Vec<(String, Vec<(String, Vec<(String, String)>)>)>;
    let read: Read = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("w")
        .arg("STREAMS")
        .arg("events")
        .arg(">")
        .query(&mut c)
        .expect("XREADGROUP");
    assert_eq!(read[0].1.len(), 10);
    // Scripts: SCRIPT LOAD reaches every group master, EVALSHA runs where its key lives.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('INCR', KEYS[1])")
        .query(&mut c)
        .expect("SCRIPT LOAD");
    for key in ["e1", "e2", "e3", "e4"] {
        let n: i64 = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(key)
            .query(&mut c)
            .expect("EVALSHA");
        assert_eq!(n, 1);
    }
    // OBJECT and RENAME (refused by Codis) run on the master; across groups: -CROSSSLOT.
    let () = redis::cmd("SET")
        .arg("{r}a")
        .arg("7")
        .query(&mut c)
        .expect("SET");
    let enc: String = redis::cmd("OBJECT")
        .arg("ENCODING")
        .arg("{r}a")
        .query(&mut c)
        .expect("OBJECT");
    assert_eq!(enc, "int");
    let () = redis::cmd("RENAME")
        .arg("{r}a")
        .arg("{r}b")
        .query(&mut c)
        .expect("RENAME");
    let other = (0..100)
        .map(|i| format!("o{i}"))
        .find(|k| codis.master_of(k.as_bytes()) != codis.master_of(b"{r}b"))
        .expect("a key in another group");
    let err = redis::cmd("RENAME")
        .arg("{r}b")
        .arg(&other)
        .query::<()>(&mut c)
        .expect_err("across groups");
    assert_eq!(err.code(), Some("CROSSSLOT"), "{err}");
    let time: Vec<String> = redis::cmd("TIME").query(&mut c).expect("TIME");
    assert_eq!(time.len(), 2);
}

#[test]
fn scan_keys_and_dbsize_cover_every_group_master() {
    let (codis, proxy) = routed();
    let mut c = proxy.client();
    for i in 0..300 {
        let () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .expect("SET");
    }
    let truth: u64 = codis
        .masters
        .iter()
        .map(|&m| {
            redis::cmd("DBSIZE")
                .query::<u64>(&mut client_at(m))
                .expect("DBSIZE")
        })
        .sum();
    let size: u64 = redis::cmd("DBSIZE").query(&mut c).expect("DBSIZE");
    assert_eq!(size, truth);
    let keys: Vec<String> = redis::cmd("KEYS").arg("k*").query(&mut c).expect("KEYS");
    assert_eq!(keys.len(), 300);
    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0u64;
    for _ in 0..1000 {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("k*")
            .arg("COUNT")
            .arg(50)
            .query(&mut c)
            .expect("SCAN");
        seen.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen.len(), 300);
}

#[test]
fn a_client_of_codis_sees_no_error_while_respite_starts_and_probes() {
    let codis = Codis::start(3, 1);
    let stop = Arc::new(AtomicBool::new(false));
    let addr = codis.proxies[0];
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut raw = RawClient::connect(addr);
            let mut bad = Vec::new();
            for round in 0..5_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let mut batch = Vec::new();
                for i in 0..10 {
                    let key = format!("w{round}:{i}");
                    batch.extend_from_slice(&encode_request(&[&b"SET"[..], key.as_bytes(), b"v"]));
                }
                raw.send(&batch);
                for _ in 0..10 {
                    let reply = raw.reply();
                    if reply != b"+OK\r\n" {
                        bad.push(String::from_utf8_lossy(&reply).into_owned());
                    }
                }
            }
            bad
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let proxy = TestProxy::start(codis.config());
    let mut raw = proxy.raw();
    // respite starts, learns the tier and the slot table, and serves.
    for _ in 0..20 {
        assert_eq!(raw.cmd(&[b"SET", b"x", b"1"]), b"+OK\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let bad = watcher.join().expect("watcher");
    assert!(
        bad.is_empty(),
        "{} errors, first {:?}",
        bad.len(),
        bad.first()
    );
}

#[test]
fn every_command_codis_refuses_leaves_other_clients_alone() {
    let (_codis, proxy) = routed();
    let refused: Vec<&str> = respite::command_table::COMMANDS
        .iter()
        .filter(|s| s.codis != respite::command::Codis::Yes)
        .map(|s| s.name)
        .collect();
    assert!(refused.len() > 50, "{}", refused.len());
    others_are_unharmed(&proxy, || {
        for name in &refused {
            let mut offender = proxy.raw();
            offender.send(&encode_request(&[name.as_bytes(), b"k", b"0.01"]));
            assert!(offender.try_reply().is_ok(), "{name} was answered");
        }
    });
}

#[test]
fn the_first_requests_after_start_already_run_on_the_group_masters() {
    let codis = Codis::start(3, 1);
    let proxy = TestProxy::start(codis.config());
    // No waiting for the slot table: respite accepts clients once it knows it.
    let mut raw = proxy.raw();
    assert_eq!(raw.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(raw.cmd(&[b"INCR", b"{first}n"]), b"+QUEUED\r\n");
    assert_eq!(raw.cmd(&[b"EXEC"]), b"*1\r\n:1\r\n");
    assert_eq!(
        raw.cmd(&[b"DBSIZE"]),
        b":2\r\n",
        "{{first}}n and up.sh's codis:up"
    );
}
