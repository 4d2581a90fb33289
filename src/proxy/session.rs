//! Session connections: transactions, blocking commands and pub/sub, each on a backend
//! connection owned by one client.
//!
//! ```text
//!  WATCH/MULTI ──▶ pinned: every request ──▶ session conn ──▶ EXEC/DISCARD/UNWATCH: unpinned
//!  BLPOP...    ──▶ session conn (reused while the client keeps blocking; later requests wait)
//!  SUBSCRIBE   ──▶ session conn to the pub/sub target, subscribed mode: every frame streams to
//!                  the client until an UNSUBSCRIBE brings the count to 0
//! ```
//!
//! A session connection is a `BackendConn` with an `owner`: it is never shared, never re-routed,
//! and exempt from request timeouts (a blocking command waits as long as it asks to); a backend
//! that its probe ejects fails its sessions. Its failure never ejects the backend (twemproxy
//! closes the connection on MULTI: that is the command's fault, not the backend's). If it breaks,
//! what was in flight gets an error, a transaction is over (later commands get an error until
//! EXEC/DISCARD), and a subscriber is disconnected so its library re-subscribes. Session commands
//! are barriers in the client's stream (see `fanout.rs`), so a connection of its own never
//! overtakes the client's earlier requests on a shared one.

use super::Proxy;
use crate::backend::Origin;
use crate::command::{Local, Route, Session};
use crate::conns::Conn;
use crate::conns::ConnRef;
use crate::resp;
use crate::upstream::Upstream;
use bytes::{Bytes, BytesMut};
use log::debug;

impl Proxy {
    /// Handles a request while the client is subscribed, pinned in a transaction, or has a
    /// transaction broken by its session. Returns the request back if normal routing applies.
    pub(crate) fn dispatch_in_session(
        &mut self,
        token: usize,
        route: Route,
        req: Bytes,
        cmd: &str,
    ) -> Option<Bytes> {
        let c = self.conns.client(token)?;
        if c.subscribed {
            // (In RESP3, PING is an ordinary command too: Redis answers it with +PONG.)
            let ordinary = !matches!(
                route,
                Route::Session(Session::Subscribe | Session::Unsubscribe)
                    | Route::Local(Local::Quit | Local::Reset)
            );
            if c.resp3 && ordinary {
                // RESP3 allows any command on a subscribed connection: it takes the ordinary
                // path while the subscription keeps streaming pushes.
                return Some(req);
            }
            match route {
                Route::Session(Session::Subscribe | Session::Unsubscribe) | Route::Local(Local::Ping) => {
                    let unsub = matches!(route, Route::Session(Session::Unsubscribe));
                    self.send_push(token, req, unsub);
                }
                Route::Local(Local::Quit | Local::Reset) => return Some(req),
                _ => self.reply_now(
                    token,
                    resp::error(&format!(
                        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                        cmd.to_ascii_lowercase()
                    )),
                ),
            }
            return None;
        }
        if let Some(err) = c.txn_broken.clone() {
            match route {
                Route::Session(Session::Exec) => {
                    self.end_broken_txn(token);
                    self.reply_now(
                        token,
                        resp::error("EXECABORT Transaction discarded because its backend connection was lost."),
                    );
                }
                Route::Session(Session::Discard) => {
                    self.end_broken_txn(token);
                    self.reply_now(token, resp::reply::OK);
                }
                Route::Local(Local::Quit | Local::Reset) => {
                    self.end_broken_txn(token);
                    return Some(req);
                }
                _ => self.reply_now(token, resp::error(&err)),
            }
            return None;
        }
        if !c.pinned {
            return Some(req);
        }
        let in_multi = c.in_multi;
        match route {
            Route::Local(
                Local::Quit
                | Local::Reset
                | Local::Auth
                | Local::Hello
                | Local::Client
                | Local::Select
                | Local::Info,
            ) => return Some(req),
            Route::Session(Session::Exec | Session::Discard) => {
                if let Some(c) = self.conns.client_mut(token) {
                    c.pinned = false;
                    c.in_multi = false;
                }
            }
            Route::Session(Session::Unwatch) if !in_multi => {
                if let Some(c) = self.conns.client_mut(token) {
                    c.pinned = false;
                }
            }
            Route::Session(Session::Multi) => {
                if let Some(c) = self.conns.client_mut(token) {
                    c.in_multi = true;
                }
            }
            Route::Session(Session::Subscribe) | Route::Session(Session::Monitor) => {
                return Some(req);
            }
            _ => {}
        }
        self.send_session(token, req, false);
        None
    }

    fn end_broken_txn(&mut self, token: usize) {
        if let Some(c) = self.conns.client_mut(token) {
            c.txn_broken = None;
        }
    }

