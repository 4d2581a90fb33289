//! `BackendConn`: one connection to a backend, shard or the pub/sub target; its `Pipeline`
//! (the two FIFOs and the reply framing, without the socket); and `Origin`, who waits for each
//! reply.
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
use crate::resp::{FrameError, ReplyScanner};
use crate::tls::Stream;
use crate::upstream::Upstream;
use bytes::{Bytes, BytesMut};
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
    /// One part of a fan-out (`fanout.rs`).
    Fanout { id: usize, part: usize },
    /// respite's own `AUTH` on a new connection: its reply is checked and dropped.
    Auth,
    /// A request whose client was answered already (the MULTI and keyless requests of a
    /// transaction held behind twemproxy, a DISCARD respite sends): its reply is dropped.
    Quiet,
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

/// What was cut off a connection's read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A frame on a subscribed connection: it goes to the subscriber as it is.
    Push(Bytes),
    /// Replies for the front origin.
    Replies(Replies),
}

/// `k` replies for `origin` (`failed` of them errors) in one buffer; `whole` when they are the
/// last it was owed. `sent` is when its request was written (loop clock, µs).
#[derive(Debug, PartialEq, Eq)]
pub struct Replies {
    pub origin: Origin,
    pub sent: u64,
    pub frame: Bytes,
    pub k: u32,
    pub failed: u32,
    pub whole: bool,
}

/// Why a connection's reply stream cannot be followed: it must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyFault {
    /// Not valid RESP.
    Bad(FrameError),
    /// A reply with nothing in flight: the stream is out of sync.
    OutOfSync,
}

impl std::fmt::Display for ReplyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyFault::Bad(e) => write!(f, "bad reply: {e}"),
            ReplyFault::OutOfSync => f.write_str("reply with nothing in flight (out of sync)"),
        }
    }
}

/// What a connection that is going away held.
#[derive(Debug, Default)]
pub struct Drained {
    /// The requests written, in order, each with the replies it still owes (the front run may
    /// have had some already).
    pub written: Vec<(Origin, u32)>,
    /// The requests never written, in order: no backend has seen them.
    pub unsent: VecDeque<(Origin, Bytes)>,
}

/// The two FIFOs of one backend connection and the framing of its replies: everything about
/// the request and reply streams but the socket.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Requests not yet fully written, in order.
    unsent: VecDeque<(Origin, Bytes)>,
    /// Bytes of the front of `unsent` already written.
    write_off: usize,
    /// Bytes queued in `unsent` (whole requests; a partly written front still counts).
    unsent_bytes: usize,
    /// Requests written, awaiting replies, in order, with when they were written (µs).
    inflight: VecDeque<(Origin, u64)>,
    /// Replies of the front of `inflight` (a run) already delivered.
    front_done: u32,
    /// When the last of those arrived (µs; 0: none yet): a run whose replies keep coming is not
    /// late, however long it streams.
    front_progress: u64,
    /// Replies framed on this connection so far.
    pub answered: u64,
    /// Replies read and not yet framed.
    pub rbuf: BytesMut,
    /// Framing state of `rbuf`.
    scanner: ReplyScanner,
}

impl Pipeline {
    /// Queues a request behind the others.
    pub fn queue(&mut self, origin: Origin, req: Bytes) {
        self.unsent_bytes += req.len();
        self.unsent.push_back((origin, req));
    }

    /// Bytes queued and not yet written.
    pub fn unsent_bytes(&self) -> usize {
        self.unsent_bytes
    }

