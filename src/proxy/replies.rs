//! Replies: reading backend connections, framing their replies, completing the client slots
//! they belong to, and flushing clients and backends once per loop iteration.

use super::forward::tag_of;
use super::{Proxy, BACKEND_QUEUE_RESUME_BYTES, OUTPUT_RESUME_BYTES};
use crate::backend::{Framed, Origin};
use crate::conns::Conn;
use crate::conns::ConnRef;
use crate::net;
use crate::pending::Tag;
use crate::request::Request;
use crate::stats::Answered;
use bytes::Bytes;
use log::{debug, trace, warn};

impl Proxy {
    /// Answers `req` at once with `answer` (in RESP2; converted for a RESP3 client).
    pub(super) fn reply_now(&mut self, token: usize, req: &Request, answer: Bytes) {
        let (slow_us, slow_max) = (self.config.slowlog_micros, self.config.slowlog_max_len);
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        let tag = tag_of(req, c.resp3);
        let answer = if c.resp3 {
            tag.to_resp3(&answer)
        } else {
            answer
        };
        let answered = Answered {
            tag: &tag,
            first: 0,
            calls: 1,
            failed: u32::from(answer.first() == Some(&b'-')),
        };
        let name = c.name.as_deref();
        self.stats
            .record(answered, self.clock_us, slow_us, slow_max, &c.peer, name);
        c.pending.push_ready(answer, tag);
        self.mark_client_dirty(token);
    }

    /// Fills the slot of `origin` with `reply`.
    pub(crate) fn complete(&mut self, origin: Origin, reply: Bytes) {
        let failed = u32::from(reply.first() == Some(&b'-'));
        self.complete_with(origin, reply, 1, failed, false)
    }

    /// Answers the last `k` requests of `origin`'s slot with `error` each.
    pub(crate) fn fail_slot(&mut self, origin: Origin, k: u32, error: &Bytes) {
        let replies = if k == 1 {
            error.clone()
        } else {
            Bytes::from(error.repeat(k as usize))
        };
        self.complete_with(origin, replies, k, k, false)
    }

    /// Gives `origin`'s slot `k` more replies (in order in `replies`), `failed` of them errors;
    /// `native` replies already speak the client's protocol.
    pub(super) fn complete_with(
        &mut self,
        origin: Origin,
        replies: Bytes,
        k: u32,
        failed: u32,
        native: bool,
    ) {
        let (token, gen, seq) = match origin {
            Origin::Client {
                token, gen, seq, ..
            } => (token, gen, seq),
            Origin::Fanout { id, part } => return self.fanout_part_done(id, part, replies),
            Origin::Auth | Origin::Quiet | Origin::Piece { .. } => return,
        };
        let (slow_us, slow_max) = (self.config.slowlog_micros, self.config.slowlog_max_len);
        if let Some(c) = self.conns.live_client_mut(ConnRef { token, gen }) {
            // RESP3 clients are never sent runs: one reply, converted to their protocol.
            let replies = if c.resp3 && !native && k == 1 {
                match c.pending.waiting_tag_mut(seq) {
                    Some(tag) => tag.to_resp3(&replies),
                    None => replies,
                }
            } else {
                replies
            };
            let (stats, clock_us) = (&mut self.stats, self.clock_us);
            let (peer, name) = (&c.peer, c.name.as_deref());
            let done = |tag: &Tag, first| {
                let answered = Answered {
                    tag,
                    first,
                    calls: k,
                    failed,
                };
                stats.record(answered, clock_us, slow_us, slow_max, peer, name);
            };
            if c.pending.complete(seq, replies, k, &mut c.out, done) {
                if c.barrier && c.pending.waiting() == 0 {
                    self.resume.push(ConnRef { token, gen });
                }
                if !c.dirty {
                    c.dirty = true;
                    self.dirty_clients.push(token);
                }
            }
        }
    }

