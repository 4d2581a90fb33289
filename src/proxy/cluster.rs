//! In front of a Redis Cluster (`--cluster`): following a node's redirects so that clients never
//! see them. A `-MOVED` moves the slot in the key map for good (and asks a node for the whole
//! table at once); an `-ASK` sends `ASKING` and the request to the importing node, once. Either
//! way the request is sent again with the origin it had, so its reply fills the same slot and
//! the client's replies keep their order.
//!
//! ```text
//!  shard reply -MOVED s addr ─▶ key map: s ─▶ addr ─▶ re-send there (at most MAX_REDIRECTS)
//!              -ASK s addr   ─▶ ASKING + re-send there
//! ```

use super::Proxy;
use crate::backend::Origin;
use crate::conns::ConnRef;
use crate::keymap::cluster::{parse_redirect, Redirect};
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
        let Origin::Client {
            token,
            gen,
            seq,
            n: 1,
        } = origin
        else {
            return false;
        };
        let Some(shard) = self.shard_at(&redirect.addr) else {
            // A node respite does not know yet: the next slot table will name it.
            self.refresh_cluster_now();
            return false;
        };
        // Only for the client that sent it, not one that took its place since.
        let Some(c) = self.conns.live_client_mut(ConnRef { token, gen }) else {
            return false;
        };
        let resp3 = c.resp3;
        let Some(tag) = c.pending.waiting_tag_mut(seq) else {
            return false;
        };
        if tag.redirects >= MAX_REDIRECTS {
            return false;
        }
        tag.redirects += 1;
        let req = tag.req.clone();
        let Redirect { ask, slot, addr } = redirect;
        debug!(
            "client={token} seq={seq} {} slot {slot} to {addr}",
            if ask { "ASK" } else { "MOVED" }
        );
        if ask {
            self.stats.cluster_asks += 1;
        } else {
            self.stats.cluster_moves += 1;
            if let Some(map) = &mut self.ups.keymap {
                map.move_slot(slot, &addr, shard);
            }
            self.refresh_cluster_now();
        }
        let u = Upstream::shard(shard);
        let conn_slot = self.ups.get(u).slot_for(token, resp3);
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
