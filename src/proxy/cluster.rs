//! In front of a Redis Cluster (`--cluster`): following a node's redirects so that clients never
//! see them. A `-MOVED` moves the slot in the key map for good (and asks a node for the whole
//! table at once); an `-ASK` sends `ASKING` and the request to the importing node, once. Either
//! way the request is sent again with the origin it had, so its reply fills the same slot and
//! the client's replies keep their order. Multi-key commands whose keys span slots are split
//! per slot and merged (`split_across_slots`, `fanout/split.rs`). A request whose slot is not
//! served for now (its master down until a replica takes over, `-CLUSTERDOWN`, `-TRYAGAIN`
//! while a slot migrates) waits and is tried again every tick, for at most
//! `--backend-timeout-ms` from its arrival, while some node is up; then it gets the error.
//!
//! ```text
//!  shard reply -MOVED s addr ─▶ key map: s ─▶ addr ─▶ re-send there (at most MAX_REDIRECTS)
//!              -ASK s addr   ─▶ ASKING + re-send there
//! ```

use super::Proxy;
use crate::backend::Origin;
use crate::client::Mode;
use crate::conns::ConnRef;
use crate::fanout::{split, Fanout};
use crate::keymap::cluster::{parse_redirect, OneNode, Redirect};
use crate::keymap::Home;
use crate::request::Request;
use crate::resp::{self, reply};
use crate::upstream::Upstream;
use bytes::Bytes;
use log::debug;
use std::net::{SocketAddr, ToSocketAddrs};

/// Redirects followed for one request before its last one is passed on to the client (a slot
/// moving back and forth, or nodes that disagree).
const MAX_REDIRECTS: u8 = 5;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// The answer to a waiting keyless request when no master is left.
const NO_MASTER: Bytes = Bytes::from_static(b"-CLUSTERDOWN no master is available\r\n");

impl Proxy {
    /// Follows the redirect in `frame`, the reply to `origin` from a shared shard connection,
    /// if it is one that can be followed; returns true if it was (the reply is then dropped).
    pub(super) fn follow_redirect(&mut self, origin: Origin, frame: &[u8]) -> bool {
        let Some(redirect) = parse_redirect(frame) else {
            return false;
        };
        let Some(shard) = self.shard_at(&redirect.addr) else {
            // A node respite does not know yet (added, importing its first slot): the request
            // waits until a slot table names it.
            return self.retry_later(origin, b"-TRYAGAIN redirected to an unknown node\r\n");
        };
        let Some((req, resp3)) = self.redirected_request(origin) else {
            return false;
        };
        let Redirect { ask, slot, addr } = redirect;
        debug!(
            "{origin:?} {} slot {slot} to {addr}",
            if ask { "ASK" } else { "MOVED" }
        );
        if ask {
            self.stats.cluster_asks += 1;
        } else {
            self.stats.cluster_moves += 1;
            if let Some(map) = &mut self.ups.keymap {
                map.move_slot(slot, &addr, shard);
                self.ups.map_epoch += 1;
            }
            self.refresh_cluster_now();
        }
        let u = Upstream::shard(shard);
        let conn_slot = match origin {
            Origin::Client { token, .. } => self.ups.get(u).slot_for(token, resp3),
            _ => 0,
        };
        let Some(conn) = self.backend_conn(u, conn_slot) else {
            return false;
        };
        if ask {
            self.enqueue(conn, Origin::Quiet, Bytes::from_static(ASKING));
        }
        self.ups.get_mut(u).requests += 1;
        self.enqueue(conn, origin, req);
        true
    }

