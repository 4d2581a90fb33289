//! Session connections: transactions and blocking commands on a backend connection owned by one
//! client (pub/sub, the other user of sessions, is in `pubsub.rs`).
//!
//! ```text
//!  WATCH/MULTI ──▶ Watching/Multi: every request ──▶ session conn ─▶ EXEC/DISCARD/UNWATCH: Normal
//!  BLPOP...    ──▶ session conn (reused while the client keeps blocking; later requests wait)
//! ```
//!
//! A session connection is a `BackendConn` with an `owner`: it is never shared, never re-routed,
//! and exempt from request timeouts (a blocking command waits as long as it asks to); a backend
//! that its probe ejects fails its sessions. Its failure never ejects the backend (twemproxy
//! closes the connection on MULTI: that is the command's fault, not the backend's). If it breaks,
//! what was in flight gets an error, a transaction is over (later commands get an error until
//! EXEC/DISCARD), and a subscriber is disconnected so its library re-subscribes. Session commands
//! are barriers in the client's stream (`route.rs`), so a connection of its own never overtakes
//! the client's earlier requests on a shared one.

use super::forward::tag_of;
use super::Proxy;
use crate::client::{Mode, Session as ClientSession};
use crate::command::{fit, Fit, Local, Route, Session};
use crate::conns::{Conn, ConnRef};
use crate::pending::Tag;
use crate::request::Request;
use crate::resp::{self, reply};
use crate::upstream::Upstream;
use bytes::Bytes;
use log::debug;

impl Proxy {
    /// Handles a request while the client is not in `Mode::Normal`. Returns the request back
    /// if normal routing applies to it.
    pub(super) fn dispatch_in_mode(
        &mut self,
        token: usize,
        route: Route,
        req: Request,
    ) -> Option<Request> {
        let c = self.conns.client(token)?;
        match &c.mode {
            Mode::Subscribed => self.dispatch_subscribed(token, route, req),
            Mode::BrokenTxn { each, exec } => {
                let (each, exec) = (each.clone(), *exec);
                self.dispatch_broken_txn(token, route, req, each, exec)
            }
            Mode::Watching | Mode::Multi => self.dispatch_pinned(token, route, req),
            Mode::Normal | Mode::Streaming(_) => Some(req),
        }
    }

    /// Inside WATCH or MULTI: everything goes to the session connection but the connection's
    /// own commands, answered here, and what leaves the transaction.
    fn dispatch_pinned(&mut self, token: usize, route: Route, req: Request) -> Option<Request> {
        let next = match route {
            Route::Local(
                Local::Quit
                | Local::Reset
                | Local::Auth
                | Local::Hello
                | Local::Client
                | Local::Select
                | Local::Info,
            )
            | Route::Session(Session::Subscribe | Session::Monitor) => return Some(req),
            Route::Session(Session::Exec | Session::Discard) => Some(Mode::Normal),
            Route::Session(Session::Unwatch) => self
                .conns
                .client(token)
                .is_some_and(|c| c.mode == Mode::Watching)
                .then_some(Mode::Normal),
            Route::Session(Session::Multi) => Some(Mode::Multi),
            _ => None,
        };
        let req = if self.routes_by_key() {
            match self.pin_by_key(token, route, req) {
                Ok(Some(req)) => req,
                Ok(None) => return None,
                Err(req) => return Some(req),
            }
        } else {
            req
        };
        let c = self.conns.client_mut(token)?;
        let mut tag = tag_of(&req, c.resp3);
        if c.resp3 && c.mode == Mode::Multi {
            match route {
                Route::Session(Session::Exec) => {
                    tag.exec = Some(std::mem::take(&mut c.queued).into_boxed_slice());
                }
                // Not queued: Redis answers these at once.
                Route::Session(Session::Discard | Session::Multi | Session::Watch) => {}
                _ => c.queued.push(tag.shape),
            }
        }
        if let Some(mode) = next {
            if mode == Mode::Multi && c.mode != Mode::Multi {
                c.queued.clear();
            }
            c.mode = mode;
        }
        self.send_session_as(token, req, tag);
        None
    }

