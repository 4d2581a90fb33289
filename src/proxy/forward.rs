//! Forwarding: choosing a backend and a pooled connection for a request (or run), taking its
//! reply slot, and queueing its bytes on the connection.

use super::{Proxy, BACKEND_QUEUE_PAUSE_BYTES};
use crate::backend::{BackendConn, Origin};
use crate::command::{fit, Fit};
use crate::conns::Conn;
use crate::conns::ConnRef;
use crate::pending::Tag;
use crate::request::Request;
use crate::resp;
use crate::resp::reply;
use crate::resp3::{shape_for, Shape};
use crate::upstream::{Group, Upstream};
use bytes::Bytes;
use log::debug;
use std::io;

impl Proxy {
    /// Sends a request with a reply slot to connection `slot` of `u` (the pub/sub target).
    pub(super) fn forward_to(&mut self, token: usize, req: Request, u: Upstream, slot: usize) {
        if let Some(refusal) = self.backends_refuse(u, &req) {
            return self.reply_now(token, &req, refusal);
        }
        let Some(origin) = self.slot_origin(token, &req) else {
            return;
        };
        match self.backend_conn(u, slot) {
            Some(conn) => {
                self.ups.get_mut(u).requests += 1;
                self.enqueue(conn, origin, req.bytes);
            }
            None => self.complete(origin, reply::NO_BACKEND),
        }
    }

    /// Sends a request with a reply slot to a backend (the client's, or the picker's) — on a
    /// connection of its own, or not at all, if it would make the backends close their
    /// connection (`command::fit`).
    pub(super) fn forward(&mut self, token: usize, req: Request) {
        match fit(self.ups.tier, &req) {
            Fit::Shared => {}
            Fit::Alone => return self.forward_alone(token, req),
            Fit::Refuse(why) => return self.forward_refused(token, req, &why),
        }
        if let Some(c) = self.conns.client_mut(token) {
            c.path = super::Path::Backends;
        }
        // After a blocking command, the client's requests stay on its session connection until
        // it is idle, so they keep their order.
        let session = self.conns.client(token).and_then(|c| c.session);
        if let Some(r) = session {
            let busy = self
                .conns
                .live_backend(r.conn)
                .is_some_and(|bc| !bc.pipe.is_idle());
            if busy {
                self.send_session(token, req);
                return;
            }
        }
        if let Some(origin) = self.slot_origin(token, &req) {
            self.send(origin, req.bytes);
        }
    }

    /// The error to answer `req` with if `u` is a backend that would close the connection on it
    /// (a session or the pub/sub target is a connection of its own: only a known twemproxy
    /// refuses).
    pub(super) fn backends_refuse(&self, u: Upstream, req: &Request) -> Option<Bytes> {
        if u.group != Group::Backend {
            return None;
        }
        match fit(self.ups.tier, req) {
            Fit::Refuse(why) => Some(resp::error(&why)),
            Fit::Shared | Fit::Alone => None,
        }
    }

    /// Sends `req` to a backend on a connection of its own, closed once it is answered.
    fn forward_alone(&mut self, token: usize, req: Request) {
        let Some(b) = self.ups.pick(&mut self.picker) else {
            return self.reply_now(token, &req, reply::NO_BACKEND);
        };
        let u = Upstream::backend(b);
        let Some(conn) = self.open_oneshot_conn(u) else {
            let label = &self.ups.get(u).label;
            let failed = resp::error(&format!("ERR backend {label} connection failed"));
            return self.reply_now(token, &req, failed);
        };
        if let Some(origin) = self.slot_origin(token, &req) {
            self.ups.get_mut(u).requests += 1;
            self.enqueue(conn, origin, req.bytes);
        }
    }

    /// Takes a waiting reply slot for `req`: the origin its reply will carry.
    pub(super) fn slot_origin(&mut self, token: usize, req: &Request) -> Option<Origin> {
        let resp3 = self.conns.client(token)?.resp3;
        self.take_slot(token, tag_of(req, resp3))
    }

    /// Takes a waiting reply slot tagged `tag`: the origin its reply will carry.
    pub(super) fn take_slot(&mut self, token: usize, tag: Tag) -> Option<Origin> {
        self.take_slot_for(token, tag, 1)
    }

    /// Takes a waiting reply slot tagged `tag` that `n` replies will fill (a request sent on a
    /// subscribed connection may be answered by several).
    pub(super) fn take_slot_for(&mut self, token: usize, tag: Tag, n: u32) -> Option<Origin> {
        let gen = self.conns.at(token)?.gen;
        let seq = self.conns.client_mut(token)?.pending.push_run(tag, n);
        Some(Origin::Client { token, gen, seq, n })
    }

    /// Sends the request (or run) of a client's slot to its backend (or a fresh pick), trying
    /// other healthy backends if a connection cannot even be started.
    pub(super) fn send(&mut self, origin: Origin, req: Bytes) {
        let Origin::Client { token, gen, .. } = origin else {
            return;
        };
        for _ in 0..=self.ups.backends.len() {
            let Some((b, resp3)) = self.choose_backend(token, gen) else {
                break;
            };
            let u = Upstream::backend(b);
            if resp3 && self.ups.get(u).parks_resp3() {
                // Until the probe knows whether it speaks RESP3 (a few round trips at start).
                return self.ups.get_mut(u).parked.push((origin, req));
            }
            match self.backend_conn(u, self.ups.get(u).slot_for(token, resp3)) {
                Some(conn_token) => {
                    self.enqueue(conn_token, origin, req);
                    self.ups.backends[b].requests += u64::from(origin.replies());
                    return;
                }
                None => {
                    if let Some(c) = self.conns.live_client_mut(ConnRef { token, gen }) {
                        c.backend = None;
                    }
                }
            }
        }
        self.fail_slot(origin, origin.replies(), &reply::NO_BACKEND);
    }

