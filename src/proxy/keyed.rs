//! Routing by key: what the backends refuse (twemproxy closes its connection on anything outside
//! its dialect, `command::fit`) runs on a shard master instead — the one that holds its keys,
//! placed by the backends' own rule (`keymap/`), or for a keyless command any healthy master.
//!
//! ```text
//!  refused request ─▶ keys (key specs) ─▶ KeyMap::home each ─▶ one shard? ─▶ its master now
//!        keyless ─▶ any_master                  two shards ─▶ -CROSSSLOT, nothing runs
//! ```
//!
//! A key's requests must not overtake each other on their two paths (through a backend, or
//! straight to its master): a client's request that changes path waits until its earlier
//! requests are answered (`Path`, checked in `ingress`).

use super::Proxy;
use crate::backend::Origin;
use crate::client::Mode;
use crate::command::{fit, CommandId, Fit, Route, Session};
use crate::fanout::split;
use crate::health::Tier;
use crate::keymap::Home;
use crate::request::Request;
use crate::resp::{self, reply};
use crate::resp::{Frame, FrameError};
use crate::upstream::Upstream;
use bytes::Bytes;

/// The way a client's request travels: through the backends, or straight to a shard master.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Path {
    #[default]
    Backends,
    Shards,
}

impl Proxy {
    /// True if the request in `frame` would take the other path than the client's requests
    /// in flight: it must wait for them. Only behind twemproxy with shards are there two.
    pub(super) fn changes_path(
        &self,
        token: usize,
        frame: &Result<Option<Frame>, FrameError>,
        id: Option<CommandId>,
    ) -> bool {
        let cluster = self.ups.cluster;
        if !cluster
            && (!self.ups.have_shards()
                || !matches!(self.ups.tier, Some(Tier::Twemproxy | Tier::Codis)))
        {
            return false;
        }
        let (Some(c), Ok(Some(frame)), Some(id)) = (self.conns.client(token), frame, id) else {
            return false;
        };
        // Inside a transaction (or any mode) requests follow the mode, not a path.
        if c.pending.waiting() == 0 || c.mode != Mode::Normal {
            return false;
        }
        if cluster {
            // In front of a Redis Cluster there is one path, but a request routed by a newer
            // key map must not overtake requests routed by the old one (they may come back
            // MOVED and be sent after it), and a split request goes over other connections.
            if c.map_epoch != self.ups.map_epoch || c.waiting_for_cluster > 0 {
                return true;
            }
            if !split::splits(self.commands.spec(id).name) {
                return false;
            }
        }
        let bytes = match frame {
            Frame::Inline { args, .. } => resp::encode_request(args),
            frame => Bytes::copy_from_slice(&c.rbuf[..frame.consumed()]),
        };
        let req = Request::new(bytes, Some(id), 0);
        if cluster {
            let map = self.ups.keymap.as_ref();
            return map
                .is_some_and(|m| split::split(&req, |k| m.cluster_slot(k).unwrap_or(0)).is_some());
        }
        self.path_of(&req) != c.path
    }

    /// The path `req` takes.
    pub(super) fn path_of(&self, req: &Request) -> Path {
        match fit(self.ups.tier, req) {
            Fit::Refuse(_) if self.ups.have_shards() => Path::Shards,
            _ => Path::Backends,
        }
    }

    /// Sends a request the backends refuse (with `refusal`) to the shard master that can run
    /// it, or answers why none can.
    pub(super) fn forward_refused(&mut self, token: usize, req: Request, refusal: &str) {
        let req = if self.ups.cluster {
            let Some(req) = self.split_across_slots(token, req) else {
                return;
            };
            if let Some(c) = self.conns.client_mut(token) {
                c.map_epoch = self.ups.map_epoch;
            }
            req
        } else {
            req
        };
        match self.shard_for(&req, refusal) {
            Err(answer) if self.waits_for_cluster(&answer) => self.wait_for_cluster(token, req),
            Ok(shard) => {
                if let Some(c) = self.conns.client_mut(token) {
                    c.path = Path::Shards;
                }
                let resp3 = self.conns.client(token).is_some_and(|c| c.resp3);
                let u = Upstream::shard(shard);
                let slot = self.ups.get(u).slot_for(token, resp3);
                self.forward_to(token, req, u, slot);
            }
            Err(answer) => self.reply_now(token, &req, answer),
        }
    }

