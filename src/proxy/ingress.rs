//! Ingress: accepting clients, reading them, framing their requests, gathering runs, and
//! dispatching each request to its route.

use super::{Proxy, BARRIER_READ_LIMIT, MAX_RUN, OUTPUT_PAUSE_BYTES, STREAM_MIN_BYTES};
use crate::backend::Origin;
use crate::client::ClientConn;
use crate::command::{CommandTable, Route};
use crate::conns::Conn;
use crate::conns::ConnRef;
use crate::pending::Tag;
use crate::resp::{reply, Frame};
use crate::{net, resp};
use bytes::Bytes;
use log::{debug, warn};
use std::io;
use std::time::Duration;

impl Proxy {
    pub(super) fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
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
                let _ = stream.write(&reply::MAX_CLIENTS);
                self.stats.rejected_connections += 1;
                warn!(
                    "client peer={peer} rejected: maxclients {} reached",
                    self.config.maxclients
                );
                continue;
            }
            let _ = stream.set_nodelay(true);
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
            if !c.out.is_empty() {
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
        let held = c.barrier && c.rbuf.len() >= BARRIER_READ_LIMIT;
        if c.paused || c.held || held || c.read_closed || self.draining_until.is_some() {
            return;
        }
        match net::read_into(&mut c.stream, &mut c.rbuf, &mut self.scratch, hup) {
            Ok(r) => {
                if r.eof {
                    c.read_closed = true;
                } else if r.more {
                    self.revisit.push(ConnRef { token, gen });
                } else {
                    c.readable = false;
                }
            }
            Err(e) => {
                debug!("client={token} peer={} read error: {e}", c.peer);
                self.close_client(token, "read error");
                return;
            }
        }
        let read_closed = c.read_closed;
        self.process_input(token);
        if read_closed {
            // A client that half-closed with nothing pending is done now.
            self.mark_client_dirty(token);
        }
    }

    /// Frames and routes every complete request in the client's read buffer, until backpressure
    /// or a protocol error stops it.
    ///
    /// Consecutive plain requests of one command (GET after GET...) make a *run*: they stay in
    /// the read buffer until the run ends, then go to one backend as one buffer with one reply
    /// slot, so a pipeline costs one split, one slot and one queue entry per run, not per request.
    pub(super) fn process_input(&mut self, token: usize) {
        let max_pending = self.config.client_max_pending;
        let limits = self.config.limits;
        let have_shards = self.ups.have_shards();
        let mut run = Run::default();
        let mut stream = false;
        loop {
            let Some(c) = self.conns.client_mut(token) else {
                return;
            };
            if c.close_after_flush {
                break;
            }
            if c.pending.len() + run.n as usize >= max_pending || c.out.bytes() > OUTPUT_PAUSE_BYTES
            {
                if !c.paused {
                    debug!(
                        "client={token} paused (pending={} out={})",
                        c.pending.len(),
                        c.out.bytes()
                    );
                }
                c.paused = true;
                break;
            }
            if c.barrier {
                if c.pending.waiting() > 0 {
                    break;
                }
                c.barrier = false;
                if std::mem::take(&mut c.stream_session) {
                    // The streamed request is answered: its connection is done.
                    self.close_session_of(token);
                    continue;
                }
            }
            if c.streaming.is_some() {
                if self.stream_input(token) {
                    continue;
                }
                break;
            }
            // Gather plain requests into the run while they come, without leaving this loop.
            let plain = c.plain();
            let room = max_pending.saturating_sub(c.pending.len());
            let step = loop {
                if c.rbuf.len() == run.len {
                    break Step::Stop;
                }
                if run.n as usize >= room {
                    break Step::Recheck;
                }
                let frame = c.scanner.scan(&c.rbuf[run.len..], &limits);
                let id = match &frame {
                    Ok(Some(Frame::Multibulk { name, .. })) => {
                        let at = run.len + name.0;
                        self.commands.lookup(&c.rbuf[at..at + name.1])
                    }
                    Ok(Some(Frame::Inline { args, .. })) => self
                        .commands
                        .lookup(args.first().map_or(&[][..], |a| &a[..])),
                    _ => None,
                };
                if let (Ok(Some(Frame::Multibulk { len, .. })), Some(id)) = (&frame, id) {
                    if plain && self.commands.route(id) == Route::Forward {
                        if !run.takes(id) {
                            // Another command: it starts the next run (scanned again then).
                            break Step::SendRun;
                        }
                        run.len += len;
                        run.n += 1;
                        run.cmd = id;
                        continue;
                    }
                }
                break Step::Frame(frame, id);
            };
            let (frame, id) = match step {
                Step::Stop => break,
                Step::Recheck => continue,
                Step::SendRun => {
                    self.send_run(token, &mut run);
                    continue;
                }
                Step::Frame(frame, id) => (frame, id),
            };
            if run.n > 0 {
                // This frame ends the run: send the run first, which leaves the frame at the
                // front of the buffer, where the code below expects it.
                self.send_run(token, &mut run);
            }
            let barrier = barrier_cmd(&self.commands, id, have_shards);
            let clock_us = self.clock_us;
            let Some(c) = self.conns.client_mut(token) else {
                return;
            };
            let req = match frame {
                Ok(None) => {
                    stream = c.scanner.partial_len() >= STREAM_MIN_BYTES;
                    break;
                }
                Ok(Some(Frame::Empty { len })) => {
                    let _ = c.rbuf.split_to(len);
                    continue;
                }
                Ok(Some(Frame::Multibulk { len, .. })) => {
                    if barrier {
                        // A fan-out waits until the client's earlier requests are answered; the
                        // frame stays in the buffer and is scanned again then.
                        c.barrier = true;
                        if c.pending.waiting() > 0 {
                            return;
                        }
                    }
                    c.rbuf.split_to(len).freeze()
                }
                Ok(Some(Frame::Inline { len, args })) => {
                    if barrier {
                        c.barrier = true;
                        if c.pending.waiting() > 0 {
                            return;
                        }
                    }
                    let _ = c.rbuf.split_to(len);
                    resp::encode_request(&args)
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
                    return;
                }
            };
            self.dispatch(token, req, id);
        }
        if run.n > 0 {
            self.send_run(token, &mut run);
        }
        if stream {
            self.start_stream(token);
        }
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
        c.last_cmd = crate::command_table::COMMANDS[cmd as usize].name;
        c.last_active = instant;
        let tag = Tag {
            cmd,
            start: now,
            req: req.clone(),
            retried: false,
        };
        let seq = c.pending.push_run(tag, n);
        let origin = Origin::Client { token, gen, seq, n };
        self.send(origin, req);
    }

    /// Routes one request.
    fn dispatch(&mut self, token: usize, req: Bytes, id: Option<crate::command::CommandId>) {
        self.stats.total_commands_processed += 1;
        let route = id.map_or(Route::Forward, |id| self.commands.route(id));
        let password_set = self.config.password.is_some();
        let (now, instant) = (self.clock_us, self.now);
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        c.last_cmd = id.map_or("unknown", |id| {
            crate::command_table::COMMANDS[id as usize].name
        });
        c.cur = Tag {
            cmd: id.unwrap_or(u16::MAX),
            start: now,
            req: req.clone(),
            retried: false,
        };
        c.last_active = instant;
        if password_set && !c.authed {
            use crate::command::Local;
            if !matches!(
                route,
                Route::Local(Local::Auth | Local::Hello | Local::Quit)
            ) {
                self.reply_now(token, reply::NOAUTH);
                return;
            }
        }
        let req = if c.subscribed || c.pinned || c.txn_broken.is_some() {
            let cmd = id.map_or("unknown", |id| self.commands.spec(id).name);
            match self.dispatch_in_session(token, route, req, cmd) {
                Some(req) => req,
                None => return,
            }
        } else {
            req
        };
        match route {
            Route::Forward => self.forward(token, req),
            Route::ForwardUnlessBlock => {
                let blocking = resp::frame_args(&req)
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(b"BLOCK"));
                if blocking {
                    self.dispatch_session(token, crate::command::Session::Blocking, req);
                } else {
                    self.forward(token, req);
                }
            }
            Route::Local(crate::command::Local::Info)
                if self.ups.have_shards() && wants_keyspace(&req) =>
            {
                let text = self.info(&resp::frame_args(&req)[1..]);
                self.fanout(token, crate::fanout::FanoutCmd::Dbsize, &req, Some(text));
            }
            Route::Local(which) => {
                let answer = self.answer_local(token, which, &req);
                self.reply_now(token, answer);
            }
            Route::Fanout(cmd) if self.fans_out(cmd) && fanout_applies(cmd, &req) => {
                self.fanout(token, cmd, &req, None)
            }
            Route::Fanout(_) => self.forward(token, req),
            Route::Session(which) => self.dispatch_session(token, which, req),
            Route::Reject(why) => self.reply_now(token, resp::error(&format!("ERR {why}"))),
        }
    }

    fn fanout(
        &mut self,
        token: usize,
        cmd: crate::fanout::FanoutCmd,
        req: &[u8],
        info: Option<String>,
    ) {
        let Some((gen, seq)) = self.push_slot(token) else {
            return;
        };
        if let Some(c) = self.conns.client_mut(token) {
            c.barrier = true;
        }
        self.start_fanout(ConnRef { token, gen }, seq, cmd, req, info);
    }

    pub(crate) fn close_client(&mut self, token: usize, why: &str) {
        self.close_session_of(token);
        if let Some(Conn::Client(c)) = self.remove(token) {
            self.clients -= 1;
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
            .filter(|(_, c)| {
                (c.pending.is_empty() || (c.streaming.is_some() && !c.held))
                    && now.duration_since(c.last_active) >= timeout
            })
            .map(|(t, _)| t)
            .collect();
        for token in idle {
            self.close_client(token, "idle timeout");
        }
    }
}