    /// True when requests wait to be written.
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Requests written and not fully answered.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// True when nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.unsent.is_empty() && self.inflight.is_empty()
    }

    /// The bytes still to write, in order.
    #[inline]
    pub fn unsent_slices(&self) -> impl Iterator<Item = &[u8]> {
        let off = self.write_off;
        self.unsent
            .iter()
            .enumerate()
            .map(move |(i, (_, b))| if i == 0 { &b[off..] } else { &b[..] })
    }

    /// The socket took `n` more bytes: requests written whole move to `inflight`, stamped with
    /// `now_us` (the leading pieces of a streamed request are owed no reply of their own).
    #[inline]
    pub fn written(&mut self, mut n: usize, now_us: u64) {
        while n > 0 {
            let Some((origin, front)) = self.unsent.front() else {
                return;
            };
            let left = front.len() - self.write_off;
            if n < left {
                self.write_off += n;
                return;
            }
            n -= left;
            self.unsent_bytes = self.unsent_bytes.saturating_sub(front.len());
            let origin = *origin;
            self.unsent.pop_front();
            self.write_off = 0;
            if !matches!(origin, Origin::Piece { .. }) {
                self.inflight.push_back((origin, now_us));
            }
        }
    }

    /// True if the oldest request in flight has waited `timeout_us` for a reply (a run counts
    /// from its last reply).
    pub fn front_late(&self, now_us: u64, timeout_us: u64) -> bool {
        self.inflight.front().is_some_and(|&(_, sent)| {
            now_us.saturating_sub(sent.max(self.front_progress)) >= timeout_us
        })
    }

    /// On a subscribed connection, where every frame is handed over as it is (`Framed::Push`):
    /// counts one that is a reply (not a published message) against the front origin. Returns
    /// that origin, when its request was written, and whether it is now fully answered; `None`
    /// if nothing is in flight.
    pub fn count_reply(&mut self, now_us: u64) -> Option<(Origin, u64, bool)> {
        let &(origin, sent) = self.inflight.front()?;
        self.front_done += 1;
        let whole = self.front_done >= origin.replies();
        if whole {
            self.inflight.pop_front();
            self.front_done = 0;
            self.front_progress = 0;
        } else {
            self.front_progress = now_us;
        }
        Some((origin, sent, whole))
    }

    /// Cuts the next reply off the read buffer — with the rest of a run's replies that are
    /// there, in one buffer — and pops its origin once it has all it was owed. `subscribed`:
    /// every frame is a push; `resp3`: out-of-band push frames are nobody's reply and dropped.
    /// `Ok(None)`: nothing whole yet. `Err`: the stream is broken (a bad reply, or a reply
    /// nobody waits for): the connection must close.
    #[inline]
    pub fn next_replies(
        &mut self,
        subscribed: bool,
        resp3: bool,
        now_us: u64,
    ) -> Result<Option<Framed>, ReplyFault> {
        loop {
            let len = match self.scanner.scan(&self.rbuf) {
                Ok(Some(len)) => len,
                Ok(None) => return Ok(None),
                Err(e) => return Err(ReplyFault::Bad(e)),
            };
            if subscribed {
                return Ok(Some(Framed::Push(self.rbuf.split_to(len).freeze())));
            }
            if resp3 && self.rbuf[0] == b'>' {
                let _ = self.rbuf.split_to(len);
                continue;
            }
            return self.run_replies(len, now_us).map(Some);
        }
    }

    /// The replies for the front origin, starting with the one of `len` bytes at the front of
    /// the buffer: as many of those it is owed as are whole.
    #[inline]
    fn run_replies(&mut self, len: usize, now_us: u64) -> Result<Framed, ReplyFault> {
        let Some(&(origin, sent)) = self.inflight.front() else {
            return Err(ReplyFault::OutOfSync);
        };
        let want = origin.replies() - self.front_done;
        let (mut off, mut k, mut failed) = (len, 1, u32::from(self.rbuf[0] == b'-'));
        while k < want {
            match self.scanner.scan(&self.rbuf[off..]) {
                Ok(Some(len)) => {
                    failed += u32::from(self.rbuf[off] == b'-');
                    off += len;
                    k += 1;
                }
                Ok(None) => break,
                Err(e) => return Err(ReplyFault::Bad(e)),
            }
        }
        self.answered += u64::from(k);
        // When the read ends inside a run, the replies so far are handed over now.
        let whole = k == want;
        if whole {
            self.inflight.pop_front();
            self.front_done = 0;
            self.front_progress = 0;
        } else {
            self.front_done += k;
            self.front_progress = now_us;
        }
        Ok(Framed::Replies(Replies {
            origin,
            sent,
            frame: self.rbuf.split_to(off).freeze(),
            k,
            failed,
            whole,
        }))
    }

    /// Empties both queues for a connection that is going away. A partly written request
    /// counts as never written: it is re-sent whole elsewhere, since a backend never runs half
    /// a request.
    pub fn drain(&mut self) -> Drained {
        let mut done = std::mem::take(&mut self.front_done);
        self.front_progress = 0;
        let written = self
            .inflight
            .drain(..)
            .map(|(origin, _)| (origin, origin.replies() - std::mem::take(&mut done)))
            .collect();
        self.write_off = 0;
        self.unsent_bytes = 0;
        Drained {
            written,
            unsent: std::mem::take(&mut self.unsent),
        }
    }
}