    /// The shard master for a request the backends refuse: the one serving its keys, or any
    /// master for a keyless one; else the error to answer.
    pub(super) fn shard_for(&self, req: &Request, refusal: &str) -> Result<usize, Bytes> {
        if self.ups.cluster && self.ups.keymap.is_none() {
            return Err(resp::error(
                "CLUSTERDOWN respite has not read the cluster's slot table yet",
            ));
        }
        if !self.ups.have_shards() && self.config.codis {
            return Err(resp::error(&format!(
                "{refusal}, and no group master is known yet (respite reads them from the \
                 codis-proxies' slot table)"
            )));
        }
        if !self.ups.have_shards() {
            let hint = if req.keys().is_empty() {
                "--shards"
            } else {
                "--shards and --twemproxy-config"
            };
            return Err(resp::error(&format!(
                "{refusal}; give {hint} to run it on the shards"
            )));
        }
        if self.ups.keymap.is_none() && !req.keys().is_empty() {
            let hint = match self.ups.tier {
                Some(Tier::Codis) => "--codis to route it to the group masters",
                _ => "--twemproxy-config to route it to the shards",
            };
            return Err(resp::error(&format!("{refusal}; give {hint}")));
        }
        match self.key_master(req)? {
            Some(master) => Ok(master),
            None => self.ups.any_master().ok_or_else(|| resp::error(NO_MASTER)),
        }
    }

    /// The shard master serving the keys of `req` (`None`: it has none, or no key map is
    /// known); the error to answer if they live on two masters, or where none serves them.
    pub(super) fn key_master(&self, req: &Request) -> Result<Option<usize>, Bytes> {
        let Some(map) = &self.ups.keymap else {
            return Ok(None);
        };
        let mut home = None;
        let mut slot = None;
        for key in req.keys() {
            // Redis Cluster wants every key of a request in one slot, not only on one master.
            let placed = match map.cluster_slot(key) {
                Some(s) if slot.is_some_and(|first| first != s) => {
                    return Err(resp::error(CROSS_SLOT))
                }
                Some(s) => {
                    slot = Some(s);
                    map.slot_home(s)
                }
                None => map.home(key),
            };
            let shard = match placed {
                Home::Shard(s) => s,
                Home::Any => return Err(resp::error(NO_HOME)),
                Home::Missing(server) => {
                    return Err(resp::error(&format!(
                        "ERR the key {} lives on {server}, which is not among the shards",
                        String::from_utf8_lossy(key)
                    )))
                }
                Home::Unserved(slot) => {
                    return Err(resp::error(&format!(
                        "CLUSTERDOWN Hash slot {slot} is not served"
                    )))
                }
            };
            if home.is_some_and(|h| h != shard) {
                return Err(resp::error(CROSS_SHARD));
            }
            home = Some(shard);
        }
        home.map(|shard| self.ups.master_for(shard))
            .transpose()
            .map_err(|why| resp::error(&format!("ERR {why}")))
    }

    /// True when sessions (transactions, blocking commands) go to the shard master of their
    /// keys: behind twemproxy with its pool, or Codis with its slot table.
    pub(super) fn routes_by_key(&self) -> bool {
        let tier = self.ups.tier;
        matches!(tier, Some(Tier::Twemproxy | Tier::Codis | Tier::Cluster))
            && self.ups.keymap.is_some()
    }

    /// MULTI behind twemproxy, outside WATCH: answered at once, as Redis answers it, and held
    /// (with the keyless requests after it) until a key chooses the master it runs on.
    pub(super) fn hold_multi(&mut self, token: usize, req: Request) {
        if let Some(c) = self.conns.client_mut(token) {
            c.mode = Mode::Multi;
            c.queued.clear();
            c.txn_head = vec![req.bytes.clone()];
        }
        self.reply_now(token, &req, reply::OK);
    }

