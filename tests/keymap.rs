//! The key map against the real thing. For every hash nutcracker 0.5 offers, with `ketama` and
//! `modula`, with and without server names, with unequal weights (and once over unix sockets),
//! keys are SET through a real `nutcracker` over three real `redis-server`s; each server then
//! lists the keys it holds (`SCAN`), and `Pool::server_for`, read from the very config
//! nutcracker runs, must name that server for every key.
//!
//! ```text
//!  2100 keys ──SET, pipelined──▶ nutcracker ──▶ redis 0 │ redis 1 │ redis 2
//!  Pool::load("nutcracker.yml:keymap").server_for(key) ══ the redis whose SCAN holds key
//! ```
//!
//! 12 hashes × 2 distributions × 2 namings × 2100 keys = 100,800 keys, plus unix sockets,
//! weights where single-precision float changes ketama's point counts, and `random`. The servers are listed so that nutcracker's name order differs from
//! file order, which `modula` depends on.

mod support;

use respite::keymap::hashkit::Hash;
use respite::keymap::twemproxy::{Distribution, Pool};
use std::collections::HashSet;
use support::{free_port, NutcrackerPool, RedisServer};

/// Keys each combination sets and checks.
const KEYS_PER_COMBINATION: usize = 2100;
/// `SET`s per pipelined write to nutcracker.
const SET_BATCH: usize = 500;
/// `SCAN` calls allowed per server before the test gives up.
const SCAN_CALLS_LIMIT: usize = 10_000;

/// xorshift64*: the same keys on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// The keys every combination sets: plain, `{tag}`ged (several keys per tag, nested braces,
/// empty `{}` and unclosed tags), binary with CR/LF/NUL and bytes ≥ 0x80, UTF-8, longer than
/// 1 KB, and the empty key.
fn keys() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(KEYS_PER_COMBINATION);
    let mut push = |k: String| keys.push(k.into_bytes());
    for i in 0..600 {
        push(format!("key:{i}"));
    }
    for i in 0..300 {
        push(format!("{{user:{}}}:field:{i}", i % 37));
    }
    for i in 0..100 {
        push(format!("order:{{{}}}:line:{i}", i % 11));
    }
    // The first open char, then the next close char: the tag is "b{c<n>".
    for i in 0..100 {
        push(format!("a{{b{{c{}}}d}}:{i}", i % 7));
    }
    // An empty first tag or no close char: the whole key is hashed.
    for i in 0..50 {
        push(format!("{{}}:{i}"));
    }
    for i in 0..50 {
        push(format!("x{{}}y{{z{}}}:{i}", i % 5));
    }
    for i in 0..50 {
        push(format!("{{open:{i}"));
    }
    for i in 0..50 {
        push(format!("close}}:{i}"));
    }
    let words = ["ключ", "键", "🔑", "clé", "Schlüssel", "مفتاح", "κλειδί"];
    for i in 0..300 {
        let w = words[i % words.len()];
        if i % 2 == 0 {
            push(format!("{{{w}}}:{i}"));
        } else {
            push(format!("{w}:{i}"));
        }
    }
    for i in 0..400u32 {
        let len = 1 + rng.below(48);
        let mut k: Vec<u8> = (0..len)
            .map(|_| match rng.below(6) {
                0 => b'\r',
                1 => b'\n',
                2 => 0,
                3 => 0x80 | rng.below(128) as u8,
                _ => rng.below(256) as u8,
            })
            .collect();
        k.extend_from_slice(&i.to_be_bytes());
        keys.push(k);
    }
    for i in 0..99 {
        let len = 1025 + rng.below(3000) as usize;
        let mut k = format!("long:{i}:").into_bytes();
        if i % 3 == 0 {
            k.extend_from_slice(b"{longtag}");
        }
        while k.len() < len {
            k.push(b'a' + rng.below(26) as u8);
        }
        keys.push(k);
    }
    keys.push(Vec::new());
    assert_eq!(keys.len(), KEYS_PER_COMBINATION);
    let distinct: HashSet<&Vec<u8>> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "keys are distinct");
    keys
}

/// How a combination lists its three servers.
#[derive(Clone, Copy, Debug)]
enum Naming {
    /// `127.0.0.1:port:w name`, names whose nutcracker order (shorter first) reverses file
    /// order; hash tag `{}`.
    Named,
    /// `127.0.0.1:port:w`, by descending port (nutcracker sorts them ascending); no hash tag.
    Unnamed,
    /// `/path/rN.sock:w`: ketama hashes `"/path/rN.sock:"`; hash tag `{}`.
    Unix,
}