    pub(super) fn flush_dirty(&mut self) {
        // Flushing a client can resume a paused one, which can queue more requests: loop until
        // both lists are empty, bounded so one iteration always ends.
        for _ in 0..4 {
            if self.dirty_backends.is_empty() && self.dirty_clients.is_empty() {
                return;
            }
            // Take the lists and hand their capacity back afterwards: no allocation per loop.
            let mut backends = std::mem::take(&mut self.dirty_backends);
            for &token in &backends {
                self.flush_backend(token);
            }
            backends.clear();
            if self.dirty_backends.is_empty() {
                self.dirty_backends = backends;
            }
            let mut clients = std::mem::take(&mut self.dirty_clients);
            for &token in &clients {
                self.flush_client(token);
            }
            clients.clear();
            if self.dirty_clients.is_empty() {
                self.dirty_clients = clients;
            }
        }
    }

    fn flush_client(&mut self, token: usize) {
        let (client_limit, pubsub_limit) = (
            self.config.client_output_limit,
            self.config.pubsub_output_limit,
        );
        let max_pending = self.config.client_max_pending;
        let draining = self.draining_until.is_some();
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        c.dirty = false;
        if c.pending.front_ready() {
            c.pending.drain_ready_front(&mut c.out);
        }
        let limit = if c.subscribed() {
            pubsub_limit
        } else {
            client_limit
        };
        if c.out.bytes() > limit {
            warn!(
                "client={token} peer={} closed: output {} bytes over client_output_limit {limit}",
                c.peer,
                c.out.bytes()
            );
            self.stats.output_limit_disconnects += 1;
            self.close_client(token, "output limit");
            return;
        }
        if c.writable && (!c.out.is_empty() || c.stream.wants_write()) {
            match c.stream.flush_queue(&mut c.out) {
                Ok(true) => {}
                Ok(false) => c.writable = false,
                Err(e) => {
                    debug!("client={token} peer={} write error: {e}", c.peer);
                    self.close_client(token, "write error");
                    return;
                }
            }
        }
        let done = c.out.is_empty() && c.pending.is_empty() && !c.stream.wants_write();
        // A paused client may still hold requests it sent before closing its side: they are
        // framed once it resumes (below), and answered before it is closed.
        let closing = c.close_after_flush || draining || (c.read_closed && !c.paused);
        if done && closing {
            self.close_client(token, "done");
            return;
        }
        if c.paused && c.pending.len() < max_pending / 2 && c.out.bytes() < OUTPUT_RESUME_BYTES {
            c.paused = false;
            debug!("client={token} resumed");
            let readable = c.readable;
            self.process_input(token);
            if readable {
                self.on_client_readable(token, false);
            }
            // Once more: it may be done now, and have closed its side.
            self.mark_client_dirty(token);
        }
    }

    pub(super) fn on_backend_writable(&mut self, token: usize) {
        let Some(bc) = self.conns.backend_mut(token) else {
            return;
        };
        if !bc.connected {
            match net::connect_finished(&mut bc.stream) {
                Ok(true) => {
                    bc.connected = true;
                    trace!(
                        "{}={} conn={token} connected",
                        bc.upstream.kind(),
                        bc.upstream.index
                    );
                }
                Ok(false) => return,
                Err(e) => {
                    self.fail_backend_conn(token, &format!("connect: {e}"), true);
                    return;
                }
            }
        }
        bc.writable = true;
        if (bc.pipe.has_unsent() || bc.stream.wants_write()) && !bc.dirty {
            bc.dirty = true;
            self.dirty_backends.push(token);
        }
    }

    fn flush_backend(&mut self, token: usize) {
        let (now, clock_us) = (self.now, self.clock_us);
        let Some(bc) = self.conns.backend_mut(token) else {
            return;
        };
        bc.dirty = false;
        if !bc.connected || !bc.writable {
            return;
        }
        if let Err(e) = bc.flush(now, clock_us) {
            self.fail_backend_conn(token, &format!("write: {e}"), false);
            return;
        }
        if !bc.waiters.is_empty() && bc.pipe.unsent_bytes() < BACKEND_QUEUE_RESUME_BYTES {
            let waiters = std::mem::take(&mut bc.waiters);
            self.release_waiters(waiters);
        }
    }