    /// Inside WATCH or MULTI behind twemproxy: keeps the transaction on one master. Returns the
    /// request if the session's usual handling applies to it, `None` if it was dealt with
    /// here; with `Err`, normal routing applies (a command for another master while watching).
    pub(super) fn pin_by_key(
        &mut self,
        token: usize,
        route: Route,
        req: Request,
    ) -> Result<Option<Request>, Request> {
        let Some(c) = self.conns.client(token) else {
            return Ok(None);
        };
        let multi = c.mode == Mode::Multi;
        // A held transaction has no master yet, whatever session the client had before.
        let live = c.session.filter(|s| self.conns.is_live(s.conn));
        let target = live.filter(|_| c.txn_head.is_empty()).map(|s| s.target);
        let ends = matches!(route, Route::Session(Session::Exec | Session::Discard));
        let home = match self.key_master(&req) {
            Ok(home) => home.map(Upstream::shard),
            Err(answer) => {
                self.reply_now(token, &req, answer);
                if multi {
                    self.abort_txn(token);
                }
                return Ok(None);
            }
        };
        match (home, target) {
            (Some(home), Some(target)) if home != target => {
                if !multi && route != Route::Session(Session::Watch) {
                    return Err(req);
                }
                self.reply_now(token, &req, resp::error(CROSS_SHARD));
                if multi {
                    self.abort_txn(token);
                }
                Ok(None)
            }
            (Some(home), None) => Ok(self.start_held_txn(token, home, req)),
            (None, None) if multi && ends => {
                let Some(master) = self.ups.any_master() else {
                    self.reply_now(token, &req, resp::error(NO_MASTER));
                    self.abort_txn(token);
                    return Ok(None);
                };
                Ok(self.start_held_txn(token, Upstream::shard(master), req))
            }
            (None, None) if multi => {
                // Keyless, before any key: queued as Redis queues it, held after MULTI.
                if let Some(c) = self.conns.client_mut(token) {
                    if c.resp3 {
                        c.queued.push(crate::resp3::shape_for(&req));
                    }
                    c.txn_head.push(req.bytes.clone());
                }
                self.reply_now(token, &req, reply::QUEUED);
                Ok(None)
            }
            _ => Ok(Some(req)),
        }
    }

    /// Opens the held transaction's session to `target` and sends what was held, then
    /// returns `req` (its first keyed request, or EXEC) to be sent after it; if no connection
    /// can be had, `req` gets the error and the transaction is over.
    fn start_held_txn(&mut self, token: usize, target: Upstream, req: Request) -> Option<Request> {
        let held = self
            .conns
            .client_mut(token)
            .map(|c| std::mem::take(&mut c.txn_head));
        // A session from before (MULTI waited for its requests: it is idle) is kept if it goes
        // to the same master.
        let before = self.conns.client(token).and_then(|c| c.session);
        let reuse = before.filter(|s| s.target == target && self.conns.is_live(s.conn));
        let conn = match reuse {
            Some(s) => Ok(s.conn.token),
            None => {
                if before.is_some() {
                    self.close_session_of(token);
                }
                self.connect_session(token, target, false)
            }
        };
        match conn {
            Ok(conn) => {
                for bytes in held.unwrap_or_default() {
                    self.enqueue(conn, Origin::Quiet, bytes);
                }
                Some(req)
            }
            Err(answer) => {
                self.reply_now(token, &req, answer.clone());
                if req
                    .spec()
                    .is_some_and(|s| s.name == "EXEC" || s.name == "DISCARD")
                {
                    self.set_mode(token, Mode::Normal);
                } else {
                    self.set_broken(token, answer, LOST_TXN);
                }
                None
            }
        }
    }

    /// A command could not join the transaction: it is discarded on its master (a held one is
    /// dropped: its requests were answered already), and EXEC will say so.
    fn abort_txn(&mut self, token: usize) {
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        let held = std::mem::take(&mut c.txn_head);
        let session = c
            .session
            .filter(|s| held.is_empty() && self.conns.is_live(s.conn));
        if let Some(s) = session {
            self.enqueue(s.conn.token, Origin::Quiet, Bytes::from_static(DISCARD));
        }
        self.set_broken(token, reply::QUEUED, ABORTED_TXN);
    }

    fn set_broken(&mut self, token: usize, each: Bytes, exec: &'static str) {
        self.set_mode(token, Mode::BrokenTxn { each, exec });
    }
}

const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
const ABORTED_TXN: &str = "EXECABORT Transaction discarded because of previous errors.";
const LOST_TXN: &str = "EXECABORT Transaction discarded because its backend connection was lost.";
const NO_MASTER: &str = "ERR no shard master is available";

/// The answer to a request whose keys live on different shard masters.
pub(super) const CROSS_SHARD: &str =
    "CROSSSLOT Keys in request don't hash to the same shard master (respite sends what the \
     backends refuse to the master that holds all its keys; use {hash tags})";

/// Redis Cluster's answer to a request whose keys are in different slots.
pub(super) const CROSS_SLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// The answer to a keyed request when the backends place keys at random.
const NO_HOME: &str = "ERR the twemproxy pool's distribution is random: keys have no home \
                       shard to run this command on";
