//! `Upstreams`: the backends, the shards and the pub/sub target — where each is, its health,
//! its pool of connections — and the choices made over them: picking a backend, the pub/sub
//! target, the set of shard masters a fan-out reaches, reconciling the lists on reload.
//!
//! ```text
//!  backends: [b0 b1 b2]   pool per backend: [RESP2 × n | RESP3 × n]   picker: healthy ones only
//!  shards:   [s0 s1 s2 s3 ...]  role from the probe: masters take part in fan-outs
//!  pubsub:   [p0] or []   (--pubsub; else the first healthy shard master, else a backend)
//! ```
//!
//! Entries are never removed while running: a reload retires what is gone and appends what is
//! new, so an index held by a connection or an origin stays valid. A retired entry is skipped.

use crate::backend::Origin;
use crate::conns::ConnRef;
pub use crate::health::Tier;
use crate::health::{Ask, Health};
use crate::histogram::Histogram;
use crate::keymap::cluster::SlotRange;
use crate::keymap::twemproxy::Pool;
use crate::keymap::KeyMap;
use crate::picker::Picker;
use bytes::Bytes;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

/// Which list an upstream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Equivalent endpoints for ordinary commands.
    Backend,
    /// Redis instances for cluster-wide commands.
    Shard,
    /// The configured pub/sub target (`--pubsub`).
    Pubsub,
}

/// Names one backend or shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upstream {
    /// Its list.
    pub group: Group,
    /// Its position in that list (configuration order).
    pub index: usize,
}

impl Upstream {
    /// Backend `index`.
    pub fn backend(index: usize) -> Self {
        Upstream {
            group: Group::Backend,
            index,
        }
    }

    /// Shard `index`.
    pub fn shard(index: usize) -> Self {
        Upstream {
            group: Group::Shard,
            index,
        }
    }

    /// The `--pubsub` target.
    pub fn pubsub() -> Self {
        Upstream {
            group: Group::Pubsub,
            index: 0,
        }
    }

    /// `backend`, `shard` or `pubsub`, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self.group {
            Group::Backend => "backend",
            Group::Shard => "shard",
            Group::Pubsub => "pubsub",
        }
    }
}

/// What a shard said it is in its last `ROLE` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not asked yet (or not a shard).
    Unknown,
    /// A master: takes part in fan-outs.
    Master,
    /// A replica of the master at this address.
    Replica(String),
}

/// One upstream endpoint: a backend, or a shard.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `addr` as text, for replies and logs.
    pub label: String,
    /// Rise/fall state.
    pub health: Health,
    /// The multiplexed data connections, by pool slot (see `slot_for`).
    pub conns: Vec<Option<ConnRef>>,
    /// The pool is two halves, RESP2 then RESP3 (backends; shards and the pub/sub target have
    /// one connection, which speaks RESP2).
    halves: bool,
    /// The probe connection.
    pub probe: Option<ConnRef>,
    /// When the next probe starts.
    pub next_probe: Instant,
    /// Requests forwarded.
    pub requests: u64,
    /// Requests that failed because of this backend (connection lost, timeout).
    pub errors: u64,
    /// Removed by a reload: never picked, closed once drained.
    pub retired: bool,
    /// Connections of their own open to it.
    pub sessions: usize,
    /// Speaks RESP3 (`HELLO 3` accepted), learned by the probe.
    pub resp3: Option<bool>,
    /// What it is, learned by the probe.
    pub tier: Option<Tier>,
    /// The probe is still learning its tier and whether it speaks RESP3 (at start, and again
    /// once it is back up): requests of RESP3 clients wait for the answer (`parked`) rather
    /// than being served by conversion from a backend that speaks RESP3 itself.
    pub discovering: bool,
    /// Requests of RESP3 clients waiting for discovery to end, in order.
    pub parked: Vec<(Origin, Bytes)>,
    /// Time from writing a request to reading its reply.
    pub latency: Histogram,
    /// Shards only: the role from the last probe.
    pub role: Role,
    /// Shards only: the master this one replicated before it was promoted, so that a fan-out
    /// knows the dead master's data is still served.
    pub promoted_from: Option<String>,
    /// With `--backend-tls`: `notAfter` of the certificate it presented to the last connection
    /// that completed a handshake (a probe or a data connection).
    pub cert_expiry: Option<i64>,
}