    /// Readiness to read on a backend connection: read what arrived, hand each whole reply to
    /// the slot it belongs to.
    pub(super) fn on_backend_readable(&mut self, token: usize, hup: bool) {
        let Some(r) = self.conns.at(token) else {
            return;
        };
        let Some(bc) = self.conns.backend_mut(token) else {
            return;
        };
        if !bc.connected {
            return;
        }
        let eof = match bc
            .stream
            .read_into(&mut bc.pipe.rbuf, &mut self.scratch, hup)
        {
            Ok(read) => {
                if read.more {
                    self.revisit.push(r);
                }
                if read.tls.handshake_done {
                    let expiry = bc
                        .stream
                        .peer_certificates()
                        .and_then(crate::tls::expiry_of);
                    self.ups.get_mut(bc.upstream).cert_expiry = expiry;
                }
                if read.tls.writable_again {
                    // Requests refused while the handshake ran may go now.
                    self.on_backend_writable(token);
                }
                read.eof
            }
            Err(e) => {
                let failure = bc.stream.failure();
                self.count_upstream_failure(failure);
                self.fail_backend_conn(token, &format!("read: {e}"), false);
                return;
            }
        };
        if eof {
            // Closed during its TLS handshake.
            let failure = self.conns.backend(token).and_then(|bc| bc.stream.failure());
            self.count_upstream_failure(failure);
        }
        if self.deliver_replies(token) && eof {
            self.backend_closed(token);
        }
    }

    /// Hands every whole reply in the connection's buffer to whom it belongs. False once the
    /// connection is gone (failed, or closed on leaving subscribed mode).
    fn deliver_replies(&mut self, token: usize) -> bool {
        let clock_us = self.clock_us;
        loop {
            let Some(bc) = self.conns.backend_mut(token) else {
                return false;
            };
            let r = match bc.pipe.next_replies(bc.subscribed, bc.resp3, clock_us) {
                Ok(Some(Framed::Replies(r))) => r,
                Ok(Some(Framed::Push(frame))) => {
                    if self.on_push_frame(token, frame) {
                        return false;
                    }
                    continue;
                }
                Ok(None) => return true,
                Err(fault) => {
                    self.fail_backend_conn(token, &fault.to_string(), false);
                    return false;
                }
            };
            let (u, session, native) = (bc.upstream, bc.owner.is_some(), bc.resp3);
            let oneshot = bc.oneshot;
            if r.origin == Origin::Auth {
                if r.failed > 0 {
                    let msg = String::from_utf8_lossy(&r.frame[1..r.frame.len() - 2]).into_owned();
                    self.fail_backend_conn(token, &format!("AUTH refused: {msg}"), true);
                    return false;
                }
                continue;
            }
            if !session {
                let latency = &mut self.ups.get_mut(u).latency;
                latency.record_n(clock_us.saturating_sub(r.sent), r.k);
            }
            let redirect = r.failed == 1 && r.k == 1 && self.ups.cluster;
            if redirect && session && self.follow_session_redirect(token, r.origin, &r.frame) {
                return false;
            }
            let redirect = redirect && !session;
            if redirect
                && (self.follow_redirect(r.origin, &r.frame)
                    || self.retry_later(r.origin, &r.frame))
            {
                continue;
            }
            self.complete_with(r.origin, r.frame, r.k, r.failed, native);
            if !r.whole {
                return true;
            }
            if oneshot
                && self
                    .conns
                    .backend(token)
                    .is_some_and(|bc| bc.pipe.is_idle())
            {
                self.remove(token);
                return false;
            }
        }
    }

    /// The backend closed a connection: a shared one with nothing on it is simply gone (Redis
    /// closes idle connections after its `timeout`); otherwise it failed.
    fn backend_closed(&mut self, token: usize) {
        let idle = self
            .conns
            .backend(token)
            .is_some_and(|bc| bc.owner.is_none() && bc.pipe.is_idle());
        if !idle {
            return self.fail_backend_conn(token, "closed by backend", false);
        }
        if let Some(Conn::Backend(bc)) = self.remove(token) {
            let u = bc.upstream;
            debug!("{}={} conn={token} closed while idle", u.kind(), u.index);
            self.ups.get_mut(u).forget_conn(bc.slot, token);
        }
    }
}