    /// Routes a session command for a client that is not pinned nor subscribed.
    pub(crate) fn dispatch_session(&mut self, token: usize, which: Session, req: Bytes) {
        match which {
            Session::Multi | Session::Watch => {
                if let Some(c) = self.conns.client_mut(token) {
                    c.pinned = true;
                    c.in_multi = which == Session::Multi;
                }
                if !self.send_session(token, req, false) {
                    if let Some(c) = self.conns.client_mut(token) {
                        c.pinned = false;
                        c.in_multi = false;
                    }
                }
            }
            // Without a transaction these are answered by any backend exactly as Redis would
            // ("EXEC without MULTI", "+OK"), and never leave state on a shared connection.
            Session::Exec | Session::Discard | Session::Unwatch => self.forward(token, req),
            Session::Blocking => {
                self.send_session(token, req, false);
            }
            Session::Subscribe => {
                if self.open_session(token, true).is_some() {
                    if let Some(c) = self.conns.client_mut(token) {
                        c.subscribed = true;
                    }
                    self.send_push(token, req, false);
                }
            }
            Session::Unsubscribe => {
                // Not subscribed: answer as Redis does, one reply per channel with count 0.
                let args = resp::frame_args(&req);
                let kind = args[0].to_ascii_lowercase();
                let mut out = BytesMut::new();
                let channels: Vec<Option<&[u8]>> = if args.len() > 1 {
                    args[1..].iter().map(|a| Some(*a)).collect()
                } else {
                    vec![None]
                };
                let push = self.conns.client(token).is_some_and(|c| c.resp3);
                for ch in channels {
                    if push {
                        out.extend_from_slice(b">3\r\n");
                    } else {
                        resp::put_array_header(&mut out, 3);
                    }
                    resp::put_bulk(&mut out, &kind);
                    match ch {
                        Some(ch) => resp::put_bulk(&mut out, ch),
                        None => out.extend_from_slice(b"$-1\r\n"),
                    }
                    resp::put_integer(&mut out, 0);
                }
                self.reply_now(token, out.freeze());
            }
            Session::Publish => match self.ups.pubsub_target() {
                Some(u) => {
                    let resp3 = self.conns.client(token).is_some_and(|c| c.resp3);
                    let slot = self.ups.get(u).slot_for(token, resp3);
                    self.forward_to(token, req, u, slot);
                }
                None => self.reply_now(token, resp::error("ERR no pub/sub target available")),
            },
            Session::Monitor => self.reply_now(
                token,
                resp::error(
                    "ERR MONITOR is not supported by respite; run it against a backend directly",
                ),
            ),
        }
    }

    /// Sends a request with a reply slot on the client's session connection (opened on demand).
    /// Returns false (after answering the client with an error) if none could be had.
    pub(crate) fn send_session(&mut self, token: usize, req: Bytes, pubsub: bool) -> bool {
        let Some(conn) = self.open_session(token, pubsub) else {
            return false;
        };
        let Some(origin) = self.slot_origin(token) else {
            return false;
        };
        self.enqueue(conn, origin, req);
        true
    }

    /// Sends a request on the subscribed session connection; its answers stream to the client.
    fn send_push(&mut self, token: usize, req: Bytes, unsub: bool) {
        let Some(conn) = self.open_session(token, true) else {
            return;
        };
        if let Some(bc) = self.conns.backend_mut(conn) {
            bc.subscribed = true;
            bc.last_push_unsub = unsub;
        }
        self.enqueue(conn, Origin::Push, req);
    }

    /// The client's session connection, opened to a fresh pick (or the pub/sub target) if it has
    /// none or has one to another target. On failure the client gets an error reply and `None`.
    fn open_session(&mut self, token: usize, pubsub: bool) -> Option<usize> {
        let c = self.conns.client(token)?;
        let (existing, existing_target) = (c.session, c.session_target);
        let target = if pubsub {
            match self.ups.pubsub_target() {
                Some(u) => u,
                None => {
                    self.reply_now(token, resp::error("ERR no pub/sub target available"));
                    return None;
                }
            }
        } else if let (Some(r), Some(u)) = (existing, existing_target) {
            if self.conns.is_live(r) {
                return Some(r.token);
            }
            u
        } else {
            match self.ups.pick(&mut self.picker) {
                Some(b) => Upstream::backend(b),
                None => {
                    self.reply_now(token, resp::reply::NO_BACKEND);
                    return None;
                }
            }
        };
        if let Some(r) = existing {
            if existing_target == Some(target) && self.conns.is_live(r) {
                return Some(r.token);
            }
            self.close_session_of(token);
        }
        match self.connect_session(token, target) {
            Ok(conn) => Some(conn),
            Err(answer) => {
                self.reply_now(token, answer);
                None
            }
        }
    }