    /// A `-MOVED` on the session connection `conn` for its only request (a blocking command,
    /// a WATCH), sent by a stale map: the session moves to the slot's new master and the request
    /// goes there with its origin. Returns true if it did (`conn` is then closed).
    pub(super) fn follow_session_redirect(
        &mut self,
        conn: usize,
        origin: Origin,
        frame: &[u8],
    ) -> bool {
        let Some(Redirect {
            ask: false,
            slot,
            addr,
        }) = parse_redirect(frame)
        else {
            return false;
        };
        let Origin::Client {
            token, gen, n: 1, ..
        } = origin
        else {
            return false;
        };
        // Its only request so far: nothing else (a key already watched) would move with it.
        let first =
            (self.conns.backend(conn)).is_some_and(|bc| bc.pipe.is_idle() && bc.pipe.answered == 1);
        let mode = self
            .conns
            .live_client(ConnRef { token, gen })
            .map(|c| c.mode.clone());
        if !first || !matches!(mode, Some(Mode::Normal | Mode::Watching)) {
            return false;
        }
        let Some(shard) = self.shard_at(&addr) else {
            return false;
        };
        let Some((req, _)) = self.redirected_request(origin) else {
            return false;
        };
        self.stats.cluster_moves += 1;
        if let Some(map) = &mut self.ups.keymap {
            map.move_slot(slot, &addr, shard);
            self.ups.map_epoch += 1;
        }
        self.refresh_cluster_now();
        self.close_session_of(token);
        match self.connect_session(token, Upstream::shard(shard), false) {
            Ok(session) => self.enqueue(session, origin, req),
            Err(answer) => self.complete(origin, answer),
        }
        true
    }

    /// The request of `origin` to send again after a redirect, and whether its client speaks
    /// RESP3; `None` once it was redirected `MAX_REDIRECTS` times, or if it cannot be sent
    /// again (a run, a client gone and its place taken, a fan-out part that is not a split's).
    fn redirected_request(&mut self, origin: Origin) -> Option<(Bytes, bool)> {
        match origin {
            Origin::Client {
                token,
                gen,
                seq,
                n: 1,
            } => {
                // Only for the client that sent it, not one that took its place since.
                let c = self.conns.live_client_mut(ConnRef { token, gen })?;
                let resp3 = c.resp3;
                let tag = c.pending.waiting_tag_mut(seq)?;
                (tag.redirects < MAX_REDIRECTS).then(|| {
                    tag.redirects += 1;
                    (tag.req.clone(), resp3)
                })
            }
            Origin::Fanout { id, part } => {
                let f = self.fanouts.get_mut(id)?;
                let req = f.requests.get(part)?.clone();
                let parts = u32::try_from(f.requests.len()).unwrap_or(u32::MAX);
                let most = u32::from(MAX_REDIRECTS).saturating_mul(parts);
                (f.redirects < most).then(|| {
                    f.redirects += 1;
                    (req, false)
                })
            }
            _ => None,
        }
    }

    /// Splits a multi-key request whose keys span slots (`fanout/split.rs`) and sends each
    /// part to its slot's master; returns the request back if it is not one to split.
    pub(super) fn split_across_slots(&mut self, token: usize, req: Request) -> Option<Request> {
        let Some(map) = self.ups.keymap.as_ref() else {
            return Some(req);
        };
        let Some(split) = split::split(&req, |k| map.cluster_slot(k).unwrap_or(0)) else {
            return Some(req);
        };
        let mut targets = Vec::with_capacity(split.parts.len());
        for (_, sub) in &split.parts {
            let part = Request::new(sub.clone(), req.cmd, req.start);
            match self.key_master(&part) {
                Ok(Some(master)) => targets.push(Upstream::shard(master)),
                Ok(None) => return Some(req),
                Err(answer) => {
                    self.reply_now(token, &req, answer);
                    return None;
                }
            }
        }
        let Some(Origin::Client { gen, seq, .. }) = self.slot_origin(token, &req) else {
            return None;
        };
        let labels = targets.iter().map(|&u| self.ups.get(u).label.clone());
        let mut fanout = Fanout::new(ConnRef { token, gen }, seq, split.merge, labels.collect());
        fanout.requests = split.parts.into_iter().map(|(_, sub)| sub).collect();
        let requests = fanout.requests.clone();
        let id = self.fanouts.insert(fanout);
        for (part, (u, sub)) in targets.into_iter().zip(requests).enumerate() {
            match self.backend_conn(u, 0) {
                Some(conn) => {
                    self.ups.get_mut(u).requests += 1;
                    self.enqueue(conn, Origin::Fanout { id, part }, sub);
                }
                None => {
                    let label = &self.ups.get(u).label;
                    let failed = resp::error(&format!("ERR shard {label} connection failed"));
                    self.fanout_part_done(id, part, failed);
                }
            }
        }
        None
    }

