//! A nutcracker (twemproxy) 0.5.0 pool as read from its YAML config, and the server it picks
//! for a key, computed as nutcracker computes it.
//!
//! ```text
//!  nutcracker.yml ─ tokens (conf_validate_tokens) ─ events (conf_parse_core) ─▶ [Pool]
//!  Pool: servers in file order ─ sorted by name (conf_validate_server) ─▶ ring
//!    ketama: 160·n·weight/total points per server, md5("<name>-<i>") → 4 points each, sorted
//!    modula: weight slots per server, in name order
//!  key ─ hash_tag ─▶ part ─ hash (0 if empty) ─▶ ring ─▶ index into `Pool::servers`
//! ```
//!
//! What nutcracker's C source fixes, and this file follows:
//! - `nc_conf.c` `conf_add_server` parses `host:port:weight [name]` (or
//!   `/path/unix_socket:weight [name]`) from the end. With no name, the string ketama hashes is
//!   `host:port` as written, or just `host` when the port is 11211 (libmemcached's habit), or
//!   `/path:` (with the colon) for a unix socket.
//! - `conf_validate_server` sorts a pool's servers by name (shorter first, then bytewise) and
//!   nutcracker keeps that order. It changes nothing for ketama, whose points depend on names
//!   and weights only, but `modula` lays its slots out in that order, not in file order.
//!   [`Pool::server_for`] answers with an index into [`Pool::servers`], which is file order.
//! - `nc_server.c` `server_pool_idx`: a pool of one server always answers 0; with `hash_tag`
//!   `"ab"`, the key's part between its first `a` and the next `b` after it is hashed when that
//!   part is not empty, else the whole key (no close char, or `{}`: the whole key);
//!   `server_pool_hash` hashes an empty key to 0 without calling the hash function.
//! - `nc_ketama.c` `ketama_update`: a server gets `floorf(pct·160/4·n + 1e-10)·4` points in
//!   single-precision float (`pct = weight / total_weight`), from `md5("<name>-<i>")` truncated
//!   to 272 bytes, four points per digest; `ketama_dispatch` takes the first point ≥ the hash,
//!   wrapping to the first. Points with equal values (one chance in ~10⁵ for a pool of three)
//!   keep their insertion order, as glibc's merge-sort `qsort` keeps them.
//! - `nc_modula.c`: the hash modulo the total weight picks a slot; slots are laid out server by
//!   server, `weight` slots each.
//! - `nc_random.c`: `random() % n` per request. No key has a home: `server_for` returns `None`
//!   (except in a pool of one server, where nutcracker answers 0 before dispatching).
//! - `auto_eject_hosts` changes placement only while a host is ejected (the ring is rebuilt
//!   over live servers); that is not modelled: this is the placement with every host live.
//!
//! A multi-key command (`MGET`, `DEL k1 k2`, `MSET`) is split by nutcracker into one fragment
//! per key, each placed as here. Keys of 16 KB and more (`mbuf_data_size`) are refused by
//! nutcracker's parser, so they have no placement there; here they are hashed like any other.

mod conf;

use super::hashkit::{ketama_hash, Hash};
pub use conf::{parse_pools, parse_server};
use std::path::Path;

/// The port libmemcached leaves out of a server's ketama name (`CONF_DEFAULT_KETAMA_PORT`).
const KETAMA_DEFAULT_PORT: u16 = 11211;
/// Points per server in a pool of equal weights (`KETAMA_POINTS_PER_SERVER`).
const KETAMA_POINTS_PER_SERVER: f32 = 160.0;
/// Points taken from one MD5 digest.
const KETAMA_POINTS_PER_HASH: u32 = 4;
/// `KETAMA_MAX_HOSTLEN - 1`: the longest `"<name>-<i>"` that `snprintf` writes in full.
const KETAMA_MAX_HOST_BYTES: usize = 272;

/// How a pool spreads keys (`DIST_CODEC` in `nc_hashkit.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Consistent hashing on a continuum of MD5 points (the default).
    Ketama,
    /// The hash modulo the total weight.
    Modula,
    /// A random server per request.
    Random,
}