    /// Opens a session connection for client `token` to `target` and makes it the client's;
    /// returns its token, or the error reply if the target's session limit is reached or the
    /// connection cannot be started.
    pub(crate) fn connect_session(
        &mut self,
        token: usize,
        target: Upstream,
    ) -> Result<usize, Bytes> {
        let limit = self.config.max_session_connections;
        let label = &self.ups.get(target).label;
        if self.ups.get(target).sessions >= limit {
            return Err(resp::error(&format!(
                "ERR max session connections ({limit}) reached for {} {label}",
                target.kind()
            )));
        }
        let gen = self.conns.at(token).map_or(0, |r| r.gen);
        let r = self
            .open_data_conn(target, 0, Some(ConnRef { token, gen }))
            .map_err(|e| {
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
            c.session = Some(r);
            c.session_target = Some(target);
        }
        Ok(r.token)
    }

    /// Closes the client's session connection quietly (RESET, leaving subscribed mode, client
    /// gone). Its pending requests, if any, are answered with an error.
    pub(crate) fn close_session_of(&mut self, token: usize) {
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        let Some(r) = c.session.take() else {
            return;
        };
        c.session_target = None;
        if self.conns.is_live(r) {
            self.drop_session_conn(r.token, None);
        }
    }

    /// Removes a session connection. With `lost`, the failure is reported to its owner: what was
    /// in flight gets `lost`, a transaction is broken, a subscriber is disconnected.
    pub(crate) fn drop_session_conn(&mut self, conn: usize, lost: Option<Bytes>) {
        let Some(Conn::Backend(mut bc)) = self.remove(conn) else {
            return;
        };
        let waiters = std::mem::take(&mut bc.waiters);
        self.release_waiters(waiters);
        let u = bc.upstream;
        let be = self.ups.get_mut(u);
        be.sessions = be.sessions.saturating_sub(1);
        let Some(owner) = bc.owner else {
            return;
        };
        let lost = lost.unwrap_or_else(|| resp::error("ERR session connection closed"));
        let origins: Vec<Origin> = bc
            .inflight
            .drain(..)
            .map(|(o, _)| o)
            .chain(bc.unsent.drain(..).map(|(o, _)| o))
            .collect();
        for o in origins {
            self.complete(o, lost.clone());
        }
        let Some(c) = self.conns.live_client_mut(owner) else {
            return;
        };
        if c.session.is_some_and(|r| r.token == conn) {
            c.session = None;
            c.session_target = None;
        }
        c.stream_session = false;
        if let Some(origin) = c.streaming.take() {
            // Part of a request went out and the rest cannot follow it: the request fails, and
            // the client, whose stream now has a hole, is closed once it has its answer.
            c.close_after_flush = true;
            c.rbuf.clear();
            self.complete(origin, lost);
            return;
        }
        let Some(c) = self.conns.live_client_mut(owner) else {
            return;
        };
        if c.in_multi {
            let text = String::from_utf8_lossy(&lost[1..lost.len() - 2]).into_owned();
            c.txn_broken = Some(format!("{text}; the transaction was aborted"));
        }
        c.pinned = false;
        c.in_multi = false;
        if c.subscribed {
            c.subscribed = false;
            self.close_client(owner.token, "pub/sub connection lost");
        }
    }

    /// A frame from a subscribed session connection: straight to its owner. Returns true if the
    /// connection left subscribed mode and was closed.
    pub(crate) fn on_push_frame(&mut self, conn: usize, frame: Bytes) -> bool {
        let Some(bc) = self.conns.backend_mut(conn) else {
            return true;
        };
        bc.inflight.clear();
        let leave = bc.last_push_unsub && bc.unsent.is_empty() && unsubscribed_all(&frame);
        let Some(owner) = bc.owner else {
            return false;
        };
        let Some(c) = self.conns.live_client_mut(owner) else {
            return false;
        };
        let frame = if c.resp3 && frame.first() == Some(&b'*') {
            crate::resp3::convert(crate::resp3::Shape::Push, &frame)
        } else {
            frame
        };
        c.out.push(frame);
        self.mark_client_dirty(owner.token);
        if leave {
            if let Some(c) = self.conns.live_client_mut(owner) {
                c.subscribed = false;
            }
            self.close_session_of(owner.token);
            return true;
        }
        false
    }

    /// Counts for INFO: clients blocked on a session, and subscribed clients.
    pub(crate) fn session_counts(&self) -> (usize, usize) {
        let (mut blocked, mut subscribed) = (0, 0);
        for (_, c) in self.conns.clients() {
            if c.subscribed {
                subscribed += 1;
            } else if !c.pinned && !c.stream_session {
                let busy = c
                    .session
                    .and_then(|r| self.conns.backend(r.token))
                    .is_some_and(|bc| !bc.inflight.is_empty());
                if busy {
                    blocked += 1;
                }
            }
        }
        (blocked, subscribed)
    }
}

/// True for an `unsubscribe`/`punsubscribe`/`sunsubscribe` message whose count is 0.
fn unsubscribed_all(frame: &[u8]) -> bool {
    let Some(rest) = frame.strip_prefix(b"*3\r\n") else {
        return false;
    };
    let kind = [
        &b"$11\r\nunsubscribe\r\n"[..],
        b"$12\r\npunsubscribe\r\n",
        b"$12\r\nsunsubscribe\r\n",
    ]
    .iter()
    .any(|k| rest.starts_with(k));
    kind && frame.ends_with(b"\r\n:0\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_last_unsubscribe() {
        assert!(unsubscribed_all(
            b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"
        ));
        assert!(unsubscribed_all(
            b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n"
        ));
        assert!(!unsubscribed_all(
            b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:1\r\n"
        ));
        assert!(!unsubscribed_all(
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\n:0\r\n"
        ));
    }
}