/// Three servers in the order a config lists them, and their lines.
struct Layout<'a> {
    servers: Vec<&'a RedisServer>,
    lines: Vec<String>,
    hash_tag: Option<&'static str>,
}

/// Weights that tell nutcracker's single-precision point count from exact arithmetic: the
/// second server gets `floorf(57.999996f) * 4 = 228` points where exact math gives 232.
const FLOAT_EDGE_WEIGHTS: [u32; 3] = [1, 29, 30];

fn layout<'a>(
    naming: Naming,
    weights: [u32; 3],
    servers: &'a [RedisServer],
    sockets: &[String],
) -> Layout<'a> {
    let mut ordered: Vec<&RedisServer> = servers.iter().collect();
    let (lines, hash_tag) = match naming {
        Naming::Named => {
            let names = ["shard-10", "shard-9", "alpha"];
            let lines = (0..3)
                .map(|i| format!("{}:{} {}", ordered[i].addr(), weights[i], names[i]))
                .collect();
            (lines, Some("{}"))
        }
        Naming::Unnamed => {
            ordered.sort_by_key(|s| std::cmp::Reverse(s.port));
            let lines = (0..3)
                .map(|i| format!("{}:{}", ordered[i].addr(), weights[i]))
                .collect();
            (lines, None)
        }
        Naming::Unix => {
            let lines = (0..3)
                .map(|i| format!("{}:{}", sockets[i], weights[i]))
                .collect();
            (lines, Some("{}"))
        }
    };
    Layout {
        servers: ordered,
        lines,
        hash_tag,
    }
}

/// The config: a decoy pool first (so `FILE:POOL` must pick), then the pool under test.
fn config(port: u16, decoy_port: u16, hash: Hash, dist: Distribution, l: &Layout) -> String {
    let mut c = format!(
        "decoy:\n  listen: 127.0.0.1:{decoy_port}\n  hash: md5\n  redis: true\n  servers:\n   \
         - 127.0.0.1:1:1\n"
    );
    c += &format!(
        "keymap:\n  listen: 127.0.0.1:{port}\n  hash: {}\n  distribution: {}\n  redis: true\n  \
         auto_eject_hosts: false\n  timeout: 3000\n",
        hash.name(),
        dist.name()
    );
    if let Some(tag) = l.hash_tag {
        c += &format!("  hash_tag: \"{tag}\"\n");
    }
    c += "  servers:\n";
    for line in &l.lines {
        c += &format!("   - {line}\n");
    }
    c
}

/// Every key `server` holds, by `SCAN`.
fn scan_all(server: &RedisServer) -> HashSet<Vec<u8>> {
    let mut conn = server.client();
    let mut out = HashSet::new();
    let mut cursor = 0u64;
    for _ in 0..SCAN_CALLS_LIMIT {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
            .expect("SCAN");
        out.extend(batch);
        cursor = next;
        if cursor == 0 {
            return out;
        }
    }
    panic!("SCAN on {} did not finish", server.port);
}