impl Distribution {
    /// Every distribution, in `DIST_CODEC` order.
    pub const ALL: [Distribution; 3] = [
        Distribution::Ketama,
        Distribution::Modula,
        Distribution::Random,
    ];

    /// The name a nutcracker config uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }

    /// The distribution a config names, matched exactly as `conf_set_distribution` does.
    pub fn from_name(name: &str) -> Option<Distribution> {
        Distribution::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Where a server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `host:port`; the host is kept as written (nutcracker resolves it lazily).
    Tcp {
        /// Host name or address as written.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A unix socket path (a server line starting with `/`).
    Unix {
        /// The socket's path.
        path: String,
    },
}

/// One `servers:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The entry without its name, as written: `host:port:weight` (nutcracker's `pname`).
    pub pname: String,
    /// Where it is.
    pub address: Address,
    /// Its weight (at least 1).
    pub weight: u32,
    /// The name ketama hashes: the one written after the space, else derived from the address.
    pub name: String,
    /// Whether `name` was written in the config.
    pub named: bool,
}

/// One point of the ketama continuum.
#[derive(Debug, Clone, Copy)]
struct Point {
    value: u32,
    server: usize,
}

/// The structure a key is placed on, built once per pool.
#[derive(Debug, Clone)]
enum Ring {
    /// Points sorted by value.
    Ketama(Vec<Point>),
    /// `(end, server)`: slots `[previous end, end)` belong to `server`, in name order.
    Modula {
        ends: Vec<(u64, usize)>,
        total: u64,
    },
    Random,
}

/// A nutcracker pool: what decides where its keys go.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The pool's name (its top-level key in the YAML file).
    pub name: String,
    /// Its `listen:` address as written.
    pub listen: String,
    /// Its `hash:` (default `fnv1a_64`).
    pub hash: Hash,
    /// Its `distribution:` (default `ketama`).
    pub distribution: Distribution,
    /// Its `hash_tag:` open and close bytes, if any.
    pub hash_tag: Option<[u8; 2]>,
    /// Its `auto_eject_hosts:` (default false). Placement is modelled with every host live.
    pub auto_eject_hosts: bool,
    /// Its `redis:` (default false: a memcached pool).
    pub redis: bool,
    /// Its servers, in file order.
    pub servers: Vec<Server>,
    ring: Ring,
}

impl Pool {
    /// Loads `FILE[:POOL]`: the pool named `POOL` in `FILE`, or the file's first pool. A spec
    /// that names an existing file as a whole is a file, so paths with a colon still work.
    pub fn load(spec: &str) -> Result<Pool, String> {
        let (path, pool) = match spec.rsplit_once(':') {
            Some((path, pool)) if !Path::new(spec).exists() => (path, Some(pool)),
            _ => (spec, None),
        };
        Pool::from_file(Path::new(path), pool)
    }

    /// Reads `path` and picks the pool named `pool`, or the first.
    pub fn from_file(path: &Path, pool: Option<&str>) -> Result<Pool, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read nutcracker config {}: {e}", path.display()))?;
        Pool::from_yaml(&text, pool).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a config's text and picks the pool named `pool`, or the first in the file.
    pub fn from_yaml(text: &str, pool: Option<&str>) -> Result<Pool, String> {
        let mut pools = parse_pools(text)?;
        match pool {
            None => Ok(pools.swap_remove(0)),
            Some(name) => match pools.iter().position(|p| p.name == name) {
                Some(i) => Ok(pools.swap_remove(i)),
                None => {
                    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
                    Err(format!(
                        "no pool named '{name}' (pools: {})",
                        names.join(", ")
                    ))
                }
            },
        }
    }