impl Backend {
    /// A backend with `pool` multiplexed connections for each protocol, probed first at `now`.
    pub fn pooled(addr: SocketAddr, pool: usize, now: Instant) -> Self {
        Backend {
            conns: vec![None; 2 * pool],
            halves: true,
            ..Self::single(addr, now)
        }
    }

    /// A shard or pub/sub target: one shared connection, probed first at `now`.
    pub fn single(addr: SocketAddr, now: Instant) -> Self {
        Backend {
            addr,
            label: addr.to_string(),
            health: Health::new(),
            conns: vec![None; 1],
            halves: false,
            probe: None,
            next_probe: now,
            requests: 0,
            errors: 0,
            retired: false,
            sessions: 0,
            resp3: None,
            tier: None,
            discovering: true,
            parked: Vec::new(),
            latency: Default::default(),
            role: Role::Unknown,
            promoted_from: None,
            cert_expiry: None,
        }
    }

    /// The pool slot for client `token`: spread by token over the RESP2 half, or over the RESP3
    /// half for a RESP3 client once the probe has seen the backend accept `HELLO 3` (its replies
    /// then pass through untouched).
    pub fn slot_for(&self, token: usize, resp3: bool) -> usize {
        if !self.halves {
            return token % self.conns.len();
        }
        let half = self.conns.len() / 2;
        let upper = resp3 && self.resp3 == Some(true);
        token % half + if upper { half } else { 0 }
    }

    /// True if the connection in `slot` says `HELLO 3` when it opens.
    pub fn is_resp3_slot(&self, slot: usize) -> bool {
        self.halves && slot >= self.conns.len() / 2
    }

    /// True if a request of a RESP3 client should wait for discovery rather than be sent now
    /// (to be converted from RESP2 if the backend turns out not to speak RESP3).
    pub fn parks_resp3(&self) -> bool {
        self.discovering && self.resp3.is_none() && self.health.up
    }

    /// The next probe round: discovery (tier, then RESP3) once a PING was answered, else a
    /// health check (with `ROLE` for shards, with the slot table for a codis-proxy when
    /// `codis_slots`).
    pub fn next_ask(&self, shard: bool, codis_slots: bool, cluster: bool) -> Ask {
        let answered = self.health.oks > 0;
        match (self.tier, self.resp3) {
            _ if cluster && shard && (!answered || self.resp3.is_some()) => Ask::PingRoleCluster,
            (None, _) if answered => Ask::Tier,
            (Some(Tier::Redis), None) if answered => Ask::Hello,
            _ if shard => Ask::PingRole,
            (Some(Tier::Codis), _) if codis_slots => Ask::PingSlots,
            _ => Ask::Ping,
        }
    }

    /// Takes what the probe learned; returns true once discovery is over (nothing more to ask,
    /// or the probe failed).
    pub fn learn(&mut self, tier: Option<Tier>, resp3: Option<bool>, failed: bool) -> bool {
        if let Some(tier) = tier {
            self.tier = Some(tier);
            if tier != Tier::Redis {
                // Only a Redis is asked HELLO 3: the proxies speak RESP2.
                self.resp3 = Some(false);
            }
        }
        if resp3.is_some() {
            self.resp3 = resp3;
        }
        let over = failed || self.resp3.is_some();
        if over {
            self.discovering = false;
        }
        over
    }

    /// Forgets the pool connection in `slot` if it is still `token` (it closed or failed).
    pub fn forget_conn(&mut self, slot: usize, token: usize) {
        if let Some(conn) = self.conns.get_mut(slot) {
            if conn.is_some_and(|r| r.token == token) {
                *conn = None;
            }
        }
    }

    /// Back in the list after a reload: down until `rise` good probes, probed at once.
    fn revive(&mut self, now: Instant) {
        self.retired = false;
        self.health = Health::down();
        self.next_probe = now;
    }
}

