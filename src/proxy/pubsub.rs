//! Pub/sub: a subscriber's connection of its own to the pub/sub target, its subscribed mode,
//! and the frames that come back on it.
//!
//! ```text
//!  SUBSCRIBE ──▶ session conn to the pub/sub target ──▶ Mode::Subscribed
//!  each request sent on it takes a reply slot for the frames that answer it (`pubsub.rs`)
//!  published messages ──▶ to the client as they come (behind replies still owed to it)
//!  the confirmation that leaves nothing subscribed ──▶ Mode::Normal, the connection closes
//!  PUBLISH, PUBSUB ──▶ the same target over a shared connection, so publishers and subscribers meet
//! ```
//!
//! Because replies fill slots like any other, a pipeline that mixes the subscribe family with
//! other commands (`SUBSCRIBE ch; GET x; PING`) is answered in its order; a message only ever
//! follows the confirmation of its channel.

use super::Proxy;
use crate::backend::Origin;
use crate::client::Mode;
use crate::command::{Local, Route, Session};
use crate::conns::ConnRef;
use crate::pending::Tag;
use crate::pubsub::{PushFrame, SubKind};
use crate::request::Request;
use crate::resp;
use crate::resp3::{convert, Shape};
use bytes::{Bytes, BytesMut};

impl Proxy {
    /// A request from a subscribed client: the subscribe family and PING go to its
    /// subscription; QUIT and RESET are answered here; anything else is refused as Redis
    /// refuses it (RESP2), or takes the ordinary path beside the subscription (RESP3).
    pub(super) fn dispatch_subscribed(
        &mut self,
        token: usize,
        route: Route,
        req: Request,
    ) -> Option<Request> {
        let resp3 = self.conns.client(token)?.resp3;
        match route {
            Route::Session(Session::Subscribe | Session::Unsubscribe) => {
                self.send_subscribed(token, req)
            }
            Route::Local(Local::Quit | Local::Reset) => return Some(req),
            // In RESP3 any command may run on a subscribed connection (PING gets +PONG).
            _ if resp3 => return Some(req),
            Route::Local(Local::Ping) => self.send_subscribed(token, req),
            _ => {
                let name = req
                    .spec()
                    .map_or("unknown", |s| s.name)
                    .to_ascii_lowercase();
                let refusal = resp::error(&format!(
                    "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                ));
                self.reply_now(token, &req, refusal);
            }
        }
        None
    }

    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE from a client not subscribed yet.
    pub(super) fn subscribe(&mut self, token: usize, req: Request) {
        if self.open_session(token, &req, true).is_some() {
            if let Some(c) = self.conns.client_mut(token) {
                c.mode = Mode::Subscribed;
            }
            self.send_subscribed(token, req);
        }
    }

    /// Sends a request on the subscribed connection, with a slot for the frames that answer it.
    fn send_subscribed(&mut self, token: usize, req: Request) {
        if self.unsubscribe_every_master(token, &req) {
            return;
        }
        let Some(conn) = self.open_session(token, &req, true) else {
            return;
        };
        let Some(c) = self.conns.client(token) else {
            return;
        };
        let n = c.subs.replies_to(&req);
        let shape = if c.resp3 { Shape::Push } else { Shape::Plain };
        let Some(origin) = self.take_slot_for(token, Tag::of(&req, shape), n) else {
            return;
        };
        if let Some(bc) = self.conns.backend_mut(conn) {
            bc.subscribed = true;
        }
        self.enqueue(conn, origin, req.bytes);
    }

    /// SUNSUBSCRIBE naming no channel from a client with shard channels on several masters:
    /// sent on each connection that holds some, each answering for its own, into one slot.
    /// Returns false if that is not the case.
    fn unsubscribe_every_master(&mut self, token: usize, req: &Request) -> bool {
        let Some(c) = self.conns.client(token) else {
            return false;
        };
        let all = req.argc() == 1 && req.spec().is_some_and(|s| s.name == "SUNSUBSCRIBE");
        if !all || c.shard_subs.is_empty() {
            return false;
        }
        let sessions = c.session.iter().chain(&c.shard_subs);
        let live: Vec<(usize, i64)> = sessions
            .filter_map(|s| {
                let bc = self.conns.live_backend(s.conn)?;
                Some((s.conn.token, bc.shard_channels))
            })
            .collect();
        let mut holding: Vec<(usize, u32)> = live
            .iter()
            .filter_map(|&(conn, n)| Some((conn, u32::try_from(n).ok().filter(|&n| n > 0)?)))
            .collect();
        if holding.is_empty() {
            // Nothing held anywhere: one connection answers that, once.
            let Some(&(conn, _)) = live.first() else {
                return false;
            };
            holding.push((conn, 1));
        }
        let total = holding.iter().map(|&(_, n)| n).sum();
        let shape = if c.resp3 { Shape::Push } else { Shape::Plain };
        let Some(Origin::Client { gen, seq, .. }) =
            self.take_slot_for(token, Tag::of(req, shape), total)
        else {
            return true;
        };
        for (conn, n) in holding {
            let origin = Origin::Client { token, gen, seq, n };
            self.enqueue(conn, origin, req.bytes.clone());
        }
        true
    }

    /// An UNSUBSCRIBE-family command from a client that is not subscribed: answered as Redis
    /// does, one reply per channel with count 0.
    pub(super) fn unsubscribe_unsubscribed(&mut self, token: usize, req: Request) {
        let kind = req.arg(0).unwrap_or_default().to_ascii_lowercase();
        let channels: Vec<Option<&[u8]>> = if req.argc() > 1 {
            req.args().skip(1).map(Some).collect()
        } else {
            vec![None]
        };
        let push = self.conns.client(token).is_some_and(|c| c.resp3);
        let mut out = BytesMut::new();
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
        self.reply_now(token, &req, out.freeze());
    }

    /// PUBLISH, SPUBLISH, PUBSUB: to the pub/sub target, where the subscribers are.
    pub(super) fn publish(&mut self, token: usize, req: Request) {
        if self.ups.cluster && req.spec().is_some_and(|s| s.name == "SPUBLISH") {
            // A shard channel lives in its slot, like a key.
            return self.forward(token, req);
        }
        let Some(u) = self.ups.pubsub_target() else {
            let refusal = resp::error("ERR no pub/sub target available");
            return self.reply_now(token, &req, refusal);
        };
        let resp3 = self.conns.client(token).is_some_and(|c| c.resp3);
        let slot = self.ups.get(u).slot_for(token, resp3);
        self.forward_to(token, req, u, slot);
    }

    /// A frame from a subscribed session connection: a published message goes to its owner as
    /// it comes; anything else answers the request at the front (and a confirmation updates the
    /// owner's subscriptions). Returns true if the connection closed: the subscription ended.
    pub(super) fn on_push_frame(&mut self, conn: usize, frame: Bytes) -> bool {
        let clock_us = self.clock_us;
        let Some(bc) = self.conns.backend_mut(conn) else {
            return true;
        };
        let (Some(owner), native) = (bc.owner, bc.resp3) else {
            return false;
        };
        let kind = PushFrame::of(&frame);
        let counted = match kind {
            PushFrame::Message => None,
            _ => bc.pipe.count_reply(clock_us),
        };
        let Some((origin, _, _)) = counted else {
            // A message, or a frame nothing asked for: it streams to the client.
            self.deliver_message(owner, frame, native);
            return false;
        };
        let failed = u32::from(frame.first() == Some(&b'-'));
        let (frame, kind) = self.count_shard_channels(owner, conn, frame, kind);
        let ended = match (kind, self.conns.live_client_mut(owner)) {
            (PushFrame::Confirmation(sub, count), Some(c)) => {
                c.subs.confirm(sub, count);
                c.mode == Mode::Subscribed && c.subs.is_empty()
            }
            _ => false,
        };
        self.complete_with(origin, frame, 1, failed, native);
        ended && self.end_subscription(owner, conn)
    }

    /// A shard channel confirmation on `conn`: Redis counts the shard channels of that
    /// connection; a client with shard channels on several masters is told its total, as one
    /// Redis would count them.
    fn count_shard_channels(
        &mut self,
        owner: ConnRef,
        conn: usize,
        frame: Bytes,
        kind: PushFrame,
    ) -> (Bytes, PushFrame) {
        let PushFrame::Confirmation(sub @ (SubKind::SSubscribe | SubKind::SUnsubscribe), count) =
            kind
        else {
            return (frame, kind);
        };
        if let Some(bc) = self.conns.backend_mut(conn) {
            bc.shard_channels = count;
        }
        let Some(c) = self
            .conns
            .live_client(owner)
            .filter(|c| !c.shard_subs.is_empty())
        else {
            return (frame, kind);
        };
        let sessions = c.session.iter().chain(&c.shard_subs);
        let live = sessions.filter_map(|s| self.conns.live_backend(s.conn));
        let total = live.map(|bc| bc.shard_channels).sum();
        match crate::pubsub::with_count(&frame, total) {
            Some(rewritten) => (rewritten, PushFrame::Confirmation(sub, total)),
            None => (frame, kind),
        }
    }

    /// A published message for `owner`: behind the replies still owed to it, so that it never
    /// overtakes the confirmation of its channel.
    fn deliver_message(&mut self, owner: ConnRef, frame: Bytes, native: bool) {
        let clock_us = self.clock_us;
        let Some(c) = self.conns.live_client_mut(owner) else {
            return;
        };
        let frame = if c.resp3 && !native && frame.first() == Some(&b'*') {
            convert(Shape::Push, &frame)
        } else {
            frame
        };
        if c.pending.waiting() == 0 {
            c.out.push(frame);
        } else {
            c.pending.push_ready(frame, Tag::unknown(clock_us));
        }
        self.mark_client_dirty(owner.token);
    }

    /// The owner is subscribed to nothing any more: back to normal mode, and the connection
    /// closes — at once if it owes nothing more, else once what was pipelined on it is
    /// answered (a barrier: later requests wait). Returns true if it closed now.
    fn end_subscription(&mut self, owner: ConnRef, conn: usize) -> bool {
        // Idle only when none of its subscribed connections (several, for shard channels on
        // several masters) owes it anything.
        let idle = self.conns.live_client(owner).is_some_and(|c| {
            let sessions = c.session.iter().chain(&c.shard_subs);
            let mut conns = sessions.filter_map(|s| self.conns.live_backend(s.conn));
            conns.all(|bc| bc.pipe.is_idle())
        });
        let idle = idle && self.conns.backend(conn).is_none_or(|bc| bc.pipe.is_idle());
        if let Some(bc) = self.conns.backend_mut(conn) {
            bc.subscribed = false;
        }
        let Some(c) = self.conns.live_client_mut(owner) else {
            return false;
        };
        c.mode = Mode::Normal;
        if idle {
            self.close_session_of(owner.token);
            return true;
        }
        c.barrier = true;
        if let Some(s) = c.session.as_mut() {
            s.closing = true;
        }
        false
    }
}