    /// The backend for the request client `token` is sending, remembered as the client's: the
    /// one its earlier requests went to while they are in flight (so that its writes and reads
    /// keep their order), else the picker's. Also says whether the client speaks RESP3.
    fn choose_backend(&mut self, token: usize, gen: u32) -> Option<(usize, bool)> {
        let Proxy {
            conns, ups, picker, ..
        } = self;
        let c = conns.live_client_mut(ConnRef { token, gen })?;
        let sticky = if c.pending.waiting() > 1 {
            c.backend.filter(|&b| !ups.backends[b].retired)
        } else {
            None
        };
        let b = sticky.or_else(|| ups.pick(picker))?;
        c.backend = Some(b);
        Some((b, c.resp3))
    }

    pub(crate) fn enqueue(&mut self, conn_token: usize, origin: Origin, req: Bytes) {
        let Some(bc) = self.conns.backend_mut(conn_token) else {
            return;
        };
        bc.pipe.queue(origin, req);
        if !bc.dirty {
            bc.dirty = true;
            self.dirty_backends.push(conn_token);
        }
        if bc.pipe.unsent_bytes() <= BACKEND_QUEUE_PAUSE_BYTES {
            return;
        }
        // The backend is not taking requests as fast as this client sends them: stop reading
        // the client until the queue drains (or the connection fails).
        let (Origin::Client { token, gen, .. } | Origin::Piece { token, gen }) = origin else {
            return;
        };
        let client = ConnRef { token, gen };
        if !bc.waiters.contains(&client) {
            bc.waiters.push(client);
        }
        if let Some(c) = self.conns.live_client_mut(client) {
            c.held = true;
        }
    }

    /// Un-pauses clients that waited for a backend connection's queue to drain.
    pub(crate) fn release_waiters(&mut self, waiters: Vec<ConnRef>) {
        for w in waiters {
            if let Some(c) = self.conns.live_client_mut(w) {
                c.held = false;
                self.resume.push(w);
            }
        }
    }

    /// The token of the data connection in `slot` of `u`, opening it if needed.
    #[inline]
    pub(crate) fn backend_conn(&mut self, u: Upstream, slot: usize) -> Option<usize> {
        if let Some(r) = self.ups.get(u).conns[slot] {
            if self.conns.is_live(r) {
                return Some(r.token);
            }
        }
        self.open_backend_conn(u, slot)
    }

    /// Opens the data connection in `slot` of `u`.
    #[inline(never)]
    fn open_backend_conn(&mut self, u: Upstream, slot: usize) -> Option<usize> {
        let r = match self.open_data_conn(u, slot, None) {
            Ok(r) => r,
            Err(e) => {
                self.backend_failed(u, &format!("connect: {e}"));
                return None;
            }
        };
        self.ups.get_mut(u).conns[slot] = Some(r);
        debug!(
            "{}={} addr={} conn={} connecting (slot {slot})",
            u.kind(),
            u.index,
            self.ups.get(u).label,
            r.token
        );
        Some(r.token)
    }

    /// A connection of its own to `u` for one request, closed once it is answered.
    pub(super) fn open_oneshot_conn(&mut self, u: Upstream) -> Option<usize> {
        let r = self.open_data_conn(u, 0, None).ok()?;
        if let Some(bc) = self.conns.backend_mut(r.token) {
            bc.oneshot = true;
        }
        Some(r.token)
    }

    /// Starts a connection to `u` (pool `slot`, or a session of `owner`) with respite's own
    /// AUTH, and `HELLO 3` for the RESP3 half of a backend's pool, queued first.
    pub(crate) fn open_data_conn(
        &mut self,
        u: Upstream,
        slot: usize,
        owner: Option<ConnRef>,
    ) -> io::Result<ConnRef> {
        let stream = self.upstream_stream(u)?;
        let mut conn = BackendConn::new(stream, u, slot, self.now);
        conn.owner = owner;
        if let Some(auth) = self.backend_auth() {
            conn.pipe.queue(Origin::Auth, auth);
        }
        let resp3 = match owner {
            None => self.ups.get(u).is_resp3_slot(slot),
            // A session of a RESP3 client, to a backend that speaks RESP3.
            Some(o) => {
                let client_resp3 = self.conns.live_client(o).is_some_and(|c| c.resp3);
                client_resp3 && self.ups.get(u).resp3 == Some(true)
            }
        };
        if resp3 {
            // Replies to RESP3 clients then pass through untouched.
            conn.pipe.queue(
                Origin::Auth,
                Bytes::from_static(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"),
            );
            conn.resp3 = true;
        }
        self.add(Conn::Backend(conn))
    }

    pub(crate) fn backend_auth(&self) -> Option<Bytes> {
        let pass = self.config.backend_password.as_ref()?;
        Some(match &self.config.backend_user {
            Some(user) => {
                resp::encode_request(&[b"AUTH".as_slice(), user.as_bytes(), pass.as_bytes()])
            }
            None => resp::encode_request(&[b"AUTH".as_slice(), pass.as_bytes()]),
        })
    }
}

/// The slot tag of `req`; for a RESP3 client it carries the shape its reply is converted to.
pub(super) fn tag_of(req: &Request, resp3: bool) -> Tag {
    let shape = if resp3 { shape_for(req) } else { Shape::Plain };
    Tag::of(req, shape)
}