    /// After the transaction broke: every request gets `each` until EXEC (answered `exec`) or
    /// DISCARD.
    fn dispatch_broken_txn(
        &mut self,
        token: usize,
        route: Route,
        req: Request,
        each: Bytes,
        exec: &'static str,
    ) -> Option<Request> {
        let (ends, answer) = match route {
            Route::Session(Session::Exec) => (true, resp::error(exec)),
            Route::Session(Session::Discard) => (true, reply::OK),
            Route::Local(Local::Quit | Local::Reset) => {
                self.set_mode(token, Mode::Normal);
                return Some(req);
            }
            _ => (false, each),
        };
        if ends {
            self.set_mode(token, Mode::Normal);
        }
        self.reply_now(token, &req, answer);
        None
    }

    pub(super) fn set_mode(&mut self, token: usize, mode: Mode) {
        if let Some(c) = self.conns.client_mut(token) {
            c.mode = mode;
        }
    }

    /// Routes a session command for a client in `Mode::Normal`.
    pub(super) fn dispatch_session(&mut self, token: usize, which: Session, req: Request) {
        match which {
            Session::Multi if self.routes_by_key() => self.hold_multi(token, req),
            Session::Multi | Session::Watch => {
                let mode = if which == Session::Multi {
                    Mode::Multi
                } else {
                    Mode::Watching
                };
                self.set_mode(token, mode);
                if let Some(c) = self.conns.client_mut(token) {
                    c.queued.clear();
                }
                if !self.send_session(token, req) {
                    self.set_mode(token, Mode::Normal);
                }
            }
            // Without a transaction these are answered by any backend exactly as Redis would
            // ("EXEC without MULTI", "+OK"), and never leave state on a shared connection.
            Session::Exec | Session::Discard | Session::Unwatch => self.forward(token, req),
            Session::Blocking => {
                self.send_session(token, req);
            }
            Session::Subscribe => self.subscribe(token, req),
            Session::Unsubscribe => self.unsubscribe_unsubscribed(token, req),
            Session::Publish => self.publish(token, req),
            Session::Monitor => self.reply_now(
                token,
                &req,
                resp::error(
                    "ERR MONITOR is not supported by respite; run it against a backend directly",
                ),
            ),
        }
    }

    /// Sends a request with a reply slot on the client's session connection to a backend
    /// (opened on demand). Returns false (after answering the client with an error) if none
    /// could be had.
    pub(super) fn send_session(&mut self, token: usize, req: Request) -> bool {
        let Some(c) = self.conns.client(token) else {
            return false;
        };
        let tag = tag_of(&req, c.resp3);
        self.send_session_as(token, req, tag)
    }

    /// `send_session` with the slot tagged `tag`.
    fn send_session_as(&mut self, token: usize, req: Request, tag: Tag) -> bool {
        let Some(conn) = self.open_session(token, &req, false) else {
            return false;
        };
        let Some(origin) = self.take_slot(token, tag) else {
            return false;
        };
        self.enqueue(conn, origin, req.bytes);
        true
    }

    /// The client's session connection, opened to a fresh pick (or the pub/sub target) if it
    /// has none or has one to another target. On failure the client gets an error reply for
    /// `req` and `None`.
    pub(super) fn open_session(
        &mut self,
        token: usize,
        req: &Request,
        pubsub: bool,
    ) -> Option<usize> {
        let existing = self.conns.client(token)?.session;
        let live = existing.filter(|s| self.conns.is_live(s.conn));
        // Routed by key, a keyed request's session goes to its key's master, whatever master
        // the client's session went to before (it is idle: session commands are barriers).
        let home = (!pubsub && !req.keys().is_empty())
            .then(|| self.master_for_refused(req))
            .flatten();
        let subscribed = self.conns.client(token)?.mode == Mode::Subscribed;
        let target = if pubsub && self.ups.cluster && !req.keys().is_empty() {
            // Shard channels (SSUBSCRIBE) live in their slot's master.
            let master = self
                .key_master(req)
                .and_then(|m| m.ok_or(reply::NO_BACKEND));
            let target = master.map(Upstream::shard);
            match (target, live) {
                (Ok(t), Some(s)) if s.target == t => return Some(s.conn.token),
                (Ok(t), Some(s)) if subscribed => return self.shard_sub_conn(token, t, s, req),
                (t, _) => t,
            }
        } else if pubsub && self.ups.cluster && subscribed && live.is_some() {
            // Channels and patterns: any node of the cluster hears every publish.
            return live.map(|s| s.conn.token);
        } else if pubsub {
            self.ups
                .pubsub_target()
                .ok_or_else(|| resp::error("ERR no pub/sub target available"))
        } else if let Some(home) = home {
            home
        } else if let Some(s) = live {
            return Some(s.conn.token);
        } else if let Some(s) = existing {
            Ok(s.target)
        } else {
            self.session_target(req)
        };
        let target = match target {
            Ok(u) => u,
            Err(answer) => {
                self.reply_now(token, req, answer);
                return None;
            }
        };
        if let Some(refusal) = self.backends_refuse(target, req) {
            self.reply_now(token, req, refusal);
            return None;
        }
        if let Some(s) = existing {
            if s.target == target && live.is_some() {
                return Some(s.conn.token);
            }
            self.close_session_of(token);
        }
        match self.connect_session(token, target, false) {
            Ok(conn) => Some(conn),
            Err(answer) => {
                self.reply_now(token, req, answer);
                None
            }
        }
    }