    /// The index in [`Pool::servers`] of the server nutcracker sends `key` to, or `None` for
    /// a `random` pool of more than one server, where every request goes to any server.
    pub fn server_for(&self, key: &[u8]) -> Option<usize> {
        if self.servers.len() == 1 {
            return Some(0);
        }
        let hash = self.key_hash(key);
        match &self.ring {
            Ring::Ketama(points) => {
                let i = points.partition_point(|p| p.value < hash);
                // `points` is never empty: the heaviest server gets at least 40 points.
                points.get(i).or(points.first()).map(|p| p.server)
            }
            Ring::Modula { ends, total } => {
                let slot = u64::from(hash) % total;
                let i = ends.partition_point(|&(end, _)| end <= slot);
                ends.get(i).map(|&(_, server)| server)
            }
            Ring::Random => None,
        }
    }

    /// The part of `key` that is hashed: with a hash tag `"ab"`, the bytes between the first
    /// `a` and the next `b` after it, when there are any; else the whole key.
    pub fn hashed_part<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        let Some([open, close]) = self.hash_tag else {
            return key;
        };
        let Some(start) = key.iter().position(|&b| b == open) else {
            return key;
        };
        let inner = &key[start + 1..];
        match inner.iter().position(|&b| b == close) {
            Some(len) if len > 0 => &inner[..len],
            _ => key,
        }
    }

    /// The hash nutcracker dispatches `key` on (`server_pool_hash` after the hash tag): 0 for
    /// an empty part or a pool of one server.
    pub fn key_hash(&self, key: &[u8]) -> u32 {
        let part = self.hashed_part(key);
        if self.servers.len() == 1 || part.is_empty() {
            0
        } else {
            self.hash.hash(part)
        }
    }

    /// The number of ketama points of each server (file order); empty for other
    /// distributions.
    pub fn ketama_points(&self) -> Vec<usize> {
        let mut n = vec![0; self.servers.len()];
        if let Ring::Ketama(points) = &self.ring {
            for p in points {
                n[p.server] += 1;
            }
        }
        n
    }
}

/// Server indexes in nutcracker's order: by name, shorter first, then bytewise
/// (`conf_server_name_cmp`, `string_compare`).
fn name_order(servers: &[Server]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..servers.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (servers[a].name.as_bytes(), servers[b].name.as_bytes());
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    });
    order
}

/// The points `ketama_update` gives a server of `weight` among `n` live servers weighing
/// `total`, in the same single-precision arithmetic.
fn ketama_point_count(weight: u32, total: u32, n: usize) -> u32 {
    let pct = weight as f32 / total as f32;
    // `pct * 160 / 4 * (float)n` in float, `+ 0.0000000001` in double, back to float.
    let per_hash = pct * KETAMA_POINTS_PER_SERVER / 4.0 * n as f32;
    let floored = ((f64::from(per_hash) + 0.000_000_000_1) as f32).floor();
    (floored * KETAMA_POINTS_PER_HASH as f32) as u32
}

/// The ketama continuum, built in nutcracker's server order and sorted by value.
fn ketama_points(servers: &[Server], order: &[usize], total: u32) -> Vec<Point> {
    let mut points = Vec::new();
    for &i in order {
        let s = &servers[i];
        let count = ketama_point_count(s.weight, total, servers.len());
        for p in 0..count / KETAMA_POINTS_PER_HASH {
            let mut host = format!("{}-{p}", s.name).into_bytes();
            host.truncate(KETAMA_MAX_HOST_BYTES);
            for x in 0..KETAMA_POINTS_PER_HASH {
                points.push(Point {
                    value: ketama_hash(&host, x as usize),
                    server: i,
                });
            }
        }
    }
    // Stable, as glibc's merge-sort qsort: equal values keep server order.
    points.sort_by_key(|p| p.value);
    points
}

/// Modula's slots, `weight` per server, in nutcracker's server order.
fn modula_ring(servers: &[Server], order: &[usize]) -> Ring {
    let mut end = 0u64;
    let ends = order
        .iter()
        .map(|&i| {
            end += u64::from(servers[i].weight);
            (end, i)
        })
        .collect();
    Ring::Modula { ends, total: end }
}

#[cfg(test)]
mod tests;
