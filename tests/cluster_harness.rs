//! The Redis Cluster harness itself (`support::Cluster`), against real nodes: its slot function
//! agrees with `CLUSTER KEYSLOT`, keys written on `master_of_slot` are accepted, a hand-made
//! migration under a writer loses nothing, and a graceful failover and a kill -9 of a master
//! leave every acknowledged key readable on its new master.

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// Writes `key` on the master of its slot, from a slot table read once, following MOVED (ask
/// the cluster again) and ASK (ASKING on the named node), the way a cluster client does.
struct Writer<'a> {
    cluster: &'a Cluster,
    owners: Vec<SocketAddr>,
    clients: HashMap<SocketAddr, redis::Connection>,
    moved: usize,
    asked: usize,
}

impl<'a> Writer<'a> {
    fn new(cluster: &'a Cluster) -> Writer<'a> {
        Writer {
            cluster,
            owners: cluster.slot_table(),
            clients: HashMap::new(),
            moved: 0,
            asked: 0,
        }
    }

    fn conn(&mut self, addr: SocketAddr) -> &mut redis::Connection {
        let cluster = self.cluster;
        self.clients
            .entry(addr)
            .or_insert_with(|| cluster.client(addr))
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        let slot = Cluster::slot_of(key);
        for _ in 0..100 {
            let master = self.owners[usize::from(slot)];
            let err = match redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query::<()>(self.conn(master))
            {
                Ok(()) => return,
                Err(e) => e,
            };
            match err.code() {
                Some("MOVED") => {
                    self.moved += 1;
                    self.owners[usize::from(slot)] = self.cluster.master_of_slot(slot);
                }
                Some("ASK") => {
                    self.asked += 1;
                    let (node, _) = err.redirect_node().expect("ASK names a node");
                    let node: SocketAddr = node.parse().expect("ASK names host:port");
                    let asked = redis::pipe()
                        .cmd("ASKING")
                        .ignore()
                        .cmd("SET")
                        .arg(key)
                        .arg(value)
                        .ignore()
                        .query::<()>(self.conn(node));
                    match asked {
                        Ok(()) => return,
                        Err(e) if matches!(e.code(), Some("MOVED" | "ASK")) => {}
                        Err(e) => panic!("ASKING + SET on {node}: {e}"),
                    }
                }
                _ => panic!("SET on {master} (slot {slot}): {err}"),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "SET {} still redirected after 100 tries",
            String::from_utf8_lossy(key)
        );
    }
}

/// Every key of `expected` holds its value on the master of its slot, and the masters hold
/// nothing else.
fn check_all(cluster: &Cluster, expected: &HashMap<Vec<u8>, Vec<u8>>) {
    let table = cluster.slot_table();
    let mut by_master: HashMap<SocketAddr, Vec<&Vec<u8>>> = HashMap::new();
    for key in expected.keys() {
        by_master
            .entry(table[usize::from(Cluster::slot_of(key))])
            .or_default()
            .push(key);
    }
    for (master, keys) in &by_master {
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("GET").arg(*key);
        }
        let values: Vec<Option<Vec<u8>>> = pipe
            .query(&mut cluster.client(*master))
            .unwrap_or_else(|e| panic!("GETs on {master}: {e}"));
        for (key, value) in keys.iter().zip(values) {
            assert_eq!(
                value.as_ref(),
                expected.get(*key),
                "{} on {master}",
                String::from_utf8_lossy(key)
            );
        }
    }
    let stored: usize = cluster
        .masters()
        .iter()
        .map(|&m| cluster.keys_on(m).len())
        .sum();
    assert_eq!(stored, expected.len(), "keys stored on the masters");
}

/// ~200 keys for the slot function: plain, tagged (empty, nested, unclosed tags), binary.
fn sample_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = [
        "{user1}:a",
        "{user1}:b",
        "a{}b",
        "{}{x}",
        "{x}{y}",
        "{{a}}",
        "a{b",
        "a}b{c}",
        "}{",
        "{",
        "}",
        "{}",
        "",
        "foo{bar}{zap}",
        "foo{{bar}}zap",
        "123456789",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .collect();
    keys.extend((0..120).map(|i| format!("key:{i}").into_bytes()));
    keys.extend((0..30).map(|i| format!("pre{{tag{i}}}post").into_bytes()));
    let mut seed: u32 = 7;
    keys.extend((0..40).map(|i| {
        (0..(i % 12 + 1))
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                // Mostly binary, with braces often enough to make tags.
                match (seed >> 16) % 5 {
                    0 => b'{',
                    1 => b'}',
                    _ => (seed >> 8) as u8,
                }
            })
            .collect()
    }));
    keys
}

