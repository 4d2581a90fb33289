//! A real Redis Cluster on 127.0.0.1 (`redis-server --cluster-enabled yes`, formed by
//! `redis-cli --cluster create`), and the events a cluster client must survive, done by hand:
//! slot migration (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE, as `redis-cli --cluster reshard`
//! does it), graceful `CLUSTER FAILOVER` and kill -9 of a master.
//!
//! Invariants: every node's port and bus port (port + 10,000) were both free when it was picked;
//! `nodes` never changes (a killed node keeps its place, without a process); roles and slot
//! owners are always asked live, never remembered; every wait is bounded; every process is killed
//! by the PID it was started with, on drop, panics included. Shard `i` is the master that owned
//! the `i`-th slot range at creation, with its replicas; a promoted replica takes its master's
//! index, so `masters()[i]` stays shard `i` across failovers.

use super::{client_at, free_port, wait_until};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;
/// A node's cluster bus listens on its port plus this.
const BUS_PORT_OFFSET: u16 = 10_000;
/// Until the whole cluster is formed and healthy.
const START_LIMIT: Duration = Duration::from_secs(20);
/// For `redis-cli --cluster create` itself.
const CREATE_LIMIT: Duration = Duration::from_secs(30);
/// For a failover or a promotion to settle: roles, `cluster_state:ok`, agreeing slot tables.
const SETTLE_LIMIT: Duration = Duration::from_secs(15);
/// For all the keys of one slot to leave it, while clients may still be writing to it.
const SLOT_DRAIN_LIMIT: Duration = Duration::from_secs(10);
const MIGRATE_TIMEOUT_MS: u64 = 5000;
const MIGRATE_BATCH_KEYS: usize = 100;

/// A Redis Cluster of child processes, killed by PID on drop.
pub struct Cluster {
    /// Every node started, in start order; a killed node keeps its place.
    pub nodes: Vec<SocketAddr>,
    /// `CLUSTER MYID` of each node, by index in `nodes`.
    ids: Vec<String>,
    /// The process of each node; `None` once killed.
    children: Mutex<Vec<Option<Child>>>,
    /// The shard of each node (see the module doc).
    shards: Mutex<Vec<usize>>,
    /// Each master killed by `kill_master`, with the replicas it had then.
    orphans: Mutex<HashMap<SocketAddr, Vec<SocketAddr>>>,
    dir: tempfile::TempDir,
}

/// A node's replication role, from its own `INFO replication`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Master,
    Replica { master: SocketAddr, link_up: bool },
}

impl Cluster {
    /// Starts `masters` masters (at least 3, as `redis-cli --cluster create` wants) with
    /// `replicas_per_master` replicas each, and waits until every node says `cluster_state:ok`,
    /// every node sees the same slot owners and every replica's link to its master is up.
    pub fn start(masters: usize, replicas_per_master: usize) -> Cluster {
        assert!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters, got {masters}"
        );
        let mut cluster = Cluster {
            nodes: Vec::new(),
            ids: Vec::new(),
            children: Mutex::new(Vec::new()),
            shards: Mutex::new(Vec::new()),
            orphans: Mutex::new(HashMap::new()),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let started = Instant::now();
        for _ in 0..masters * (1 + replicas_per_master) {
            cluster.spawn_node();
        }
        cluster.ids = cluster
            .nodes
            .iter()
            .map(|&a| {
                redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query(&mut client_at(a))
                    .expect("CLUSTER MYID")
            })
            .collect();
        cluster.create(replicas_per_master);
        cluster.assign_shards(masters);
        let left = START_LIMIT.saturating_sub(started.elapsed());
        if let Err(problem) = cluster.settle(left.max(Duration::from_secs(5))) {
            panic!(
                "the cluster did not become healthy within {START_LIMIT:?}: {problem}\n{}",
                cluster.report()
            );
        }
        cluster
    }

    /// The live masters, in shard order (shards without a master right now are left out).
    pub fn masters(&self) -> Vec<SocketAddr> {
        let shards = lock(&self.shards).clone();
        let mut masters: Vec<(usize, SocketAddr)> = self
            .alive()
            .into_iter()
            .filter(|&a| role(a) == Some(Role::Master))
            .map(|a| (shards[self.index(a)], a))
            .collect();
        masters.sort();
        masters.into_iter().map(|(_, a)| a).collect()
    }