    /// The subscribed connection of client `token` to master `target`, other than its session
    /// `main`: for SSUBSCRIBE, the one it has or a new one; for SUNSUBSCRIBE, the one it has,
    /// else `main` (which answers that nothing is subscribed).
    fn shard_sub_conn(
        &mut self,
        token: usize,
        target: Upstream,
        main: ClientSession,
        req: &Request,
    ) -> Option<usize> {
        let c = self.conns.client(token)?;
        let have = c.shard_subs.iter().find(|s| s.target == target);
        if let Some(s) = have.filter(|s| self.conns.is_live(s.conn)) {
            return Some(s.conn.token);
        }
        if req.spec().is_none_or(|s| s.name != "SSUBSCRIBE") {
            return Some(main.conn.token);
        }
        let limit = self.config.max_session_connections;
        if self.ups.get(target).sessions >= limit {
            let label = &self.ups.get(target).label;
            let answer = format!("ERR max session connections ({limit}) reached for shard {label}");
            self.reply_now(token, req, resp::error(&answer));
            return None;
        }
        let owner = self.conns.at(token);
        match self.open_data_conn(target, 0, owner) {
            Ok(conn) => {
                self.ups.get_mut(target).sessions += 1;
                if let Some(bc) = self.conns.backend_mut(conn.token) {
                    bc.subscribed = true;
                }
                if let Some(c) = self.conns.client_mut(token) {
                    c.shard_subs.retain(|s| s.target != target);
                    c.shard_subs.push(ClientSession {
                        conn,
                        target,
                        closing: false,
                    });
                }
                Some(conn.token)
            }
            Err(e) => {
                let label = &self.ups.get(target).label;
                let answer = resp::error(&format!("ERR shard {label} connection failed: {e}"));
                self.reply_now(token, req, answer);
                None
            }
        }
    }

    /// Where a new session for `req` goes: behind twemproxy with its pool, what it refuses goes
    /// to the master of its keys; anything else to a backend from the picker.
    fn session_target(&mut self, req: &Request) -> Result<Upstream, Bytes> {
        if let Some(master) = self.master_for_refused(req) {
            return master;
        }
        let picked = self.ups.pick(&mut self.picker);
        picked.map(Upstream::backend).ok_or(reply::NO_BACKEND)
    }

    /// Routed by key, the shard master for a request the backends refuse (or why there is
    /// none); `None` for a request they serve.
    fn master_for_refused(&self, req: &Request) -> Option<Result<Upstream, Bytes>> {
        if !self.routes_by_key() {
            return None;
        }
        match fit(self.ups.tier, req) {
            Fit::Refuse(refusal) => Some(self.shard_for(req, &refusal).map(Upstream::shard)),
            _ => None,
        }
    }