/// One hash tag for each of `slots`, found by trying `t0`, `t1`, ...
fn tags_for(slots: &[u16]) -> HashMap<u16, String> {
    let wanted: HashSet<u16> = slots.iter().copied().collect();
    let mut tags = HashMap::new();
    for n in 0..10_000_000u32 {
        let tag = format!("t{n}");
        let slot = Cluster::slot_of(tag.as_bytes());
        if wanted.contains(&slot) {
            tags.entry(slot).or_insert(tag);
            if tags.len() == wanted.len() {
                break;
            }
        }
    }
    assert_eq!(tags.len(), wanted.len(), "a tag for every slot");
    tags
}

#[test]
fn slot_of_follows_the_cluster_spec() {
    assert_eq!(Cluster::slot_of(b"123456789"), 0x31C3);
    assert_eq!(Cluster::slot_of(b"somekey"), 11058);
    assert_eq!(Cluster::slot_of(b"foo{hash_tag}"), 2515);
    assert_eq!(
        Cluster::slot_of(b"{user1000}.following"),
        Cluster::slot_of(b"{user1000}.followers")
    );
    assert_eq!(Cluster::slot_of(b"foo{bar}{zap}"), Cluster::slot_of(b"bar"));
    assert_eq!(
        Cluster::slot_of(b"foo{{bar}}zap"),
        Cluster::slot_of(b"{bar")
    );
    assert_ne!(Cluster::slot_of(b"foo{}{bar}"), Cluster::slot_of(b"bar"));
}