    /// The live replicas of `master`, by their own `INFO replication`.
    pub fn replicas_of(&self, master: SocketAddr) -> Vec<SocketAddr> {
        self.replicas_with_links(master)
            .into_iter()
            .map(|(a, _)| a)
            .collect()
    }

    /// The live masters as respite's `--cluster` seeds: `127.0.0.1:p1,127.0.0.1:p2,...`.
    pub fn seeds(&self) -> String {
        let masters: Vec<String> = self.masters().iter().map(|a| a.to_string()).collect();
        masters.join(",")
    }

    /// The slot of `key`: CRC16-XMODEM of the key, or of what is between its first `{` and the
    /// first `}` after it when that is not empty (Redis looks no further: `{}{x}` hashes whole),
    /// mod 16,384.
    pub fn slot_of(key: &[u8]) -> u16 {
        let hashed = match key.iter().position(|&b| b == b'{') {
            Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                _ => key,
            },
            None => key,
        };
        crc16_xmodem(hashed) % SLOTS
    }

    /// The owner of every slot (indexed by slot), as the first live master sees it. Masters are
    /// told synchronously by `migrate_slots`; replicas learn by gossip.
    pub fn slot_table(&self) -> Vec<SocketAddr> {
        let mut views = self.alive().into_iter().filter_map(cluster_nodes);
        let mut fallback = None;
        let view = loop {
            match views.next() {
                Some(text) if text.contains("myself,master") => break Some(text),
                Some(text) => fallback = fallback.or(Some(text)),
                None => break fallback,
            }
        };
        let view =
            view.unwrap_or_else(|| panic!("no live node answers CLUSTER NODES\n{}", self.report()));
        slot_owners(&view)
            .iter()
            .enumerate()
            .map(|(slot, owner)| {
                owner.unwrap_or_else(|| panic!("slot {slot} has no owner\n{}", self.report()))
            })
            .collect()
    }

    /// The master that owns `slot` now (see `slot_table`).
    pub fn master_of_slot(&self, slot: u16) -> SocketAddr {
        assert!(slot < SLOTS, "slot {slot} out of range");
        self.slot_table()[usize::from(slot)]
    }

    /// The slots `addr` owns now, ascending.
    pub fn slots_of(&self, addr: SocketAddr) -> Vec<u16> {
        (0..SLOTS)
            .zip(self.slot_table())
            .filter(|&(_, owner)| owner == addr)
            .map(|(slot, _)| slot)
            .collect()
    }

    /// A `redis` crate client connected straight to the node at `addr`.
    pub fn client(&self, addr: SocketAddr) -> redis::Connection {
        client_at(addr)
    }

    /// `KEYS *` on the node at `addr` (non-UTF-8 bytes replaced).
    pub fn keys_on(&self, addr: SocketAddr) -> Vec<String> {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut client_at(addr))
            .unwrap_or_else(|e| panic!("KEYS * on {addr}: {e}"));
        keys.iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    /// Moves the first `n` slots `from` owns to `to`, one at a time, the way
    /// `redis-cli --cluster reshard` does: IMPORTING on `to`, MIGRATING on `from`, MIGRATE batches
    /// until `CLUSTER GETKEYSINSLOT` is empty (clients may keep writing meanwhile), then
    /// `SETSLOT NODE` on `to`, `from` and every other master. Returns the slots moved.
    pub fn migrate_slots(&self, n: usize, from: SocketAddr, to: SocketAddr) -> Vec<u16> {
        let (from_id, to_id) = (self.id_of(from), self.id_of(to));
        let slots: Vec<u16> = self.slots_of(from).into_iter().take(n).collect();
        assert_eq!(slots.len(), n, "{from} owns only {} slots", slots.len());
        let others: Vec<SocketAddr> = self
            .masters()
            .into_iter()
            .filter(|&m| m != from && m != to)
            .collect();
        let (mut src, mut dst) = (client_at(from), client_at(to));
        let mut rest: Vec<redis::Connection> = others.iter().map(|&m| client_at(m)).collect();
        for &slot in &slots {
            setslot(&mut dst, to, slot, "IMPORTING", from_id);
            setslot(&mut src, from, slot, "MIGRATING", to_id);
            drain_slot(&mut src, from, slot, to);
            setslot(&mut dst, to, slot, "NODE", to_id);
            setslot(&mut src, from, slot, "NODE", to_id);
            for (conn, &m) in rest.iter_mut().zip(&others) {
                setslot(conn, m, slot, "NODE", to_id);
            }
        }
        slots
    }

    /// Graceful `CLUSTER FAILOVER` on a replica of the master `replica_of` (one whose link is
    /// up), retried while the manual failover times out; waits until the replica is master, the
    /// old master is its replica and the cluster has settled. Returns the new master.
    pub fn failover(&self, replica_of: SocketAddr) -> SocketAddr {
        let mut replica = None;
        wait_until(Duration::from_secs(5), || {
            replica = self
                .replicas_with_links(replica_of)
                .into_iter()
                .find(|&(_, up)| up)
                .map(|(a, _)| a);
            replica.is_some()
        });
        let replica = replica.unwrap_or_else(|| {
            panic!(
                "no replica of {replica_of} with its link up\n{}",
                self.report()
            )
        });
        let mut promoted = false;
        for _ in 0..3 {
            // A manual failover gives up after 5 s (CLUSTER_MF_TIMEOUT); then ask again, unless
            // the replica won and only the old master has not heard of it yet.
            if role(replica) != Some(Role::Master) {
                let _: redis::Value = redis::cmd("CLUSTER")
                    .arg("FAILOVER")
                    .query(&mut client_at(replica))
                    .unwrap_or_else(|e| panic!("CLUSTER FAILOVER on {replica}: {e}"));
            }
            promoted = wait_until(Duration::from_secs(6), || {
                role(replica) == Some(Role::Master)
                    && matches!(role(replica_of), Some(Role::Replica { master, .. }) if master == replica)
            });
            if promoted {
                break;
            }
        }
        assert!(
            promoted,
            "{replica} did not take over from {replica_of}\n{}",
            self.report()
        );
        self.inherit_shard(replica, replica_of);
        self.wait_ok();
        replica
    }

    /// kill -9 of the master at `addr` (by its process), remembering its replicas for
    /// `wait_promoted`.
    pub fn kill_master(&self, addr: SocketAddr) {
        assert_eq!(
            role(addr),
            Some(Role::Master),
            "{addr} is not a live master"
        );
        let replicas = self.replicas_of(addr);
        lock(&self.orphans).insert(addr, replicas);
        let i = self.index(addr);
        kill(&mut lock(&self.children)[i]);
    }

    /// Waits until one of the replicas `old` had when `kill_master` killed it is master and the
    /// remaining nodes have settled (`cluster_state:ok`, same slot owners, replica links up).
    /// Returns the promoted node.
    pub fn wait_promoted(&self, old: SocketAddr) -> SocketAddr {
        let candidates = lock(&self.orphans)
            .get(&old)
            .cloned()
            .unwrap_or_else(|| panic!("{old} was not killed by kill_master"));
        assert!(!candidates.is_empty(), "{old} had no replica to promote");
        let mut promoted = None;
        let mut problem = None;
        let settled = wait_until(SETTLE_LIMIT, || {
            promoted = candidates
                .iter()
                .copied()
                .find(|&c| role(c) == Some(Role::Master));
            problem = match promoted {
                None => Some(format!("no replica of {old} is master yet")),
                Some(_) => self.problem(),
            };
            problem.is_none()
        });
        let promoted = promoted.filter(|_| settled).unwrap_or_else(|| {
            panic!(
                "after killing {old}: {}\n{}",
                problem.unwrap_or_default(),
                self.report()
            )
        });
        self.inherit_shard(promoted, old);
        promoted
    }

    /// Waits until every live node says `cluster_state:ok`, they all see the same slot owners
    /// and every live replica's link is up.
    pub fn wait_ok(&self) {
        if let Err(problem) = self.settle(SETTLE_LIMIT) {
            panic!(
                "the cluster did not settle within {SETTLE_LIMIT:?}: {problem}\n{}",
                self.report()
            );
        }
    }

    /// Starts one node on a free port pair, trying another pair when a port was taken.
    fn spawn_node(&mut self) {
        let mut log_text = String::new();
        for _ in 0..3 {
            let port = self.pick_port();
            let dir = self.dir.path();
            let log = dir.join(format!("redis-{port}.log"));
            let conf = dir.join(format!("nodes-{port}.conf"));
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(&conf)
                .arg("--dir")
                .arg(dir)
                // Replicas load a full sync from this file: one per node in the shared dir.
                .args(["--dbfilename", &format!("dump-{port}.rdb")])
                .arg("--logfile")
                .arg(&log)
                .args(["--enable-debug-command", "yes"])
                // A full sync would otherwise wait 5 s for more replicas to share it.
                .args(["--repl-diskless-sync-delay", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/install-deps)");
            let mut child = Some(child);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_until(Duration::from_secs(10), || {
                let exited = child
                    .as_mut()
                    .is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
                exited || pings(addr)
            });
            if pings(addr) {
                self.nodes.push(addr);
                lock(&self.children).push(child);
                lock(&self.shards).push(0);
                return;
            }
            kill(&mut child);
            log_text = std::fs::read_to_string(&log).unwrap_or_default();
            if !log_text.contains("Address already in use") {
                break;
            }
        }
        panic!("a cluster node did not start; log:\n{log_text}");
    }

    /// A port whose bus port (+10,000, so at most 65,535) was free too, used by no node here.
    fn pick_port(&self) -> u16 {
        let taken = |p: u16| {
            p == 6379
                || self
                    .nodes
                    .iter()
                    .any(|n| n.port() == p || n.port() + BUS_PORT_OFFSET == p)
        };
        for _ in 0..200 {
            let port = free_port();
            let Some(bus) = port.checked_add(BUS_PORT_OFFSET) else {
                continue;
            };
            if taken(port) || taken(bus) {
                continue;
            }
            let both = (
                TcpListener::bind(("127.0.0.1", port)),
                TcpListener::bind(("127.0.0.1", bus)),
            );
            if let (Ok(_), Ok(_)) = both {
                return port;
            }
        }
        panic!("no free port pair (p, p + 10000) below 55535 in 200 tries");
    }

    /// `redis-cli --cluster create` over every node, bounded in time.
    fn create(&self, replicas_per_master: usize) {
        let out_path = self.dir.path().join("create.out");
        let out = std::fs::File::create(&out_path).expect("create.out");
        let mut cli = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|a| a.to_string()))
            .args(["--cluster-replicas", &replicas_per_master.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("create.out"))
            .stderr(out)
            .spawn()
            .expect("redis-cli must be installed (scripts/install-deps)");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = cli.try_wait().expect("wait for redis-cli") {
                break Some(status);
            }
            if started.elapsed() > CREATE_LIMIT {
                let _ = cli.kill();
                let _ = cli.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()) && text.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed ({status:?}):\n{text}\n{}",
            self.report()
        );
    }

    /// Waits for the roles `redis-cli` gave, then numbers the shards by their first slot.
    fn assign_shards(&self, masters: usize) {
        let mut roles: Vec<Option<Role>> = Vec::new();
        let ready = wait_until(START_LIMIT, || {
            roles = self.nodes.iter().map(|&a| role(a)).collect();
            let count = roles.iter().filter(|r| **r == Some(Role::Master)).count();
            count == masters && roles.iter().all(Option::is_some)
        });
        assert!(
            ready,
            "expected {masters} masters, roles {roles:?}\n{}",
            self.report()
        );
        let table = self.slot_table();
        let mut firsts: Vec<(usize, usize)> = self
            .nodes
            .iter()
            .zip(&roles)
            .enumerate()
            .filter(|(_, (_, r))| **r == Some(Role::Master))
            .map(|(i, (&a, _))| {
                let first = table.iter().position(|&o| o == a).unwrap_or(usize::MAX);
                (first, i)
            })
            .collect();
        firsts.sort();
        let mut shards = lock(&self.shards);
        for (shard, &(_, i)) in firsts.iter().enumerate() {
            shards[i] = shard;
        }
        for (i, r) in roles.iter().enumerate() {
            if let Some(Role::Replica { master, .. }) = r {
                shards[i] = shards[self.index(*master)];
            }
        }
    }

    /// Waits up to `limit` for `problem()` to clear; the last problem otherwise.
    fn settle(&self, limit: Duration) -> Result<(), String> {
        let mut problem = None;
        if wait_until(limit, || {
            problem = self.problem();
            problem.is_none()
        }) {
            Ok(())
        } else {
            Err(problem.unwrap_or_default())
        }
    }

    /// What keeps the cluster from being healthy now, if anything.
    fn problem(&self) -> Option<String> {
        let mut first: Option<(SocketAddr, Vec<Option<SocketAddr>>)> = None;
        for a in self.alive() {
            let Some(info) = cluster_text(a, &["CLUSTER", "INFO"]) else {
                return Some(format!("{a} does not answer CLUSTER INFO"));
            };
            if field(&info, "cluster_state") != Some("ok") {
                return Some(format!("{a} is not cluster_state:ok"));
            }
            match role(a) {
                None => return Some(format!("{a} does not answer INFO replication")),
                Some(Role::Replica { master, link_up }) if !link_up => {
                    return Some(format!("{a}'s link to its master {master} is down"))
                }
                _ => {}
            }
            let Some(nodes) = cluster_nodes(a) else {
                return Some(format!("{a} does not answer CLUSTER NODES"));
            };
            let owners = slot_owners(&nodes);
            match &first {
                None => first = Some((a, owners)),
                Some((b, seen)) if *seen != owners => {
                    return Some(format!("{a} and {b} disagree on slot owners"))
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Live replicas of `master`, with whether their link to it is up.
    fn replicas_with_links(&self, master: SocketAddr) -> Vec<(SocketAddr, bool)> {
        self.alive()
            .into_iter()
            .filter_map(|a| match role(a) {
                Some(Role::Replica { master: m, link_up }) if m == master => Some((a, link_up)),
                _ => None,
            })
            .collect()
    }

    /// The nodes whose process runs.
    fn alive(&self) -> Vec<SocketAddr> {
        let mut children = lock(&self.children);
        self.nodes
            .iter()
            .zip(children.iter_mut())
            .filter_map(|(&a, c)| {
                let runs = c.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
                runs.then_some(a)
            })
            .collect()
    }

    fn index(&self, addr: SocketAddr) -> usize {
        self.nodes
            .iter()
            .position(|&a| a == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"))
    }

    fn id_of(&self, addr: SocketAddr) -> &str {
        &self.ids[self.index(addr)]
    }

    /// `node` now serves the shard `old` served.
    fn inherit_shard(&self, node: SocketAddr, old: SocketAddr) {
        let (n, o) = (self.index(node), self.index(old));
        let mut shards = lock(&self.shards);
        shards[n] = shards[o];
    }

    /// Each node's role and state, and the tail of its log, for failure messages.
    fn report(&self) -> String {
        let alive = self.alive();
        let mut out = String::from("cluster nodes:\n");
        for &a in &self.nodes {
            let state = cluster_text(a, &["CLUSTER", "INFO"])
                .and_then(|i| field(&i, "cluster_state").map(str::to_string));
            out.push_str(&format!(
                "  {a} alive={} role={:?} cluster_state={state:?}\n",
                alive.contains(&a),
                role(a)
            ));
            let log = self.dir.path().join(format!("redis-{}.log", a.port()));
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for l in &lines[lines.len().saturating_sub(8)..] {
                out.push_str(&format!("    | {l}\n"));
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let children = self.children.get_mut().unwrap_or_else(|e| e.into_inner());
        for child in children.iter_mut() {
            kill(child);
        }
    }
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0), as Redis Cluster's `crc16.c`.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// `CLUSTER SETSLOT <slot> <how> <id>` on the node at `addr`.
fn setslot(conn: &mut redis::Connection, addr: SocketAddr, slot: u16, how: &str, id: &str) {
    let _: redis::Value = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(how)
        .arg(id)
        .query(conn)
        .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {how} {id} on {addr}: {e}"));
}

/// MIGRATEs the keys of `slot` from `src` (at `from`) to `to` until none is left.
fn drain_slot(src: &mut redis::Connection, from: SocketAddr, slot: u16, to: SocketAddr) {
    let started = Instant::now();
    loop {
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(MIGRATE_BATCH_KEYS)
            .query(src)
            .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT {slot} on {from}: {e}"));
        if keys.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < SLOT_DRAIN_LIMIT,
            "slot {slot} on {from} still has keys after {SLOT_DRAIN_LIMIT:?}"
        );
        let migrate = |replace: bool| {
            let mut cmd = redis::cmd("MIGRATE");
            cmd.arg(to.ip().to_string())
                .arg(to.port())
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS);
            if replace {
                // A MIGRATE that timed out after the target restored the key: the source's copy
                // is the one clients wrote last.
                cmd.arg("REPLACE");
            }
            cmd.arg("KEYS").arg(&keys);
            cmd
        };
        let result: redis::RedisResult<redis::Value> = migrate(false).query(src);
        if let Err(e) = result {
            if !e.to_string().contains("BUSYKEY") {
                panic!("MIGRATE of slot {slot} from {from} to {to}: {e}");
            }
            let _: redis::Value = migrate(true)
                .query(src)
                .unwrap_or_else(|e| panic!("MIGRATE REPLACE of slot {slot} to {to}: {e}"));
        }
    }
}

/// SIGKILL by PID, and reap.
fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client with short timeouts for questions a dead or busy node may not answer.
fn probe(addr: SocketAddr) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(conn)
}

fn pings(addr: SocketAddr) -> bool {
    probe(addr).is_some_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok())
}

/// A command whose reply is text (`INFO`, `CLUSTER INFO`, `CLUSTER NODES`), or `None`.
fn cluster_text(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut conn = probe(addr)?;
    let mut cmd = redis::cmd(args.first().copied()?);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn).ok()
}

fn cluster_nodes(addr: SocketAddr) -> Option<String> {
    cluster_text(addr, &["CLUSTER", "NODES"])
}

/// The value of `name:` in an `INFO`-style text.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The node's role, by its own `INFO replication`; `None` if it does not answer.
fn role(addr: SocketAddr) -> Option<Role> {
    let info = cluster_text(addr, &["INFO", "replication"])?;
    match field(&info, "role")? {
        "master" => Some(Role::Master),
        "slave" => {
            let host = field(&info, "master_host")?;
            let port: u16 = field(&info, "master_port")?.parse().ok()?;
            Some(Role::Replica {
                master: format!("{host}:{port}").parse().ok()?,
                link_up: field(&info, "master_link_status") == Some("up"),
            })
        }
        _ => None,
    }
}

/// The owner of each slot in a `CLUSTER NODES` text (`<id> <ip:port@bus> <flags> ... <slots>`);
/// migrating/importing entries (`[slot->-id]`) are skipped.
fn slot_owners(text: &str) -> Vec<Option<SocketAddr>> {
    let mut owners = vec![None; usize::from(SLOTS)];
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(hostport) = fields.get(1).and_then(|f| f.split('@').next()) else {
            continue;
        };
        // A node that has not met anyone yet does not know its own address.
        let hostport = if hostport.starts_with(':') {
            format!("127.0.0.1{hostport}")
        } else {
            hostport.to_string()
        };
        let Ok(addr) = hostport.parse::<SocketAddr>() else {
            continue;
        };
        for range in fields.iter().skip(8).filter(|f| !f.starts_with('[')) {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(lo), Ok(hi)) = (lo.parse::<usize>(), hi.parse::<usize>()) {
                for owner in owners.iter_mut().take(hi + 1).skip(lo) {
                    *owner = Some(addr);
                }
            }
        }
    }
    owners
}