/// The three lists.
#[derive(Debug)]
pub struct Upstreams {
    /// Equivalent endpoints for ordinary commands, in configuration order.
    pub backends: Vec<Backend>,
    /// Redis instances for cluster-wide commands, in configuration order.
    pub shards: Vec<Backend>,
    /// The configured pub/sub target, if any (at most one).
    pub pubsub: Vec<Backend>,
    /// What the backends are, together (`refresh_tier`): the most restrictive tier among those
    /// known, `None` while none is.
    pub tier: Option<Tier>,
    /// Where each key lives among the shards, when the backends' rule is known
    /// (`--twemproxy-config`): what the backends refuse then goes to the key's shard master.
    pub keymap: Option<KeyMap>,
    /// The Codis slot table the key map follows (`--codis`), as a codis-proxy last reported it.
    pub codis_slots: Option<Vec<String>>,
    /// The shards are the nodes of a Redis Cluster (`--cluster`): there are no backends, the
    /// tier is `Cluster`, and every key goes to the master of its slot.
    pub cluster: bool,
    /// The Redis Cluster slot table the key map follows, as a node last reported it.
    pub cluster_slots: Option<Vec<SlotRange>>,
    /// Counts the key map's changes (a new slot table, a `-MOVED`).
    pub map_epoch: u64,
}

impl Upstreams {
    /// The lists for `backends` (each with `pool` connections per protocol), `shards` and
    /// `pubsub`, all healthy until probed otherwise.
    pub fn new(
        backends: &[SocketAddr],
        pool: usize,
        shards: &[SocketAddr],
        pubsub: Option<SocketAddr>,
        now: Instant,
    ) -> Self {
        Upstreams {
            backends: backends
                .iter()
                .map(|&a| Backend::pooled(a, pool, now))
                .collect(),
            // Two connections each: a RESP2 one (fan-outs, RESP2 clients) and a RESP3 one.
            shards: shards.iter().map(|&a| Backend::pooled(a, 1, now)).collect(),
            pubsub: pubsub.iter().map(|&a| Backend::single(a, now)).collect(),
            tier: None,
            keymap: None,
            codis_slots: None,
            cluster: false,
            cluster_slots: None,
            map_epoch: 0,
        }
    }

    /// The live shards: (index, address).
    fn live_shards(&self) -> Vec<(usize, SocketAddr)> {
        let shards = self.shards.iter().enumerate();
        shards
            .filter(|(_, s)| !s.retired)
            .map(|(i, s)| (i, s.addr))
            .collect()
    }

    /// Follows a Codis slot table (each slot's group master); with `discover`, the group masters
    /// become the shards. Returns the masters that are not among the shards.
    pub fn follow_codis(
        &mut self,
        masters: Vec<String>,
        discover: bool,
        now: Instant,
    ) -> Vec<String> {
        if discover {
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for m in &masters {
                let addr = m.to_socket_addrs().ok().and_then(|mut a| a.next());
                if let Some(a) = addr.filter(|a| !addrs.contains(a)) {
                    addrs.push(a);
                }
            }
            let before = self.shards.len();
            reconcile(&mut self.shards, &addrs, now, |a| {
                Backend::pooled(a, 1, now)
            });
            // Codis serves through them now: up until a probe says otherwise, like the shards
            // given at start.
            for s in &mut self.shards[before..] {
                s.health = Health::new();
            }
        }
        let map = KeyMap::codis(&masters, &self.live_shards());
        let missing = map.missing().into_iter().map(str::to_string).collect();
        self.keymap = Some(map);
        self.codis_slots = Some(masters);
        missing
    }

