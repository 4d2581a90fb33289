//! In front of a Redis Cluster (`--cluster`): following a node's redirects so that clients never
//! see them. A `-MOVED` moves the slot in the key map for good (and asks a node for the whole
//! table at once); an `-ASK` sends `ASKING` and the request to the importing node, once. Either
//! way the request is sent again with the origin it had, so its reply fills the same slot and
//! the client's replies keep their order. Multi-key commands whose keys span slots are split
//! per slot and merged (`split_across_slots`, `fanout/split.rs`).
//!
//! ```text
//!  shard reply -MOVED s addr ─▶ key map: s ─▶ addr ─▶ re-send there (at most MAX_REDIRECTS)
//!              -ASK s addr   ─▶ ASKING + re-send there
//! ```

use super::Proxy;
use crate::backend::Origin;
use crate::conns::ConnRef;
use crate::fanout::{split, Fanout};
use crate::keymap::cluster::{parse_redirect, Redirect};
use crate::request::Request;
use crate::resp;
use crate::upstream::Upstream;
use bytes::Bytes;
use log::debug;
use std::net::{SocketAddr, ToSocketAddrs};

/// Redirects followed for one request before its last one is passed on to the client (a slot
/// moving back and forth, or nodes that disagree).
const MAX_REDIRECTS: u8 = 5;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

impl Proxy {
    /// Follows the redirect in `frame`, the reply to `origin` from a shared shard connection,
    /// if it is one that can be followed; returns true if it was (the reply is then dropped).
    pub(super) fn follow_redirect(&mut self, origin: Origin, frame: &[u8]) -> bool {
        let Some(redirect) = parse_redirect(frame) else {
            return false;
        };
        let Some(shard) = self.shard_at(&redirect.addr) else {
            // A node respite does not know yet: the next slot table will name it.
            self.refresh_cluster_now();
            return false;
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
                let most = MAX_REDIRECTS.saturating_mul(u8::try_from(f.requests.len()).ok()?);
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
        let map = self.ups.keymap.as_ref()?;
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

/// At most one early slot-table refresh per this long (many redirects arrive at once when a
/// slot moves under load).
const REFRESH_GAP: std::time::Duration = std::time::Duration::from_millis(100);