/// One connection to a backend, shard or the pub/sub target: shared by many clients (a pool
/// slot), or a session owned by one.
#[derive(Debug)]
pub struct BackendConn {
    /// The socket.
    pub stream: Stream,
    /// Its backend or shard.
    pub upstream: Upstream,
    /// Its slot in the backend's pool.
    pub slot: usize,
    /// The non-blocking connect has completed.
    pub connected: bool,
    /// When the connect started.
    pub opened: Instant,
    /// Requests and replies.
    pub pipe: Pipeline,
    /// Clients paused because this connection's queue passed its limit (the backend is not
    /// reading): resumed when it drains or fails.
    pub waiters: Vec<ConnRef>,
    /// Edge state: writable since the last `WouldBlock`.
    pub writable: bool,
    /// Since when a write has been blocked with requests left to send.
    pub stalled_since: Option<Instant>,
    /// Queued in the loop's dirty list.
    pub dirty: bool,
    /// A session connection: the client that owns it (never shared, never re-routed).
    pub owner: Option<ConnRef>,
    /// Opened for one request that must not wait behind others (SCRIPT KILL): closed once
    /// answered; its failure never ejects its backend.
    pub oneshot: bool,
    /// Said `HELLO 3`: serves RESP3 clients, whose replies then pass through untouched.
    pub resp3: bool,
    /// In subscribed mode: every frame is handed over as it comes (replies are told from
    /// published messages by `pubsub.rs`).
    pub subscribed: bool,
    /// The shard channels its last confirmation counted (Redis counts them per connection).
    pub shard_channels: i64,
}

impl BackendConn {
    /// A connection that has started connecting.
    pub fn new(stream: Stream, upstream: Upstream, slot: usize, now: Instant) -> Self {
        BackendConn {
            stream,
            upstream,
            slot,
            connected: false,
            opened: now,
            pipe: Pipeline::default(),
            waiters: Vec::new(),
            writable: false,
            stalled_since: None,
            dirty: false,
            owner: None,
            oneshot: false,
            resp3: false,
            subscribed: false,
            shard_channels: 0,
        }
    }

