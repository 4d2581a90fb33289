//! Streaming: a request still arriving at 4 MiB goes to a connection of its own piece by piece,
//! so respite never holds a large request whole.

use super::Proxy;
use crate::backend::Origin;
use crate::client::Mode;
use crate::command::{Route, Twem};
use crate::command_table::COMMANDS;
use crate::health::Tier;
use crate::pending::Tag;
use crate::resp;
use crate::resp::Frame;
use crate::upstream::Upstream;
use bytes::Bytes;
use log::{debug, warn};

impl Proxy {
    /// Starts streaming the large partial request at the front of the client's read buffer to
    /// a connection of its own, if it may: a plain client with no earlier request in flight (so
    /// that it runs after them), a forwarded command, a backend and a connection to be had.
    /// Otherwise the request stays buffered until it is whole, as any other.
    pub(super) fn start_stream(&mut self, token: usize) {
        let Proxy {
            conns, commands, ..
        } = self;
        let Some(c) = conns.client_mut(token) else {
            return;
        };
        if !c.plain() || c.pending.waiting() > 0 {
            return;
        }
        let Some(id) = c
            .scanner
            .partial_name()
            .and_then(|(at, n)| commands.lookup(&c.rbuf[at..at + n]))
        else {
            return;
        };
        // Only what the backends serve streams to one (twemproxy closes on anything else).
        let served = matches!(self.ups.tier, Some(Tier::Redis | Tier::Codis))
            || commands.spec(id).twemproxy != Twem::No;
        if commands.route(id) != Route::Forward || !served {
            return;
        }
        let Some(b) = self.ups.pick(&mut self.picker) else {
            return;
        };
        let conn = match self.connect_session(token, Upstream::backend(b), true) {
            Ok(conn) => conn,
            Err(why) => {
                debug!("client={token} buffers a large request: {why:?}");
                return;
            }
        };
        self.ups.backends[b].requests += 1;
        self.stats.total_commands_processed += 1;
        let (now, instant) = (self.clock_us, self.now);
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        debug!(
            "client={token} streams a request of {}+ bytes on conn={conn}",
            c.scanner.partial_len()
        );
        c.last_cmd = COMMANDS[id as usize].name;
        c.last_active = instant;
        // The slot's tag keeps the request's first piece: enough for the slow log.
        let n = c.scanner.partial_len();
        let tag = Tag::new(id, now, Bytes::copy_from_slice(&c.rbuf[..n.min(4096)]));
        let Some(origin) = self.take_slot(token, tag) else {
            return;
        };
        if let Some(c) = self.conns.client_mut(token) {
            c.mode = Mode::Streaming(origin);
        }
        self.stream_input(token);
    }

    /// Sends on what has arrived of the request streaming from client `token`. Returns true
    /// once the request was whole (and sent with its reply slot); later requests then wait
    /// for its reply, as they would behind a fan-out.
    pub(super) fn stream_input(&mut self, token: usize) -> bool {
        let (limits, now) = (self.config.limits, self.now);
        let Some(c) = self.conns.client_mut(token) else {
            return false;
        };
        let (Mode::Streaming(origin), Some(session)) = (&c.mode, c.session) else {
            return false;
        };
        let (origin, conn) = (*origin, session.conn);
        c.last_active = now;
        let (piece, last) = match c.scanner.scan(&c.rbuf, &c.limits(limits)) {
            Ok(Some(Frame::Multibulk { len, .. })) => (c.rbuf.split_to(len).freeze(), true),
            Ok(None) if c.read_closed => {
                // The rest can never come.
                let lost = resp::error("ERR connection closed inside the request");
                self.abort_stream(token, lost);
                return false;
            }
            Ok(None) => {
                let n = c.scanner.partial_len();
                if n == 0 {
                    return false;
                }
                c.scanner.consume(n);
                (c.rbuf.split_to(n).freeze(), false)
            }
            broken => {
                // The backend has part of a request: the request fails, the client is closed
                // once it has its answer, and the connection is dropped.
                let why = match broken {
                    Err(e) => e.to_string(),
                    _ => "Protocol error: expected the rest of a multibulk".into(),
                };
                warn!(
                    "client={token} peer={} {why} in a streamed request; closing",
                    c.peer
                );
                self.stats.protocol_errors += 1;
                self.abort_stream(token, resp::error(&format!("ERR {why}")));
                return false;
            }
        };
        let origin = if last {
            c.mode = Mode::Normal;
            c.barrier = true;
            origin
        } else {
            let Origin::Client { token, gen, .. } = origin else {
                return false;
            };
            Origin::Piece { token, gen }
        };
        self.enqueue(conn.token, origin, piece);
        last
    }

    /// Ends client `token`'s streaming request unfinished: it is answered with `reply`, its
    /// connection is closed (the backend drops the part it has), and so is the client once its
    /// replies are written, since its request stream now has a hole.
    pub(super) fn abort_stream(&mut self, token: usize, reply: Bytes) {
        let Some(c) = self.conns.client_mut(token) else {
            return;
        };
        let Mode::Streaming(origin) = c.mode else {
            return;
        };
        c.mode = Mode::Normal;
        c.close_after_flush = true;
        c.rbuf.clear();
        self.complete(origin, reply);
        self.close_session_of(token);
    }
}