    /// Follows a Redis Cluster slot table: its masters and replicas become the shards (a node
    /// no longer in it is retired), and keys go to the master of their slot. Returns true if
    /// the nodes changed.
    pub fn follow_cluster(&mut self, ranges: Vec<SlotRange>, now: Instant) -> bool {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let nodes = ranges
            .iter()
            .flat_map(|r| std::iter::once(&r.master).chain(&r.replicas));
        for node in nodes {
            let addr = node.to_socket_addrs().ok().and_then(|mut a| a.next());
            if let Some(a) = addr.filter(|a| !addrs.contains(a)) {
                addrs.push(a);
            }
        }
        let before: Vec<SocketAddr> = self.live_shards().iter().map(|&(_, a)| a).collect();
        let changed = !addrs.is_empty()
            && (before.len() != addrs.len() || addrs.iter().any(|a| !before.contains(a)));
        if changed {
            let n = self.shards.len();
            reconcile(&mut self.shards, &addrs, now, |a| {
                Backend::pooled(a, 1, now)
            });
            for s in &mut self.shards[n..] {
                s.health = Health::new();
            }
        }
        // The table is the cluster's word on who is master: a promoted replica serves its slots
        // at once, before its own ROLE probe says so.
        for r in &ranges {
            let roles = std::iter::once((&r.master, Role::Master)).chain(
                r.replicas
                    .iter()
                    .map(|a| (a, Role::Replica(r.master.clone()))),
            );
            for (node, role) in roles {
                let addr = node.to_socket_addrs().ok().and_then(|mut a| a.next());
                let live = self.shards.iter_mut().filter(|s| !s.retired);
                if let Some(s) = live.into_iter().find(|s| Some(s.addr) == addr) {
                    s.role = role;
                }
            }
        }
        self.keymap = Some(KeyMap::cluster(&ranges, &self.live_shards()));
        self.cluster_slots = Some(ranges);
        self.map_epoch += 1;
        changed
    }

    /// Follows `pool` (the twemproxy backends' rule) to place keys on the live shards; returns
    /// the pool servers that are not among them.
    pub fn map_keys(&mut self, pool: Option<&Pool>) -> Vec<String> {
        let live = self.live_shards();
        self.keymap = pool.map(|p| KeyMap::twemproxy(p.clone(), &live));
        let missing = self
            .keymap
            .as_ref()
            .map(KeyMap::missing)
            .unwrap_or_default();
        missing.into_iter().map(str::to_string).collect()
    }

    /// Recomputes `tier` after a backend's tier was learned or the list changed. A fleet that
    /// mixes tiers is taken as its most restrictive one: twemproxy, then Codis, then Redis. A
    /// backend not learned yet (unreachable since the start) does not count.
    pub fn refresh_tier(&mut self) {
        if self.cluster {
            self.tier = Some(Tier::Cluster);
            return;
        }
        let rank = |t: &Tier| match t {
            Tier::Cluster | Tier::Redis => 0,
            Tier::Codis => 1,
            Tier::Twemproxy => 2,
        };
        let live = self.backends.iter().filter(|b| !b.retired);
        self.tier = live.filter_map(|b| b.tier).max_by_key(rank);
    }

    /// The backend, shard or pub/sub target `u` names.
    #[inline]
    pub fn get(&self, u: Upstream) -> &Backend {
        match u.group {
            Group::Backend => &self.backends[u.index],
            Group::Shard => &self.shards[u.index],
            Group::Pubsub => &self.pubsub[u.index],
        }
    }

    /// The backend, shard or pub/sub target `u` names, mutably.
    #[inline]
    pub fn get_mut(&mut self, u: Upstream) -> &mut Backend {
        match u.group {
            Group::Backend => &mut self.backends[u.index],
            Group::Shard => &mut self.shards[u.index],
            Group::Pubsub => &mut self.pubsub[u.index],
        }
    }

    /// True when shards are configured: cluster-wide commands fan out to them.
    pub fn have_shards(&self) -> bool {
        !self.shards.is_empty()
    }

    /// Every upstream that is probed: backends and shards not retired, and the pub/sub target.
    pub fn probed(&self) -> Vec<Upstream> {
        let live = |list: &[Backend], make: fn(usize) -> Upstream| {
            (0..list.len())
                .filter(|&i| !list[i].retired)
                .map(make)
                .collect::<Vec<_>>()
        };
        let mut all = live(&self.backends, Upstream::backend);
        all.extend(live(&self.shards, Upstream::shard));
        all.extend((!self.pubsub.is_empty()).then(Upstream::pubsub));
        all
    }