    /// Writes queued requests with vectored writes until done or `WouldBlock`; written requests
    /// move to `inflight` stamped with `now_us`.
    pub fn flush(&mut self, now: Instant, now_us: u64) -> io::Result<()> {
        while self.pipe.has_unsent() {
            let pipe = &self.pipe;
            let n = match self.stream.write_queue(|| pipe.unsent_slices()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    self.stalled_since.get_or_insert(now);
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            self.pipe.written(n, now_us);
        }
        if !self.stream.flush_tls()? {
            self.writable = false;
            return Ok(());
        }
        self.stalled_since = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(seq: u64, n: u32) -> Origin {
        Origin::Client {
            token: 1,
            gen: 1,
            seq,
            n,
        }
    }

    fn replies(framed: Option<Framed>) -> (Origin, Vec<u8>, u32, u32, bool) {
        match framed {
            Some(Framed::Replies(r)) => (r.origin, r.frame.to_vec(), r.k, r.failed, r.whole),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writes_move_requests_in_flight_and_replies_pop_them_in_order() {
        let mut p = Pipeline::default();
        p.queue(client(0, 1), Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"));
        p.queue(client(1, 2), Bytes::from_static(b"GET a\r\nGET b\r\n"));
        assert_eq!(p.unsent_bytes(), 28);
        p.written(10, 5);
        assert_eq!(
            (p.in_flight(), p.unsent_slices().next().unwrap().len()),
            (0, 4)
        );
        p.written(18, 7);
        assert_eq!(
            (p.in_flight(), p.unsent_bytes(), p.has_unsent()),
            (2, 0, false)
        );
        p.rbuf.extend_from_slice(b"+PONG\r\n$1\r\nx\r\n-ERR y\r\n");
        assert_eq!(
            replies(p.next_replies(false, false, 9).unwrap()),
            (client(0, 1), b"+PONG\r\n".to_vec(), 1, 0, true)
        );
        let (origin, frame, k, failed, whole) = replies(p.next_replies(false, false, 9).unwrap());
        assert_eq!((origin, k, failed, whole), (client(1, 2), 2, 1, true));
        assert_eq!(frame, b"$1\r\nx\r\n-ERR y\r\n");
        assert!(p.is_idle());
        p.rbuf.extend_from_slice(b"+OK\r\n");
        let fault = p.next_replies(false, false, 9).unwrap_err();
        assert_eq!(fault, ReplyFault::OutOfSync);
        assert_eq!(
            fault.to_string(),
            "reply with nothing in flight (out of sync)"
        );
    }

    #[test]
    fn a_run_cut_by_a_read_is_handed_over_in_parts_and_is_not_late_while_they_come() {
        let mut p = Pipeline::default();
        p.queue(client(0, 3), Bytes::from_static(b"x"));
        p.written(1, 100);
        p.rbuf.extend_from_slice(b":1\r\n:2");
        assert_eq!(replies(p.next_replies(false, false, 500).unwrap()).2, 1);
        assert!(!p.front_late(600, 200), "its last reply came at 500");
        assert!(p.front_late(700, 200));
        p.rbuf.extend_from_slice(b"\r\n:3\r\n");
        let (_, frame, k, _, whole) = replies(p.next_replies(false, false, 800).unwrap());
        assert_eq!((frame, k, whole), (b":2\r\n:3\r\n".to_vec(), 2, true));
    }

    #[test]
    fn pushes_go_their_own_way() {
        let mut p = Pipeline::default();
        p.rbuf.extend_from_slice(b">2\r\n$1\r\na\r\n$1\r\nb\r\n");
        assert_eq!(
            p.next_replies(false, true, 0),
            Ok(None),
            "dropped on a shared RESP3 conn"
        );
        p.rbuf.extend_from_slice(b"*1\r\n:1\r\n");
        let pushed = p.next_replies(true, false, 0).unwrap();
        assert_eq!(
            pushed,
            Some(Framed::Push(Bytes::from_static(b"*1\r\n:1\r\n")))
        );
    }

    #[test]
    fn draining_owes_the_rest_of_a_part_answered_run_and_returns_the_unwritten() {
        let mut p = Pipeline::default();
        p.queue(client(0, 3), Bytes::from_static(b"abc"));
        p.queue(client(1, 1), Bytes::from_static(b"d"));
        p.queue(Origin::Auth, Bytes::from_static(b"efgh"));
        p.written(4, 0);
        p.written(1, 0);
        p.rbuf.extend_from_slice(b":1\r\n");
        assert!(!replies(p.next_replies(false, false, 0).unwrap()).4);
        let d = p.drain();
        assert_eq!(d.written, vec![(client(0, 3), 2), (client(1, 1), 1)]);
        assert_eq!(d.unsent.len(), 1);
        assert_eq!((p.unsent_bytes(), p.is_idle()), (0, true));
        assert_eq!(p.unsent_slices().count(), 0);
    }
}
