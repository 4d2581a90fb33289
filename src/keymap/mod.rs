//! Key maps: for a key, the server that the sharding layer in front of Redis sends it to,
//! computed exactly as that layer computes it, so respite can tell where a key lives without
//! asking.
//!
//! ```text
//!  nutcracker.yml ──parse──▶ twemproxy::Pool { hash, distribution, hash_tag, servers, ring }
//!                                   │
//!  key ──hash_tag──▶ part ──hashkit::Hash──▶ u32 ──ketama / modula──▶ index into servers
//!                                                   random ──▶ None (any server)
//! ```
//!
//! - `hashkit`: nutcracker 0.5.0's twelve hash functions (`src/hashkit/*.c`), quirks included.
//! - `twemproxy`: a pool read from nutcracker's YAML and its placement (`nc_conf.c`,
//!   `nc_server.c`, `nc_ketama.c`, `nc_modula.c`, `nc_random.c`).
//!
//! Pure logic: nothing here does I/O except `Pool::load` reading the config file. Proven
//! against the real `nutcracker` binary by `tests/keymap.rs`.

pub mod hashkit;
pub mod twemproxy;

use std::net::{SocketAddr, ToSocketAddrs};
use twemproxy::{Address, Pool};

/// Where each key lives among respite's shards: the sharding layer's rule, and the shard (an
/// index into the shard list) each of its servers is.
#[derive(Debug, Clone)]
pub struct KeyMap {
    pool: Pool,
    /// The shard of each server of the pool (`None`: not among the shards).
    shards: Vec<Option<usize>>,
}

/// Where a key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// On this shard.
    Shard(usize),
    /// Anywhere: the rule spreads requests, not keys (twemproxy's `random`).
    Any,
    /// On a server of the rule that is not among the shards (its name, for the error).
    Missing(String),
}

impl KeyMap {
    /// The map of a twemproxy pool over `shards` (index in the shard list, address): each pool
    /// server is the shard at its address (host names are resolved once, here).
    pub fn twemproxy(pool: Pool, shards: &[(usize, SocketAddr)]) -> KeyMap {
        let shards = pool
            .servers
            .iter()
            .map(|s| match &s.address {
                Address::Tcp { host, port } => {
                    let addrs: Vec<SocketAddr> = (host.as_str(), *port)
                        .to_socket_addrs()
                        .map(Iterator::collect)
                        .unwrap_or_default();
                    let at = shards.iter().find(|(_, a)| addrs.contains(a));
                    at.map(|&(i, _)| i)
                }
                Address::Unix { .. } => None,
            })
            .collect();
        KeyMap { pool, shards }
    }

    /// Where `key` lives.
    pub fn home(&self, key: &[u8]) -> Home {
        let Some(server) = self.pool.server_for(key) else {
            return Home::Any;
        };
        match self.shards.get(server).copied().flatten() {
            Some(shard) => Home::Shard(shard),
            None => Home::Missing(self.pool.servers[server].pname.clone()),
        }
    }

    /// The servers of the rule that are not among the shards, as written.
    pub fn missing(&self) -> Vec<&str> {
        let servers = self.pool.servers.iter().zip(&self.shards);
        servers
            .filter(|(_, shard)| shard.is_none())
            .map(|(s, _)| s.pname.as_str())
            .collect()
    }

    /// What the map follows, for logs and INFO.
    pub fn describe(&self) -> String {
        format!(
            "twemproxy pool {} ({} {}, {} servers)",
            self.pool.name,
            self.pool.distribution.name(),
            self.pool.hash.name(),
            self.pool.servers.len()
        )
    }
}