    /// A healthy backend from `picker`.
    #[inline]
    pub fn pick(&self, picker: &mut Picker) -> Option<usize> {
        let backends = &self.backends;
        picker.pick(backends.len(), |i| backends[i].health.up)
    }

    /// The healthy backends, in order (a fan-out without shards: `SCRIPT LOAD`).
    pub fn healthy_backends(&self) -> Vec<Upstream> {
        (0..self.backends.len())
            .filter(|&i| self.backends[i].health.up)
            .map(Upstream::backend)
            .collect()
    }

    /// Where pub/sub goes: the configured target if healthy, else (without one) the first
    /// healthy shard master in configuration order, else the first healthy backend.
    pub fn pubsub_target(&self) -> Option<Upstream> {
        if let Some(p) = self.pubsub.first() {
            return p.health.up.then(Upstream::pubsub);
        }
        if let Some(i) = self
            .shards
            .iter()
            .position(|s| s.health.up && s.role == Role::Master)
        {
            return Some(Upstream::shard(i));
        }
        self.backends
            .iter()
            .position(|b| b.health.up)
            .map(Upstream::backend)
    }

    /// The shard that serves shard `i`'s keys now: `i` while it is up and not a replica, else
    /// the master promoted from it; or why none does.
    pub fn master_for(&self, i: usize) -> Result<usize, String> {
        let s = self.shards.get(i).ok_or("no such shard")?;
        if s.health.up && !matches!(s.role, Role::Replica(_)) && !s.retired {
            return Ok(i);
        }
        self.shards
            .iter()
            .position(|t| {
                t.health.up
                    && t.role == Role::Master
                    && t.promoted_from.as_deref() == Some(&s.label)
            })
            .ok_or_else(|| format!("shard {} is down", s.label))
    }

    /// A healthy shard master, the same one while it stays so: the first by address (for a
    /// keyless command that must run on one master).
    pub fn any_master(&self) -> Option<usize> {
        let masters = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.health.up && s.role == Role::Master && !s.retired);
        masters
            .min_by(|a, b| a.1.label.cmp(&b.1.label))
            .map(|(i, _)| i)
    }

    /// The shards that take part in a fan-out right now, sorted by address, or why a fan-out is
    /// impossible (a master that is down and not replaced, a shard not probed yet).
    pub fn shard_set(&self) -> Result<Vec<usize>, String> {
        let mut masters = Vec::new();
        for (i, s) in self.shards.iter().enumerate().filter(|(_, s)| !s.retired) {
            match (&s.role, s.health.up) {
                (Role::Master, true) => masters.push(i),
                (Role::Replica(_), _) => {}
                (Role::Unknown, true) => {
                    return Err(format!("shard {} has not reported its role yet", s.label))
                }
                (_, false) => {
                    let covered = self.shards.iter().any(|t| {
                        t.health.up
                            && t.role == Role::Master
                            && t.promoted_from.as_deref() == Some(&s.label)
                    });
                    if !covered {
                        return Err(format!("shard {} is down", s.label));
                    }
                }
            }
        }
        if masters.is_empty() {
            return Err("no shard master available".into());
        }
        masters.sort_by(|&a, &b| self.shards[a].label.cmp(&self.shards[b].label));
        Ok(masters)
    }

    /// Makes the backends and shards serve the new lists (see the module comment); returns
    /// what changed: (backends added, retired, shards added, retired).
    pub fn reconcile(
        &mut self,
        backends: &[SocketAddr],
        pool: usize,
        shards: &[SocketAddr],
        now: Instant,
    ) -> (usize, usize, usize, usize) {
        let (ba, br) = reconcile(&mut self.backends, backends, now, |a| {
            Backend::pooled(a, pool, now)
        });
        let (sa, sr) = reconcile(&mut self.shards, shards, now, |a| {
            Backend::pooled(a, 1, now)
        });
        self.refresh_tier();
        (ba, br, sa, sr)
    }
}

