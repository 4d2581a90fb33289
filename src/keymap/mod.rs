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
//! - `cluster`: Redis Cluster's hash slot of a key, and the slot table a node reports.
//! - `KeyMap`: any of these rules, over respite's shard list: the shard a key lives on.
//!
//! Pure logic: nothing here does I/O except `Pool::load` reading the config file. Proven
//! against the real `nutcracker` binary by `tests/keymap.rs`.

pub mod cluster;
pub mod codis;
pub mod hashkit;
pub mod twemproxy;

use cluster::SlotRange;
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
    /// A slot table (Codis's, or Redis Cluster's): each slot's server (an index into
    /// `servers`; `UNSERVED`: none), and the servers (`host:port`).
    Slots {
        kind: SlotKind,
        slots: Vec<u16>,
        servers: Vec<String>,
    },
}

/// Whose slots a slot table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Codis,
    Cluster,
}

/// A slot no server serves.
const UNSERVED: u16 = u16::MAX;

/// Where a key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Home {
    /// On this shard.
    Shard(usize),
    /// Anywhere: the rule spreads requests, not keys (twemproxy's `random`).
    Any,
    /// On a server of the rule that is not among the shards (its name, for the error).
    Missing(String),
    /// In a slot that no server serves.
    Unserved(usize),
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
        let per_slot = masters.iter().map(|m| Some(m.as_str()));
        KeyMap::slots(SlotKind::Codis, per_slot, shards)
    }

    /// The map of a Redis Cluster slot table over `shards`.
    pub fn cluster(ranges: &[SlotRange], shards: &[(usize, SocketAddr)]) -> KeyMap {
        let mut per_slot = vec![None; cluster::SLOTS];
        for r in ranges {
            let span = usize::from(r.first)..=usize::from(r.last);
            per_slot[span].fill(Some(r.master.as_str()));
        }
        KeyMap::slots(SlotKind::Cluster, per_slot.into_iter(), shards)
    }

    /// The map of a slot table given as each slot's server.
    fn slots<'a>(
        kind: SlotKind,
        per_slot: impl Iterator<Item = Option<&'a str>>,
        shards: &[(usize, SocketAddr)],
    ) -> KeyMap {
        let mut servers: Vec<String> = Vec::new();
        let slots = per_slot
            .map(|server| {
                let Some(m) = server else {
                    return UNSERVED;
                };
                let i = servers.iter().position(|s| s == m).unwrap_or_else(|| {
                    servers.push(m.to_string());
                    servers.len() - 1
                });
                u16::try_from(i).unwrap_or(UNSERVED)
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
            rule: Rule::Slots {
                kind,
                slots,
                servers,
            },
            shards,
        }
    }

    /// Where `key` lives.
    pub fn home(&self, key: &[u8]) -> Home {
        match &self.rule {
            Rule::Twemproxy(pool) => match pool.server_for(key) {
                Some(server) => self.server_home(server),
                None => Home::Any,
            },
            Rule::Slots { kind, .. } => self.slot_home(match kind {
                SlotKind::Codis => codis::slot(key),
                SlotKind::Cluster => cluster::slot(key),
            }),
        }
    }

    /// Where the keys of slot `slot` live (a slot table's rule).
    pub fn slot_home(&self, slot: usize) -> Home {
        let Rule::Slots { slots, .. } = &self.rule else {
            return Home::Any;
        };
        match slots.get(slot) {
            Some(&server) if server != UNSERVED => self.server_home(usize::from(server)),
            _ => Home::Unserved(slot),
        }
    }

    /// The shard server `server` of the rule is.
    fn server_home(&self, server: usize) -> Home {
        match self.shards.get(server).copied().flatten() {
            Some(shard) => Home::Shard(shard),
            None => {
                let what = match self.rule {
                    Rule::Twemproxy(_) => "twemproxy server",
                    Rule::Slots {
                        kind: SlotKind::Codis,
                        ..
                    } => "Codis group master",
                    Rule::Slots { .. } => "cluster node",
                };
                Home::Missing(format!("{what} {}", self.server_name(server)))
            }
        }
    }

    fn server_name(&self, server: usize) -> &str {
        match &self.rule {
            Rule::Twemproxy(pool) => &pool.servers[server].pname,
            Rule::Slots { servers, .. } => &servers[server],
        }
    }

    /// Slot `slot` of a slot table is served by `server` (`host:port`), shard `shard`, from now
    /// on (a `-MOVED` said so).
    pub fn move_slot(&mut self, slot: usize, server: &str, shard: usize) {
        let Rule::Slots { slots, servers, .. } = &mut self.rule else {
            return;
        };
        let i = servers.iter().position(|s| s == server).unwrap_or_else(|| {
            servers.push(server.to_string());
            self.shards.push(None);
            servers.len() - 1
        });
        if let Some(entry) = self.shards.get_mut(i) {
            *entry = Some(shard);
        }
        if let (Some(entry), Ok(i)) = (slots.get_mut(slot), u16::try_from(i)) {
            *entry = i;
        }
    }

    /// The hash slot of `key` when the map is Redis Cluster's.
    pub fn cluster_slot(&self, key: &[u8]) -> Option<usize> {
        match self.rule {
            Rule::Slots {
                kind: SlotKind::Cluster,
                ..
            } => Some(cluster::slot(key)),
            _ => None,
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
            Rule::Slots {
                kind: SlotKind::Codis,
                servers,
                ..
            } => format!("Codis slot table ({} group masters)", servers.len()),
            Rule::Slots {
                kind: SlotKind::Cluster,
                servers,
                ..
            } => format!("Redis Cluster slot table ({} masters)", servers.len()),
        }
    }

    /// The masters of the slot table this map follows (empty for twemproxy), in order of
    /// first slot.
    pub fn slot_masters(&self) -> &[String] {
        match &self.rule {
            Rule::Slots { servers, .. } => servers,
            Rule::Twemproxy(_) => &[],
        }
    }
}