/// Sets `keys` through nutcracker configured with `hash`, `dist` and `naming`, then checks
/// every key against `Pool::server_for`. Returns the keys each server held.
fn check(hash: Hash, dist: Distribution, l: &Layout, keys: &[Vec<u8>]) -> Vec<usize> {
    for s in &l.servers {
        redis::cmd("FLUSHALL")
            .query::<()>(&mut s.client())
            .expect("FLUSHALL");
    }
    let decoy_port = free_port();
    let nc = NutcrackerPool::start(|port| config(port, decoy_port, hash, dist, l));
    let spec = format!("{}:keymap", nc.config_path().display());
    let pool = Pool::load(&spec).unwrap_or_else(|e| panic!("Pool::load({spec}): {e}"));
    assert_eq!(
        (pool.name.as_str(), pool.hash, pool.distribution),
        ("keymap", hash, dist)
    );
    nc.set_all(keys, b"v", SET_BATCH);

    let what = format!("{} {} {:?}", hash.name(), dist.name(), l.lines);
    let mut held = Vec::new();
    let mut found = HashSet::new();
    let mut wrong = Vec::new();
    for (i, s) in l.servers.iter().enumerate() {
        let on_server = scan_all(s);
        held.push(on_server.len());
        for key in on_server {
            if pool.server_for(&key) != Some(i) {
                wrong.push((pool.server_for(&key), i, key.clone()));
            }
            found.insert(key);
        }
    }
    if let Some((said, was, key)) = wrong.first() {
        panic!(
            "{what}: {} of {} keys disagree; first {:?} is on server {was}, server_for says {said:?}",
            wrong.len(),
            keys.len(),
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(found.len(), keys.len(), "{what}: every key on one server");
    assert!(
        keys.iter().all(|k| found.contains(k)),
        "{what}: the keys sent"
    );
    held
}

/// Every hash with `dist` over three fresh servers listed as `naming` says, weighing 3, 1, 2
/// (named) or 1, 2, 3 (unnamed).
fn every_hash(dist: Distribution, naming: Naming) {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let weights = match naming {
        Naming::Named => [3, 1, 2],
        _ => [1, 2, 3],
    };
    let l = layout(naming, weights, &servers, &[]);
    let keys = keys();
    for hash in Hash::ALL {
        let held = check(hash, dist, &l, &keys);
        eprintln!(
            "{} {} {naming:?}: {} keys agree (per server {held:?})",
            dist.name(),
            hash.name(),
            keys.len()
        );
    }
}

#[test]
fn ketama_with_names_and_weights_places_every_key_where_nutcracker_does() {
    every_hash(Distribution::Ketama, Naming::Named);
}

#[test]
fn ketama_without_names_places_every_key_where_nutcracker_does() {
    every_hash(Distribution::Ketama, Naming::Unnamed);
}

#[test]
fn modula_with_names_and_weights_places_every_key_where_nutcracker_does() {
    every_hash(Distribution::Modula, Naming::Named);
}

#[test]
fn modula_without_names_places_every_key_where_nutcracker_does() {
    every_hash(Distribution::Modula, Naming::Unnamed);
}

#[test]
fn unix_socket_servers_hash_by_their_path_and_a_colon() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sockets: Vec<String> = (0..3)
        .map(|i| dir.path().join(format!("r{i}.sock")).display().to_string())
        .collect();
    let servers: Vec<RedisServer> = sockets
        .iter()
        .map(|p| RedisServer::start_with(&["--unixsocket", p, "--unixsocketperm", "700"]))
        .collect();
    let l = layout(Naming::Unix, [1, 2, 3], &servers, &sockets);
    let keys = keys();
    for (hash, dist) in [
        (Hash::Fnv1a64, Distribution::Ketama),
        (Hash::Murmur, Distribution::Ketama),
        (Hash::Md5, Distribution::Modula),
    ] {
        let held = check(hash, dist, &l, &keys);
        eprintln!(
            "{} {} unix: {} keys agree (per server {held:?})",
            dist.name(),
            hash.name(),
            keys.len()
        );
    }
}

#[test]
fn ketama_counts_points_in_single_precision_as_nutcracker_does() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let keys = keys();
    for naming in [Naming::Named, Naming::Unnamed] {
        let l = layout(naming, FLOAT_EDGE_WEIGHTS, &servers, &[]);
        for hash in [Hash::Fnv1a64, Hash::Murmur] {
            let held = check(hash, Distribution::Ketama, &l, &keys);
            eprintln!(
                "ketama {} {naming:?} weights {FLOAT_EDGE_WEIGHTS:?}: {} keys agree (per server \
                 {held:?})",
                hash.name(),
                keys.len()
            );
        }
    }
}

#[test]
fn random_gives_a_key_no_home() {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let l = layout(Naming::Unnamed, [1, 2, 3], &servers, &[]);
    let decoy_port = free_port();
    let nc = NutcrackerPool::start(|port| {
        config(port, decoy_port, Hash::Fnv1a64, Distribution::Random, &l)
    });
    let pool = Pool::load(&format!("{}:keymap", nc.config_path().display())).expect("load");
    assert_eq!(pool.server_for(b"same-key"), None);
    // One key set 60 times lands on more than one server (all on one: 3 * 3^-60).
    let keys = vec![b"same-key".to_vec(); 60];
    nc.set_all(&keys, b"v", 10);
    let holding = l
        .servers
        .iter()
        .filter(|s| scan_all(s).contains(&b"same-key"[..]))
        .count();
    assert!(holding > 1, "random sent every SET to one server");
}