/// What gathering a run stopped at (`process_input`).
enum Step {
    /// The buffer holds no more complete request.
    Stop,
    /// The pending limit: check again (and pause).
    Recheck,
    /// A request of another command: send the run, then gather the next.
    SendRun,
    /// A request that is not plain: it goes its own way.
    Frame(
        Result<Option<Frame>, resp::FrameError>,
        Option<crate::command::CommandId>,
    ),
}

/// A run being gathered: `n` requests of command `cmd`, the first `len` bytes of the read buffer.
#[derive(Debug, Default)]
struct Run {
    len: usize,
    n: u32,
    cmd: crate::command::CommandId,
}

impl Run {
    /// True if a request of command `id` may join.
    fn takes(&self, id: crate::command::CommandId) -> bool {
        self.n == 0 || (self.cmd == id && self.n < MAX_RUN)
    }
}

/// True if `name` is a command that fans out (a barrier in its client's stream).
fn barrier_cmd(
    commands: &CommandTable,
    id: Option<crate::command::CommandId>,
    have_shards: bool,
) -> bool {
    use crate::command::Session;
    use crate::fanout::FanoutCmd;
    match id.map(|id| commands.route(id)) {
        Some(Route::Fanout(FanoutCmd::Script)) => true,
        Some(Route::Fanout(_)) => have_shards,
        // Switching protocol switches backend connections: earlier requests finish first.
        Some(Route::Local(crate::command::Local::Hello)) => true,
        Some(Route::Session(
            Session::Multi | Session::Watch | Session::Blocking | Session::Subscribe,
        ))
        | Some(Route::ForwardUnlessBlock) => true,
        _ => false,
    }
}

/// `SCRIPT` fans out only for LOAD, FLUSH and EXISTS; every other fan-out command always does.
fn fanout_applies(cmd: crate::fanout::FanoutCmd, req: &[u8]) -> bool {
    if cmd != crate::fanout::FanoutCmd::Script {
        return true;
    }
    resp::frame_args(req).get(1).is_some_and(|sub| {
        [&b"LOAD"[..], b"FLUSH", b"EXISTS"]
            .iter()
            .any(|s| sub.eq_ignore_ascii_case(s))
    })
}

/// True if an `INFO` request includes the keyspace section.
fn wants_keyspace(req: &[u8]) -> bool {
    let args = resp::frame_args(req);
    args.len() == 1
        || args[1..].iter().any(|a| {
            [&b"keyspace"[..], b"all", b"everything", b"default"]
                .iter()
                .any(|s| a.eq_ignore_ascii_case(s))
        })
}