    /// Opens a session connection for client `token` to `target` and makes it the client's
    /// (`closing`: for one streamed request); returns its token, or the error reply if the
    /// target's session limit is reached or the connection cannot be started.
    pub(super) fn connect_session(
        &mut self,
        token: usize,
        target: Upstream,
        closing: bool,
    ) -> Result<usize, Bytes> {
        let limit = self.config.max_session_connections;
        let label = &self.ups.get(target).label;
        if self.ups.get(target).sessions >= limit {
            return Err(resp::error(&format!(
                "ERR max session connections ({limit}) reached for {} {label}",
                target.kind()
            )));
        }
        let owner = self.conns.at(token);
        let r = self.open_data_conn(target, 0, owner).map_err(|e| {
            let label = &self.ups.get(target).label;
            resp::error(&format!(
                "ERR {} {label} connection failed: {e}",
                target.kind()
            ))
        })?;
        self.ups.get_mut(target).sessions += 1;
        debug!(
            "client={token} session conn={} to {}={}",
            r.token,
            target.kind(),
            target.index
        );
        if let Some(c) = self.conns.client_mut(token) {
            c.session = Some(ClientSession {
                conn: r,
                target,
                closing,
            });
        }
        Ok(r.token)
    }

    /// Closes the client's session connection quietly (RESET, leaving subscribed mode, a
    /// streamed request answered, the client gone). Its pending requests, if any, are answered
    /// with an error.
    pub(super) fn close_session_of(&mut self, token: usize) {
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        let extra = std::mem::take(&mut c.shard_subs);
        let sessions = c.session.take().into_iter().chain(extra);
        for s in sessions.collect::<Vec<_>>() {
            if self.conns.is_live(s.conn) {
                self.drop_session_conn(s.conn.token, None);
            }
        }
    }

    /// Removes a session connection; what it had in flight or queued gets an error. With
    /// `lost`, the connection failed, and its owner learns it (`session_lost`).
    pub(super) fn drop_session_conn(&mut self, conn: usize, lost: Option<Bytes>) {
        let Some(Conn::Backend(mut bc)) = self.remove(conn) else {
            return;
        };
        let waiters = std::mem::take(&mut bc.waiters);
        self.release_waiters(waiters);
        let be = self.ups.get_mut(bc.upstream);
        be.sessions = be.sessions.saturating_sub(1);
        let Some(owner) = bc.owner else {
            return;
        };
        let error = lost
            .clone()
            .unwrap_or_else(|| resp::error("ERR session connection closed"));
        self.fail_all(bc.pipe.drain(), &error);
        let Some(c) = self.conns.live_client_mut(owner) else {
            return;
        };
        if c.session.is_some_and(|s| s.conn.token == conn) {
            c.session = None;
        }
        c.shard_subs.retain(|s| s.conn.token != conn);
        if let Some(lost) = lost {
            self.session_lost(owner, lost);
        }
    }

    /// The session of `owner` failed with `lost`: a streamed request fails (and the client,
    /// whose stream now has a hole, is closed once it has its answer), a transaction is over, a
    /// subscriber is disconnected so that its library re-subscribes.
    fn session_lost(&mut self, owner: ConnRef, lost: Bytes) {
        let Some(c) = self.conns.live_client_mut(owner) else {
            return;
        };
        match std::mem::replace(&mut c.mode, Mode::Normal) {
            Mode::Streaming(origin) => {
                c.close_after_flush = true;
                c.rbuf.clear();
                self.complete(origin, lost);
            }
            Mode::Multi => {
                let text = String::from_utf8_lossy(&lost[1..lost.len() - 2]).into_owned();
                c.mode = Mode::BrokenTxn {
                    each: resp::error(&format!("{text}; the transaction was aborted")),
                    exec:
                        "EXECABORT Transaction discarded because its backend connection was lost.",
                };
            }
            Mode::Subscribed => self.close_client(owner.token, "pub/sub connection lost"),
            Mode::Watching | Mode::Normal | Mode::BrokenTxn { .. } => {}
        }
    }

    /// Counts for INFO: clients blocked on a session, and subscribed clients.
    pub(super) fn session_counts(&self) -> (usize, usize) {
        let (mut blocked, mut subscribed) = (0, 0);
        for (_, c) in self.conns.clients() {
            if c.subscribed() {
                subscribed += 1;
                continue;
            }
            let Some(s) = c.session.filter(|s| !s.closing && c.mode == Mode::Normal) else {
                continue;
            };
            if self
                .conns
                .live_backend(s.conn)
                .is_some_and(|bc| bc.pipe.in_flight() > 0)
            {
                blocked += 1;
            }
        }
        (blocked, subscribed)
    }
}
