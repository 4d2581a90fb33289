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
//! - `codis`: Codis 3.2's slot of a key, and the slot table a codis-proxy reports.
//! - `KeyMap`: either rule, over respite's shard list: the shard a key lives on.
//!
//! Pure logic: nothing here does I/O except `Pool::load` reading the config file. Proven
//! against the real `nutcracker` binary by `tests/keymap.rs`.

pub mod codis;
pub mod hashkit;
pub mod twemproxy;

use std::net::{SocketAddr, ToSocketAddrs};
use twemproxy::{Address, Pool};

/// Where each key lives among respite's shards: the sharding layer's rule, and the shard (an
/// index into the shard list) each of its servers is.
#[derive(Debug, Clone)]
pub struct KeyMap {
    rule: Rule,
    /// The shard of each server of the rule (`None`: not among the shards).
    shards: Vec<Option<usize>>,
}

#[derive(Debug, Clone)]
enum Rule {
    /// A twemproxy pool: its servers are the pool's.
    Twemproxy(Pool),
    /// A Codis slot table: each slot's server (an index into `servers`), and the servers.
    Codis {
        slots: Vec<usize>,
        servers: Vec<String>,
    },
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

/// The shard at `host:port` among `shards` (index in the shard list, address); host names are
/// resolved here.
fn shard_at(host: &str, port: u16, shards: &[(usize, SocketAddr)]) -> Option<usize> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .unwrap_or_default();
    let at = shards.iter().find(|(_, a)| addrs.contains(a));
    at.map(|&(i, _)| i)
}

impl KeyMap {
    /// The map of a twemproxy pool over `shards` (index in the shard list, address): each pool
    /// server is the shard at its address.
    pub fn twemproxy(pool: Pool, shards: &[(usize, SocketAddr)]) -> KeyMap {
        let shards = pool
            .servers
            .iter()
            .map(|s| match &s.address {
                Address::Tcp { host, port } => shard_at(host, *port, shards),
                Address::Unix { .. } => None,
            })
            .collect();
        KeyMap {
            rule: Rule::Twemproxy(pool),
            shards,
        }
    }

    /// The map of a Codis slot table (each slot's group master, `host:port`) over `shards`.
    pub fn codis(masters: &[String], shards: &[(usize, SocketAddr)]) -> KeyMap {
        let mut servers: Vec<String> = Vec::new();
        let slots = masters
            .iter()
            .map(|m| match servers.iter().position(|s| s == m) {
                Some(i) => i,
                None => {
                    servers.push(m.clone());
                    servers.len() - 1
                }
            })
            .collect();
        let shards = servers
            .iter()
            .map(|s| {
                let (host, port) = s.rsplit_once(':')?;
                shard_at(host, port.parse().ok()?, shards)
            })
            .collect();
        KeyMap {
            rule: Rule::Codis { slots, servers },
            shards,
        }
    }

    /// Where `key` lives.
    pub fn home(&self, key: &[u8]) -> Home {
        let server = match &self.rule {
            Rule::Twemproxy(pool) => match pool.server_for(key) {
                Some(server) => server,
                None => return Home::Any,
            },
            Rule::Codis { slots, .. } => slots[codis::slot(key)],
        };
        match self.shards.get(server).copied().flatten() {
            Some(shard) => Home::Shard(shard),
            None => Home::Missing(self.server_name(server).to_string()),
        }
    }

    fn server_name(&self, server: usize) -> &str {
        match &self.rule {
            Rule::Twemproxy(pool) => &pool.servers[server].pname,
            Rule::Codis { servers, .. } => &servers[server],
        }
    }

    /// The servers of the rule that are not among the shards, as written.
    pub fn missing(&self) -> Vec<&str> {
        let unmatched = self.shards.iter().enumerate().filter(|(_, s)| s.is_none());
        unmatched.map(|(i, _)| self.server_name(i)).collect()
    }

    /// What the map follows, for logs and INFO.
    pub fn describe(&self) -> String {
        match &self.rule {
            Rule::Twemproxy(pool) => format!(
                "twemproxy pool {} ({} {}, {} servers)",
                pool.name,
                pool.distribution.name(),
                pool.hash.name(),
                pool.servers.len()
            ),
            Rule::Codis { servers, .. } => {
                format!("Codis slot table ({} group masters)", servers.len())
            }
        }
    }

    /// The Codis group masters this map follows (empty for twemproxy), in order of first slot.
    pub fn codis_masters(&self) -> &[String] {
        match &self.rule {
            Rule::Codis { servers, .. } => servers,
            Rule::Twemproxy(_) => &[],
        }
    }
}