    /// True if `answer` (why a request cannot be routed now) may pass: the cluster is not
    /// refusing the request itself (CROSSSLOT), and some node is up to take over.
    pub(super) fn waits_for_cluster(&self, answer: &[u8]) -> bool {
        self.ups.cluster
            && !answer.starts_with(b"-CROSSSLOT")
            && self.ups.shards.iter().any(|s| s.health.up && !s.retired)
    }

    /// Takes the reply slot of `req` and lets it wait for its slot to be served again.
    pub(super) fn wait_for_cluster(&mut self, token: usize, req: Request) {
        if let Some(origin) = self.slot_origin(token, &req) {
            self.hold_for_cluster(origin, req);
        }
    }

    fn hold_for_cluster(&mut self, origin: Origin, req: Request) {
        if let Origin::Client { token, gen, .. } = origin {
            if let Some(c) = self.conns.live_client_mut(ConnRef { token, gen }) {
                c.waiting_for_cluster += 1;
            }
        }
        self.refresh_cluster_now();
        self.cluster_waiting.push(Waiting { origin, req });
    }

    /// A node answered `-TRYAGAIN` or `-CLUSTERDOWN` to `origin`'s request: it waits and is
    /// tried again, if it has time left. Returns true if it waits (the reply is dropped).
    pub(super) fn retry_later(&mut self, origin: Origin, frame: &[u8]) -> bool {
        if !(frame.starts_with(b"-TRYAGAIN") || frame.starts_with(b"-CLUSTERDOWN")) {
            return false;
        }
        let Origin::Client {
            token,
            gen,
            seq,
            n: 1,
        } = origin
        else {
            return false;
        };
        let Some(c) = self.conns.live_client_mut(ConnRef { token, gen }) else {
            return false;
        };
        let Some(tag) = c.pending.waiting_tag_mut(seq) else {
            return false;
        };
        let req = Request::new(tag.req.clone(), Some(tag.cmd), tag.start);
        if self.out_of_time(&req) || !self.waits_for_cluster(frame) {
            return false;
        }
        self.hold_for_cluster(origin, req);
        true
    }

    fn out_of_time(&self, req: &Request) -> bool {
        let budget = u64::try_from(self.config.backend_timeout.as_micros()).unwrap_or(u64::MAX);
        self.clock_us.saturating_sub(req.start) >= budget
    }

    /// Every tick: the waiting requests whose slot is served again go to its master, in the
    /// order they came; those out of time (or with no node left) get the error.
    pub(super) fn retry_cluster_waiting(&mut self) {
        if self.cluster_waiting.is_empty() {
            return;
        }
        for Waiting { origin, req } in std::mem::take(&mut self.cluster_waiting) {
            let Origin::Client { token, gen, .. } = origin else {
                continue;
            };
            let route = match self.key_master(&req) {
                Ok(master) => master.or_else(|| self.ups.any_master()).ok_or(NO_MASTER),
                Err(answer) => Err(answer),
            };
            let answer = match route {
                Ok(master) => {
                    let u = Upstream::shard(master);
                    let resp3 = self
                        .conns
                        .live_client(ConnRef { token, gen })
                        .is_some_and(|c| c.resp3);
                    match self.backend_conn(u, self.ups.get(u).slot_for(token, resp3)) {
                        Some(conn) => {
                            self.ups.get_mut(u).requests += 1;
                            self.enqueue(conn, origin, req.bytes);
                            None
                        }
                        None => Some(reply::NO_BACKEND),
                    }
                }
                Err(answer) if self.out_of_time(&req) || !self.waits_for_cluster(&answer) => {
                    Some(answer)
                }
                Err(_) => {
                    self.cluster_waiting.push(Waiting { origin, req });
                    continue;
                }
            };
            if let Some(c) = self.conns.live_client_mut(ConnRef { token, gen }) {
                c.waiting_for_cluster = c.waiting_for_cluster.saturating_sub(1);
            }
            if let Some(answer) = answer {
                self.complete(origin, answer);
            }
        }
    }