#[test]
fn cluster_starts_migrates_fails_over_and_promotes() {
    let _one = one_at_a_time();
    let t0 = Instant::now();
    let cluster = Cluster::start(3, 1);
    assert_eq!(cluster.nodes.len(), 6);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "3 masters");
    for &m in &masters {
        assert_eq!(cluster.replicas_of(m).len(), 1, "one replica of {m}");
    }
    assert_eq!(
        cluster.slots_of(masters[0]).first(),
        Some(&0),
        "shard 0 starts with slot 0"
    );
    assert_eq!(cluster.seeds().split(',').count(), 3);
    eprintln!("started in {:?}", t0.elapsed());

    // The slot function against the server's.
    let mut c = cluster.client(masters[0]);
    for key in sample_keys() {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query(&mut c)
            .expect("CLUSTER KEYSLOT");
        assert_eq!(
            Cluster::slot_of(&key),
            slot,
            "slot of {:?}",
            String::from_utf8_lossy(&key)
        );
    }

    // 1,000 keys, each straight on the master of its slot: none is redirected.
    let mut expected: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let table = cluster.slot_table();
    let mut clients: HashMap<SocketAddr, redis::Connection> = HashMap::new();
    for i in 0..1000 {
        let (key, value) = (
            format!("key:{i}").into_bytes(),
            format!("v{i}").into_bytes(),
        );
        let slot = Cluster::slot_of(&key);
        let master = table[usize::from(slot)];
        if i % 100 == 0 {
            assert_eq!(cluster.master_of_slot(slot), master);
        }
        let conn = clients
            .entry(master)
            .or_insert_with(|| cluster.client(master));
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query(conn)
            .unwrap_or_else(|e| panic!("SET key:{i} on {master}: {e}"));
        expected.insert(key, value);
    }
    check_all(&cluster, &expected);

    // 50 slots from master 0 to master 1, 150 keys preloaded in each (2 MIGRATE batches), under
    // a writer that sends 3 writes in 4 to those slots: some land on a slot while it migrates.
    let moving: Vec<u16> = cluster.slots_of(masters[0]).into_iter().take(50).collect();
    let tags = tags_for(&moving);
    let mut preload = redis::pipe();
    for (slot, tag) in &tags {
        for j in 0..150 {
            let key = format!("{{{tag}}}:pre{j}").into_bytes();
            let value = format!("p{slot}.{j}").into_bytes();
            preload.cmd("SET").arg(&key).arg(&value).ignore();
            expected.insert(key, value);
        }
    }
    let () = preload
        .query(&mut cluster.client(masters[0]))
        .expect("preload the moving slots on master 0");
    let t1 = Instant::now();
    let done = AtomicBool::new(false);
    let (moved, written, redirects) = std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let mut writer = Writer::new(&cluster);
            let mut written = Vec::new();
            let tags: Vec<&String> = tags.values().collect();
            let mut after_done = 0;
            for i in 0..100_000usize {
                let key = if i % 4 != 0 {
                    format!("{{{}}}:w{i}", tags[i % tags.len()])
                } else {
                    format!("w:{i}")
                };
                let value = format!("w{i}");
                writer.set(key.as_bytes(), value.as_bytes());
                written.push((key.into_bytes(), value.into_bytes()));
                if done.load(Ordering::Relaxed) {
                    after_done += 1;
                    if after_done == 200 {
                        break;
                    }
                }
            }
            (written, (writer.moved, writer.asked))
        });
        let moved = cluster.migrate_slots(50, masters[0], masters[1]);
        done.store(true, Ordering::Relaxed);
        let (written, redirects) = handle.join().expect("the writer thread");
        (moved, written, redirects)
    });
    eprintln!(
        "migrated 50 slots in {:?} under {} writes ({} MOVED, {} ASK)",
        t1.elapsed(),
        written.len(),
        redirects.0,
        redirects.1
    );
    assert_eq!(moved, moving);
    assert!(
        redirects.0 > 0,
        "the writer was sent MOVED after the migration"
    );
    expected.extend(written);
    let now_on_1: HashSet<u16> = cluster.slots_of(masters[1]).into_iter().collect();
    assert!(moving.iter().all(|s| now_on_1.contains(s)), "moved slots");
    assert!(cluster
        .keys_on(masters[0])
        .iter()
        .all(|k| !moving.contains(&Cluster::slot_of(k.as_bytes()))));
    check_all(&cluster, &expected);

    // A graceful failover of master 1: its replica takes shard 1, with every key.
    let t2 = Instant::now();
    let new1 = cluster.failover(masters[1]);
    eprintln!("failover in {:?}", t2.elapsed());
    assert_ne!(new1, masters[1]);
    let now = cluster.masters();
    assert_eq!(now, vec![masters[0], new1, masters[2]], "shard order kept");
    assert_eq!(cluster.replicas_of(new1), vec![masters[1]]);
    check_all(&cluster, &expected);

    // kill -9 of master 0 once its replica has everything: the replica takes shard 0.
    let t3 = Instant::now();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut cluster.client(masters[0]))
        .expect("WAIT");
    assert_eq!(acked, 1, "master 0's replica has every write");
    cluster.kill_master(masters[0]);
    let new0 = cluster.wait_promoted(masters[0]);
    eprintln!("promotion after kill -9 in {:?}", t3.elapsed());
    let now = cluster.masters();
    assert_eq!(now, vec![new0, new1, masters[2]], "shard order kept");
    check_all(&cluster, &expected);
    eprintln!("whole run {:?}", t0.elapsed());
}
