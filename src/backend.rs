//! `BackendConn`: one connection to a backend, shard or the pub/sub target, and `Origin`, who
//! waits for each reply on it.
//!
//! ```text
//!   client requests ──▶ unsent [(origin, bytes)] ──write──▶ inflight [(origin, sent_at)] ──reply──▶ origin
//! ```
//!
//! Invariants: `inflight` is in write order, so the front origin owns the next reply; a reply with
//! nothing in flight means the stream is out of sync and the connection is closed. When the
//! connection fails, `unsent` requests were never seen by the backend and are re-routed, while
//! `inflight` ones may have run and get an error, in order — never a silent retry.

use crate::conns::ConnRef;
use crate::resp::ReplyScanner;
use crate::upstream::Upstream;
use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io;
use std::time::Instant;

/// Who waits for a reply on a backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's slot: one request, or a run of `n` forwarded as one buffer.
    Client {
        token: usize,
        gen: u32,
        seq: u64,
        n: u32,
    },
    /// A request sent on a subscribed connection: its answers stream to the client.
    Push,
    /// One part of a fan-out (`fanout.rs`).
    Fanout { id: usize, part: usize },
    /// respite's own `AUTH` on a new connection: its reply is checked and dropped.
    Auth,
    /// A leading piece of a request client `token` streams as it arrives: no reply of its own
    /// (the request's last piece carries the origin that owns the reply).
    Piece { token: usize, gen: u32 },
}

impl Origin {
    /// The replies it is owed.
    pub fn replies(&self) -> u32 {
        match *self {
            Origin::Client { n, .. } => n,
            Origin::Piece { .. } => 0,
            _ => 1,
        }
    }
}

/// One multiplexed connection to a backend.
#[derive(Debug)]
pub struct BackendConn {
    /// The socket.
    pub stream: TcpStream,
    /// Its backend or shard.
    pub upstream: Upstream,
    /// Its slot in the backend's pool.
    pub slot: usize,
    /// The non-blocking connect has completed.
    pub connected: bool,
    /// When the connect started.
    pub opened: Instant,
    /// Requests not yet fully written, in order.
    pub unsent: VecDeque<(Origin, Bytes)>,
    /// Bytes of the front of `unsent` already written.
    pub write_off: usize,
    /// Bytes queued in `unsent` (whole requests; a partly written front still counts).
    pub unsent_bytes: usize,
    /// Clients paused because this connection's queue passed its limit (the backend is not
    /// reading): resumed when it drains or fails.
    pub waiters: Vec<ConnRef>,
    /// Requests written, awaiting replies, in order, with when they were written (loop clock, µs).
    pub inflight: VecDeque<(Origin, u64)>,
    /// Replies of the front of `inflight` (a run) already delivered.
    pub front_done: u32,
    /// When the last of those arrived (loop clock, µs; 0: none yet): a run whose replies keep
    /// coming is not late, however long it streams.
    pub front_progress: u64,
    /// Replies read and not yet framed.
    pub rbuf: BytesMut,
    /// Framing state of `rbuf`.
    pub scanner: ReplyScanner,
    /// Edge state: writable since the last `WouldBlock`.
    pub writable: bool,
    /// Since when a write has been blocked with requests left to send.
    pub stalled_since: Option<Instant>,
    /// Queued in the loop's dirty list.
    pub dirty: bool,
    /// A session connection: the client that owns it (never shared, never re-routed).
    pub owner: Option<ConnRef>,
    /// Said `HELLO 3`: serves RESP3 clients, whose replies then pass through untouched.
    pub resp3: bool,
    /// In subscribed mode: every frame streams to the owner.
    pub subscribed: bool,
    /// The last request sent in subscribed mode was an UNSUBSCRIBE-family command.
    pub last_push_unsub: bool,
}

impl BackendConn {
    /// A connection that has started connecting.
    pub fn new(stream: TcpStream, upstream: Upstream, slot: usize, now: Instant) -> Self {
        BackendConn {
            stream,
            upstream,
            slot,
            connected: false,
            opened: now,
            unsent: VecDeque::new(),
            write_off: 0,
            unsent_bytes: 0,
            waiters: Vec::new(),
            inflight: VecDeque::new(),
            front_done: 0,
            front_progress: 0,
            rbuf: BytesMut::new(),
            scanner: ReplyScanner::new(),
            writable: false,
            stalled_since: None,
            dirty: false,
            owner: None,
            resp3: false,
            subscribed: false,
            last_push_unsub: false,
        }
    }

    /// Queues a request behind the others, keeping `unsent_bytes` in step.
    pub fn queue(&mut self, origin: Origin, req: Bytes) {
        self.unsent_bytes += req.len();
        self.unsent.push_back((origin, req));
    }

    /// Writes queued requests with vectored writes until done or `WouldBlock`; written requests
    /// move to `inflight` stamped with `now`.
    pub fn flush(&mut self, now: Instant, now_us: u64) -> io::Result<()> {
        while !self.unsent.is_empty() {
            let off = self.write_off;
            let res = crate::net::write_queue(&mut self.stream, || {
                self.unsent
                    .iter()
                    .enumerate()
                    .map(move |(i, (_, b))| if i == 0 { &b[off..] } else { &b[..] })
            });
            let mut n = match res {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    self.stalled_since.get_or_insert(now);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            while n > 0 {
                let Some((origin, front)) = self.unsent.front_mut() else {
                    break;
                };
                let left = front.len() - self.write_off;
                if n >= left {
                    n -= left;
                    self.unsent_bytes = self.unsent_bytes.saturating_sub(front.len());
                    let origin = *origin;
                    self.unsent.pop_front();
                    self.write_off = 0;
                    if !matches!(origin, Origin::Piece { .. }) {
                        self.inflight.push_back((origin, now_us));
                    }
                } else {
                    self.write_off += n;
                    n = 0;
                }
            }
        }
        self.stalled_since = None;
        Ok(())
    }

    /// Drops the written part of a partially written front request, so that it can be re-sent
    /// whole elsewhere (a backend never runs half a request).
    pub fn take_unsent(&mut self) -> VecDeque<(Origin, Bytes)> {
        self.write_off = 0;
        self.unsent_bytes = 0;
        std::mem::take(&mut self.unsent)
    }
}
