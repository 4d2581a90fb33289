//! Ingress: accepting clients, reading them, framing their requests, gathering runs of plain
//! requests (forwarded whole), and taking every other request off the buffer as a `Request`
//! for `route.rs`.
//!
//! ```text
//!  read ─▶ gate (paused? at a barrier? streaming?) ─▶ gather: GET GET GET │ SET ─▶ send_run
//!                                                             └ not plain ─▶ take_request ─▶ dispatch
//! ```

use super::{Proxy, MAX_RUN, OUTPUT_PAUSE_BYTES, STREAM_MIN_BYTES};
use crate::backend::Origin;
use crate::client::ClientConn;
use crate::command::{Codis, CommandId, Route};
use crate::command_table::COMMANDS;
use crate::conns::{Conn, ConnRef};
use crate::health::Tier;
use crate::pending::Tag;
use crate::request::Request;
use crate::resp::{self, reply, Frame, FrameError};
use log::{debug, warn};
use std::io;
use std::time::Duration;

impl Proxy {
    /// Accepts the clients waiting on the plaintext listener, or on the TLS one.
    pub(super) fn accept(&mut self, tls: bool) {
        loop {
            let listener = if tls {
                &self.tls_listener
            } else {
                &self.listener
            };
            let Some(listener) = listener else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog; the next tick
                    // retries instead of spinning on a listener that stays readable.
                    warn!("accept failed: {e}");
                    self.stats.accept_errors += 1;
                    return;
                }
            };
            self.stats.total_connections_received += 1;
            if self.clients >= self.config.maxclients {
                use std::io::Write;
                if !tls {
                    let _ = stream.write(&reply::MAX_CLIENTS);
                }
                self.stats.rejected_connections += 1;
                warn!(
                    "client peer={peer} rejected: maxclients {} reached",
                    self.config.maxclients
                );
                continue;
            }
            let _ = stream.set_nodelay(true);
            let Some(stream) = self.client_stream(stream, peer, tls) else {
                continue;
            };
            let id = self.next_client_id;
            self.next_client_id += 1;
            let authed = self.config.password.is_none();
            let client = ClientConn::new(stream, id, peer, authed, self.now);
            let r = match self.add(Conn::Client(Box::new(client))) {
                Ok(r) => r,
                Err(e) => {
                    warn!("client peer={peer} cannot be registered: {e}");
                    continue;
                }
            };
            self.clients += 1;
            if tls {
                self.stats.tls.clients += 1;
                self.handshakes.push_back(r);
            }
            debug!("client={} id={id} peer={peer} connected", r.token);
        }
    }

    pub(crate) fn mark_client_dirty(&mut self, token: usize) {
        if let Some(c) = self.conns.client_mut(token) {
            if !c.dirty {
                c.dirty = true;
                self.dirty_clients.push(token);
            }
        }
    }

    pub(super) fn on_client_writable(&mut self, token: usize) {
        if let Some(c) = self.conns.client_mut(token) {
            c.writable = true;
            if !c.out.is_empty() || c.stream.wants_write() {
                self.mark_client_dirty(token);
            }
        }
    }

    pub(super) fn on_client_readable(&mut self, token: usize, hup: bool) {
        let gen = self.conns.at(token).map_or(0, |r| r.gen);
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        c.readable = true;
        // Kept: a client not read now (paused) must still find the peer's close later, when
        // the short-read shortcut would otherwise stop before it.
        c.peer_hup |= hup;
        if c.reading_stopped(self.draining_until.is_some()) {
            return;
        }
        match c
            .stream
            .read_into(&mut c.rbuf, &mut self.scratch, c.peer_hup)
        {
            Ok(r) => {
                if r.tls != crate::tls::TlsEvents::default() {
                    self.stats.tls.handshakes += u64::from(r.tls.handshake_done);
                    if r.tls.writable_again {
                        // Replies refused while the handshake ran (none today: nothing is
                        // sent before a request) go now.
                        c.writable = true;
                        if !c.dirty {
                            c.dirty = true;
                            self.dirty_clients.push(token);
                        }
                    }
                }
                if r.eof {
                    if let Some(failure) = c.stream.failure() {
                        // Closed during the handshake.
                        return self.handshake_failed(token, failure, "closed");
                    }
                    c.read_closed = true;
                } else if r.more {
                    self.revisit.push(ConnRef { token, gen });
                } else {
                    c.readable = false;
                }
            }
            Err(e) => {
                if let Some(failure) = c.stream.failure() {
                    return self.handshake_failed(token, failure, &e.to_string());
                }
                debug!("client={token} peer={} read error: {e}", c.peer);
                self.close_client(token, "read error");
                return;
            }
        }
        let read_closed = c.read_closed;
        self.process_input(token);
        if read_closed {
            if self.blocked_on_session(token) {
                // As Redis does: a client gone while blocked, in a transaction or subscribed is
                // dropped at once, its blocking command with it.
                return self.close_client(token, "closed while blocked");
            }
            // Else it is closed once its replies are written (at once with nothing pending).
            self.mark_client_dirty(token);
        }
    }

    /// True if the client waits on its session connection (a blocking command, a transaction,
    /// a subscription) — not on a streamed request, whose answer it still wants.
    fn blocked_on_session(&self, token: usize) -> bool {
        let session = self.conns.client(token).and_then(|c| c.session);
        session.is_some_and(|s| {
            !s.closing
                && self
                    .conns
                    .live_backend(s.conn)
                    .is_some_and(|bc| !bc.pipe.is_idle())
        })
    }

    /// Frames and routes every complete request in the client's read buffer, until backpressure
    /// or a protocol error stops it.
    ///
    /// Consecutive plain requests of one command (GET after GET...) make a *run*: they stay in
    /// the read buffer until the run ends, then go to one backend as one buffer with one reply
    /// slot, so a pipeline costs one split, one slot and one queue entry per run, not per request.
    pub(super) fn process_input(&mut self, token: usize) {
        let mut run = Run::default();
        let mut stream = false;
        loop {
            let (frame, id) = match self.gather(token, &mut run) {
                Step::Gone => return,
                Step::Stop => break,
                Step::Recheck => continue,
                Step::SendRun => {
                    self.send_run(token, &mut run);
                    continue;
                }
                Step::StreamAnswered => {
                    // Its session was for what is now answered: it is done.
                    self.close_session_of(token);
                    continue;
                }
                Step::Streaming if self.stream_input(token) => continue,
                Step::Streaming => break,
                Step::Frame(frame, id) => (frame, id),
            };
            if run.n > 0 {
                // This frame ends the run: send the run first, which leaves the frame at the
                // front of the buffer, where `take_request` expects it.
                self.send_run(token, &mut run);
            }
            match self.take_request(token, frame, id) {
                Taken::Request(req) => self.dispatch(token, req),
                Taken::Skipped => {}
                Taken::Partial { large } => {
                    stream = large;
                    break;
                }
                Taken::Wait => return,
            }
        }
        if run.n > 0 {
            self.send_run(token, &mut run);
        }
        if stream {
            self.start_stream(token);
        }
    }

    /// Gathers the plain requests at the front of the client's buffer into `run` while they
    /// come, and says what ended the gathering — unless its input may not be framed now
    /// (`gate`).
    #[inline]
    fn gather(&mut self, token: usize, run: &mut Run) -> Step {
        let Proxy {
            conns,
            commands,
            config,
            ups,
            ..
        } = self;
        let Some(c) = conns.client_mut(token) else {
            return Step::Gone;
        };
        if let Some(step) = gate(c, run, config.client_max_pending, token) {
            return step;
        }
        let plain = c.plain();
        // Behind twemproxy (or before the tier is known) only what it parses forms runs; behind
        // Codis, only what it serves and places by its key.
        let tier = ups.tier;
        let room = config.client_max_pending.saturating_sub(c.pending.len());
        let limits = c.limits(config.limits);
        loop {
            if c.rbuf.len() == run.len {
                return Step::Stop;
            }
            if run.n as usize >= room {
                return Step::Recheck;
            }
            let frame = c.scanner.scan(&c.rbuf[run.len..], &limits);
            let id = match &frame {
                Ok(Some(Frame::Multibulk { name, .. })) => {
                    let at = run.len + name.0;
                    commands.lookup(&c.rbuf[at..at + name.1])
                }
                Ok(Some(Frame::Inline { args, .. })) => {
                    commands.lookup(args.first().map_or(&[][..], |a| &a[..]))
                }
                _ => None,
            };
            if let (Ok(Some(Frame::Multibulk { len, argc, .. })), Some(id)) = (&frame, id) {
                let fits = || match tier {
                    Some(Tier::Redis) => true,
                    Some(Tier::Codis) => commands.spec(id).codis == Codis::Yes,
                    // Each key to its slot's master: no runs (yet).
                    Some(Tier::Cluster) => false,
                    _ => commands.spec(id).twemproxy.accepts(*argc, None),
                };
                if plain && commands.route(id) == Route::Forward && fits() {
                    if !run.takes(id) {
                        // Another command: it starts the next run (scanned again then).
                        return Step::SendRun;
                    }
                    run.len += len;
                    run.n += 1;
                    run.cmd = id;
                    continue;
                }
            }
            return Step::Frame(frame, id);
        }
    }

    /// Takes the request at the front of the client's buffer off it, as a `Request` to
    /// dispatch, unless it must wait at a barrier, is not whole yet, or breaks the protocol
    /// (answered with the error, and the client closed once it is written).
    fn take_request(
        &mut self,
        token: usize,
        frame: Result<Option<Frame>, FrameError>,
        id: Option<CommandId>,
    ) -> Taken {
        let argc = match &frame {
            Ok(Some(Frame::Multibulk { argc, .. })) => *argc,
            Ok(Some(Frame::Inline { args, .. })) => args.len(),
            _ => 0,
        };
        let barrier = id.is_some_and(|id| self.is_barrier(self.commands.route(id), argc))
            || self.changes_path(token, &frame, id);
        let clock_us = self.clock_us;
        let Some(c) = self.conns.client_mut(token) else {
            return Taken::Wait;
        };
        let frame = match frame {
            Ok(Some(Frame::Empty { len })) => {
                let _ = c.rbuf.split_to(len);
                return Taken::Skipped;
            }
            Ok(Some(frame)) => frame,
            Ok(None) => {
                let large = c.scanner.partial_len() >= STREAM_MIN_BYTES;
                return Taken::Partial { large };
            }
            Err(e) => {
                warn!("client={token} peer={} {e}; closing", c.peer);
                c.pending
                    .push_ready(resp::error(&format!("ERR {e}")), Tag::unknown(clock_us));
                c.close_after_flush = true;
                c.rbuf.clear();
                c.barrier = false;
                self.stats.protocol_errors += 1;
                self.mark_client_dirty(token);
                return Taken::Wait;
            }
        };
        if barrier {
            // It waits until the client's earlier requests are answered; the frame stays in
            // the buffer and is scanned again then.
            c.barrier = true;
            if c.pending.waiting() > 0 {
                return Taken::Wait;
            }
        }
        let bytes = match frame {
            Frame::Inline { len, args } => {
                let _ = c.rbuf.split_to(len);
                resp::encode_request(&args)
            }
            frame => c.rbuf.split_to(frame.consumed()).freeze(),
        };
        Taken::Request(Request::new(bytes, id, clock_us))
    }

    /// Takes a run's requests off the front of the client's read buffer and sends them, with one
    /// reply slot, to one backend.
    fn send_run(&mut self, token: usize, run: &mut Run) {
        let Run { len, n, cmd } = std::mem::take(run);
        let (now, instant) = (self.clock_us, self.now);
        self.stats.total_commands_processed += u64::from(n);
        let Some(gen) = self.conns.at(token).map(|r| r.gen) else {
            return;
        };
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        let req = c.rbuf.split_to(len).freeze();
        c.last_cmd = COMMANDS[cmd as usize].name;
        c.last_active = instant;
        let seq = c.pending.push_run(Tag::new(cmd, now, req.clone()), n);
        let origin = Origin::Client { token, gen, seq, n };
        self.send(origin, req);
    }

    pub(crate) fn close_client(&mut self, token: usize, why: &str) {
        self.close_session_of(token);
        if let Some(Conn::Client(mut c)) = self.remove(token) {
            self.clients -= 1;
            if c.stream.is_tls() {
                self.stats.tls.clients -= 1;
                c.stream.close_notify();
            }
            debug!("client={token} id={} peer={} closed: {why}", c.id, c.peer);
        }
    }

    pub(super) fn close_idle_clients(&mut self) {
        let now = self.now;
        // Idle clients give their buffers back: 10,000 idle clients should cost little more
        // than their sockets.
        for c in self.conns.clients_mut() {
            if now.duration_since(c.last_active) >= Duration::from_secs(1) {
                c.shrink_idle();
            }
        }
        let Some(timeout) = self.config.timeout else {
            return;
        };
        let idle: Vec<usize> = self
            .conns
            .clients()
            // A client stalled inside a streamed request is idle too (a slow loris).
            // A client in its TLS handshake has its own deadline.
            .filter(|(_, c)| !c.stream.handshaking())
            .filter(|(_, c)| {
                (c.pending.is_empty() || (c.streaming() && !c.held))
                    && now.duration_since(c.last_active) >= timeout
            })
            .map(|(t, _)| t)
            .collect();
        for token in idle {
            self.close_client(token, "idle timeout");
        }
    }
}