    /// `CLUSTER SLOTS|SHARDS|NODES|INFO|MYID|KEYSLOT`: respite is a cluster of one node, at
    /// the address the client reached, owning every slot.
    pub(super) fn answer_cluster_view(&mut self, token: usize, req: Request) {
        let sub = req.arg(1).unwrap_or_default();
        if sub.eq_ignore_ascii_case(b"COUNTKEYSINSLOT")
            || sub.eq_ignore_ascii_case(b"GETKEYSINSLOT")
        {
            return self.forward_to_slot(token, req);
        }
        let addr = self.conns.client(token).and_then(|c| c.local);
        let addr = (addr.or(self.config.listen).or(self.config.tls.listen))
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], self.port)));
        let args: Vec<&[u8]> = req.args().skip(2).collect();
        let answer = OneNode { addr }.answer(sub, &args);
        self.reply_now(token, &req, answer.unwrap_or(reply::NO_BACKEND));
    }

    /// `CLUSTER COUNTKEYSINSLOT|GETKEYSINSLOT slot ...`: to the master of that slot.
    fn forward_to_slot(&mut self, token: usize, req: Request) {
        let slot = req.arg(2).and_then(crate::resp::parse_i64);
        let slot = slot.and_then(|s| usize::try_from(s).ok());
        let home = slot
            .zip(self.ups.keymap.as_ref())
            .map(|(s, m)| m.slot_home(s));
        let master = match home {
            Some(Home::Shard(s)) => self.ups.master_for(s).ok(),
            _ => None,
        };
        let Some(master) = master else {
            // Invalid slot, or not served: the node's own answer comes from any master.
            return self.forward(token, req);
        };
        let u = Upstream::shard(master);
        let resp3 = self.conns.client(token).is_some_and(|c| c.resp3);
        let conn_slot = self.ups.get(u).slot_for(token, resp3);
        self.forward_to(token, req, u, conn_slot);
    }

    /// The live shard at `addr` (`host:port`).
    fn shard_at(&self, addr: &str) -> Option<usize> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().ok()?.collect();
        let shards = self.ups.shards.iter().enumerate();
        let mut live = shards.filter(|(_, s)| !s.retired);
        live.find(|(_, s)| addrs.contains(&s.addr)).map(|(i, _)| i)
    }

    /// Asks a node for the slot table at its next probe round, now, unless one was asked for
    /// less than `REFRESH_GAP` ago (a redirect, a node gone down: a replica may be taking over).
    pub(super) fn refresh_cluster_now(&mut self) {
        if !self.ups.cluster || self.now < self.next_cluster_refresh {
            return;
        }
        self.next_cluster_refresh = self.now + REFRESH_GAP;
        let now = self.now;
        let masters = self
            .ups
            .shards
            .iter_mut()
            .filter(|s| !s.retired && s.health.up);
        if let Some(node) = masters.min_by_key(|s| s.next_probe) {
            node.next_probe = now;
        }
    }
}

/// A request waiting for its slot to be served again.
#[derive(Debug)]
pub(super) struct Waiting {
    origin: Origin,
    req: Request,
}

/// At most one early slot-table refresh per this long (many redirects arrive at once when a
/// slot moves under load).
const REFRESH_GAP: std::time::Duration = std::time::Duration::from_millis(100);