/// Makes `list` serve `wanted`: keeps entries whose address stays, retires the others, revives
/// or appends (with `make`) the new ones, down until probed. Returns (added, retired).
fn reconcile(
    list: &mut Vec<Backend>,
    wanted: &[SocketAddr],
    now: Instant,
    make: impl Fn(SocketAddr) -> Backend,
) -> (usize, usize) {
    let mut retired = 0;
    for b in list.iter_mut() {
        if !wanted.contains(&b.addr) && !b.retired {
            b.retired = true;
            b.health.up = false;
            retired += 1;
        }
    }
    let mut added = 0;
    for &addr in wanted {
        match list.iter_mut().find(|b| b.addr == addr) {
            Some(b) if b.retired => {
                b.revive(now);
                added += 1;
            }
            Some(_) => {}
            None => {
                let mut b = make(addr);
                b.health = Health::down();
                list.push(b);
                added += 1;
            }
        }
    }
    (added, retired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn reconcile_keeps_retires_and_adds() {
        let now = Instant::now();
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let mut ups = Upstreams::new(&[a, b], 1, &[], None, now);
        assert_eq!(ups.reconcile(&[a, c], 1, &[], now), (1, 1, 0, 0));
        let list = &ups.backends;
        assert!(!list[0].retired && list[0].health.up);
        assert!(list[1].retired && !list[1].health.up);
        assert!(
            !list[2].retired && !list[2].health.up,
            "new backends join after probes"
        );
        assert_eq!(
            list[2].conns.len(),
            2,
            "a new backend gets both halves of its pool"
        );
        assert_eq!(ups.reconcile(&[a, b, c], 1, &[], now), (1, 0, 0, 0));
        assert!(!ups.backends[1].retired);
        assert_eq!(ups.probed().len(), 3);
    }

    #[test]
    fn pool_halves_serve_resp2_and_resp3_clients() {
        let now = Instant::now();
        let mut b = Backend::pooled(addr(1), 2, now);
        assert_eq!(b.conns.len(), 4);
        assert_eq!((b.slot_for(5, false), b.slot_for(5, true)), (1, 1));
        b.resp3 = Some(true);
        assert_eq!((b.slot_for(5, false), b.slot_for(5, true)), (1, 3));
        assert!(!b.is_resp3_slot(1) && b.is_resp3_slot(3));
        let s = Backend::single(addr(2), now);
        assert_eq!((s.slot_for(5, true), s.is_resp3_slot(0)), (0, false));
    }

    #[test]
    fn the_shard_set_is_the_masters_by_address_and_refuses_an_uncovered_gap() {
        let now = Instant::now();
        let mut ups = Upstreams::new(&[], 1, &[addr(3), addr(1), addr(2)], None, now);
        assert!(ups
            .shard_set()
            .unwrap_err()
            .contains("not reported its role"));
        ups.shards[0].role = Role::Master;
        ups.shards[1].role = Role::Master;
        ups.shards[2].role = Role::Replica(addr(1).to_string());
        assert_eq!(ups.shard_set(), Ok(vec![1, 0]));
        ups.shards[1].health.up = false;
        assert!(ups.shard_set().unwrap_err().contains("127.0.0.1:1 is down"));
        ups.shards[2].role = Role::Master;
        ups.shards[2].promoted_from = Some(addr(1).to_string());
        assert_eq!(
            ups.shard_set(),
            Ok(vec![2, 0]),
            "the promoted replica covers it"
        );
        assert_eq!(ups.pubsub_target(), Some(Upstream::shard(0)));
    }

    #[test]
    fn the_fleet_takes_its_most_restrictive_tier_once_every_backend_is_known() {
        let now = Instant::now();
        let mut ups = Upstreams::new(&[addr(1), addr(2)], 1, &[], None, now);
        ups.refresh_tier();
        assert_eq!(ups.tier, None, "none is known");
        ups.backends[0].tier = Some(Tier::Redis);
        ups.refresh_tier();
        assert_eq!(
            ups.tier,
            Some(Tier::Redis),
            "one not learned yet does not count"
        );
        ups.backends[1].tier = Some(Tier::Twemproxy);
        ups.refresh_tier();
        assert_eq!(ups.tier, Some(Tier::Twemproxy));
        ups.reconcile(&[addr(1)], 1, &[], now);
        assert_eq!(ups.tier, Some(Tier::Redis), "the twemproxy left");
    }
}