/// Whether the client's input may be framed now: backpressure pauses it, a barrier holds it
/// until the requests before it are answered, a request streaming in takes what arrived.
#[inline]
fn gate(c: &mut ClientConn, run: &Run, max_pending: usize, token: usize) -> Option<Step> {
    if c.close_after_flush {
        return Some(Step::Stop);
    }
    if c.pending.len() + run.n as usize >= max_pending || c.out.bytes() > OUTPUT_PAUSE_BYTES {
        if !c.paused {
            let (pending, out) = (c.pending.len(), c.out.bytes());
            debug!("client={token} paused (pending={pending} out={out})");
        }
        c.paused = true;
        return Some(Step::Stop);
    }
    if c.barrier {
        if c.pending.waiting() > 0 {
            return Some(Step::Stop);
        }
        c.barrier = false;
        if c.session.is_some_and(|s| s.closing) {
            return Some(Step::StreamAnswered);
        }
    }
    c.streaming().then_some(Step::Streaming)
}

/// What gathering a run stopped at (`process_input`).
enum Step {
    /// The client is gone.
    Gone,
    /// Nothing more to frame now: the buffer holds no more complete request, or the client
    /// is paused, closing, or waiting at a barrier.
    Stop,
    /// The barrier before a closing session cleared (a streamed request, or the last requests
    /// of a subscription, answered): its connection closes.
    StreamAnswered,
    /// A request is streaming in: send on what arrived.
    Streaming,
    /// The pending limit: check again (and pause).
    Recheck,
    /// A request of another command: send the run, then gather the next.
    SendRun,
    /// A request that is not plain: it goes its own way.
    Frame(Result<Option<Frame>, FrameError>, Option<CommandId>),
}

/// What `take_request` found at the front of the buffer.
enum Taken {
    /// A whole request, off the buffer.
    Request(Request),
    /// Bytes that carry no command, dropped.
    Skipped,
    /// Not whole yet; `large` if it has reached the size at which it streams.
    Partial { large: bool },
    /// Nothing to do now: it waits at a barrier, or the client is closing.
    Wait,
}

/// A run being gathered: `n` requests of command `cmd`, the first `len` bytes of the read buffer.
#[derive(Debug, Default)]
struct Run {
    len: usize,
    n: u32,
    cmd: CommandId,
}

impl Run {
    /// True if a request of command `id` may join.
    fn takes(&self, id: CommandId) -> bool {
        self.n == 0 || (self.cmd == id && self.n < MAX_RUN)
    }
}
