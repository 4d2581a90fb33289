//! `PendingQueue`: reply slots of one client, in request order.
//!
//! ```text
//!  seq:   base   base+1  base+2        base+3
//!         [wait ][ready][run 16: 9 in][wait ]
//!  base's reply ──▶ out, then base+1's ──▶ out; base+2's 9 replies wait until it is the front
//! ```
//!
//! A slot holds one request, or a *run*: consecutive plain requests of the same command that
//! were forwarded together as one buffer, whose replies come back as one buffer too (or in a few
//! parts, when a read ends inside the run). Replies may complete out of order (different
//! backends, fan-outs, local answers); a client only ever receives the longest ready prefix (and
//! what a partly answered front run has so far), so its replies keep its request order. The
//! front slot's replies skip the slot and go straight to the output queue.
//! Invariant: a slot is owed exactly `n` replies, each delivered once, and slots leave only from
//! the front.

use crate::net::OutQueue;
use crate::request::Request;
use crate::resp3::{self, Shape};
use bytes::Bytes;
use std::collections::VecDeque;

/// What a slot remembers of its request: for command statistics and the slow log, a retry
/// (`--retry-reads`), and the RESP3 shape its reply takes for a RESP3 client.
#[derive(Debug, Clone)]
pub struct Tag {
    /// Command id in the command table (`u16::MAX`: unknown).
    pub cmd: u16,
    /// When the request arrived (loop clock, µs).
    pub start: u64,
    /// The request's bytes (a reference to the read buffer, not a copy).
    pub req: Bytes,
    /// Already re-sent once after its backend connection broke (`--retry-reads`).
    pub retried: bool,
    /// Times a Redis Cluster node redirected it (`-MOVED`, `-ASK`) and respite followed.
    pub redirects: u8,
    /// The shape of its reply for a RESP3 client (`Plain` for RESP2 clients: never used).
    pub shape: Shape,
    /// For an EXEC of a RESP3 client: the shapes of the replies of the commands it runs.
    pub exec: Option<Box<[Shape]>>,
}

impl Tag {
    /// The tag of `req`, whose reply takes `shape`.
    pub fn of(req: &Request, shape: Shape) -> Self {
        Tag {
            cmd: req.cmd.unwrap_or(u16::MAX),
            start: req.start,
            req: req.bytes.clone(),
            retried: false,
            redirects: 0,
            shape,
            exec: None,
        }
    }

    /// A tag for requests of command `cmd` in `req` (one, or a run) arriving at `start`.
    pub fn new(cmd: u16, start: u64, req: Bytes) -> Self {
        Tag {
            cmd,
            start,
            req,
            retried: false,
            redirects: 0,
            shape: Shape::Plain,
            exec: None,
        }
    }

    /// A RESP2 reply to its request in the RESP3 shape it takes.
    pub fn to_resp3(&self, reply: &Bytes) -> Bytes {
        match &self.exec {
            Some(shapes) => resp3::convert_exec(shapes, reply),
            None => resp3::convert(self.shape, reply),
        }
    }

    /// A tag for a request of unknown command arriving at `start`.
    pub fn unknown(start: u64) -> Self {
        Tag::new(u16::MAX, start, Bytes::new())
    }
}

#[derive(Debug)]
struct Slot {
    /// The first replies received and not yet handed to the client (a run's later parts, when
    /// its replies arrive in several reads, wait in `PendingQueue::parts`).
    reply: Option<Bytes>,
    /// Replies still owed (0: the slot is complete).
    left: u32,
    /// Requests in the slot: 1, or a run of requests forwarded together.
    n: u32,
    tag: Tag,
}

/// The ordered reply slots of one client.
#[derive(Debug, Default)]
pub struct PendingQueue {
    /// `seq` of the front slot.
    base: u64,
    slots: VecDeque<Slot>,
    /// Slots still owed a reply.
    waiting: usize,
    /// Requests in all slots.
    requests: usize,
    /// Later reply parts of runs, by `seq`, in arrival order (rarely more than one).
    parts: VecDeque<(u64, Bytes)>,
}

impl PendingQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a waiting slot for one request at the back and returns its `seq`.
    pub fn push(&mut self, tag: Tag) -> u64 {
        self.push_run(tag, 1)
    }

    /// Adds a waiting slot for a run of `n ≥ 1` requests (forwarded as one) and returns its `seq`.
    pub fn push_run(&mut self, tag: Tag, n: u32) -> u64 {
        self.slots.push_back(Slot {
            reply: None,
            left: n,
            n,
            tag,
        });
        self.waiting += 1;
        self.requests += n as usize;
        self.base + self.slots.len() as u64 - 1
    }

    /// Adds a slot whose reply is already known (a local answer) and returns its `seq`.
    pub fn push_ready(&mut self, reply: Bytes, tag: Tag) -> u64 {
        self.slots.push_back(Slot {
            reply: Some(reply),
            left: 0,
            n: 1,
            tag,
        });
        self.requests += 1;
        self.base + self.slots.len() as u64 - 1
    }

    /// Adds `k` more replies (in `replies`, in order) to slot `seq`, calling `done` with its tag
    /// and how many of its replies had arrived before these. Replies of the front slot go
    /// straight to `out`, and a complete front slot leaves at once, with the ready ones behind
    /// it; other slots keep theirs until they reach the front. Returns false (and changes
    /// nothing) if the slot does not owe `k` replies: a stale or duplicate completion.
    pub fn complete(
        &mut self,
        seq: u64,
        replies: Bytes,
        k: u32,
        out: &mut OutQueue,
        done: impl FnOnce(&Tag, u32),
    ) -> bool {
        let Some(i) = seq.checked_sub(self.base) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(i as usize) else {
            return false;
        };
        if k == 0 || slot.left < k {
            return false;
        }
        done(&slot.tag, slot.n - slot.left);
        slot.left -= k;
        if slot.left == 0 {
            self.waiting -= 1;
        }
        if i == 0 {
            // At the front, nothing is held back: earlier parts already went out.
            out.push(replies);
            if slot.left == 0 {
                self.requests -= slot.n as usize;
                self.slots.pop_front();
                self.base += 1;
                if self.front_ready() {
                    self.drain_ready_front(out);
                }
            }
        } else if slot.reply.is_none() {
            slot.reply = Some(replies);
        } else {
            self.parts.push_back((seq, replies));
        }
        true
    }

    /// The tag of slot `seq` while it is owed replies.
    pub fn waiting_tag_mut(&mut self, seq: u64) -> Option<&mut Tag> {
        let i = seq.checked_sub(self.base)?;
        self.slots
            .get_mut(i as usize)
            .filter(|s| s.left > 0)
            .map(|s| &mut s.tag)
    }

    /// Moves the replies at the front that may be written, in order, into `out` (complete
    /// slots, and what a partly answered front run has so far).
    pub fn drain_ready_front(&mut self, out: &mut OutQueue) {
        while let Some(front) = self.slots.front_mut() {
            if let Some(reply) = front.reply.take() {
                out.push(reply);
                if !self.parts.is_empty() {
                    let base = self.base;
                    while let Some(i) = self.parts.iter().position(|(seq, _)| *seq == base) {
                        if let Some((_, part)) = self.parts.remove(i) {
                            out.push(part);
                        }
                    }
                }
            }
            if front.left > 0 {
                break;
            }
            self.requests -= front.n as usize;
            self.slots.pop_front();
            self.base += 1;
        }
    }

    /// True when the front slot has replies to hand over.
    pub fn front_ready(&self) -> bool {
        self.slots.front().is_some_and(|s| s.reply.is_some())
    }

    /// Releases the memory of an empty queue.
    pub fn shrink(&mut self) {
        self.slots.shrink_to_fit();
    }

    /// Requests not yet fully handed to the client (waiting, or ready behind a waiting one).
    pub fn len(&self) -> usize {
        self.requests
    }

    /// True when no slot is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots still owed replies.
    pub fn waiting(&self) -> usize {
        self.waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> Tag {
        Tag::unknown(0)
    }

    fn complete(
        q: &mut PendingQueue,
        seq: u64,
        reply: &'static [u8],
        k: u32,
        out: &mut OutQueue,
    ) -> bool {
        q.complete(seq, Bytes::from_static(reply), k, out, |_, _| {})
    }

    #[test]
    fn replies_leave_in_request_order() {
        let mut q = PendingQueue::new();
        let mut out = OutQueue::default();
        let a = q.push(tag());
        let b = q.push(tag());
        let c = q.push_ready(Bytes::from_static(b"c"), tag());
        assert!(complete(&mut q, b, b"b", 1, &mut out));
        assert!(out.is_empty());
        assert!(complete(&mut q, a, b"a", 1, &mut out));
        assert_eq!(out.concat(), b"abc");
        assert_eq!(c, 2);
        assert!(q.is_empty());
        assert_eq!(q.push(tag()), 3);
    }

    #[test]
    fn stale_and_duplicate_completions_are_ignored() {
        let mut q = PendingQueue::new();
        let mut out = OutQueue::default();
        let a = q.push(tag());
        let b = q.push(tag());
        assert!(complete(&mut q, b, b"b", 1, &mut out));
        assert!(!complete(&mut q, b, b"b", 1, &mut out));
        assert!(!complete(&mut q, 7, b"x", 1, &mut out));
        assert!(complete(&mut q, a, b"a", 1, &mut out));
        assert!(!complete(&mut q, a, b"a", 1, &mut out));
        assert_eq!(out.concat(), b"ab");
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_run_streams_its_replies_as_they_come() {
        let mut q = PendingQueue::new();
        let mut out = OutQueue::default();
        let first = q.push(tag());
        let run = q.push_run(tag(), 3);
        let after = q.push(tag());
        assert_eq!(q.len(), 5);
        assert!(complete(&mut q, after, b"d", 1, &mut out));
        let mut firsts = Vec::new();
        let mut part = |q: &mut PendingQueue, r: &'static [u8], k, out: &mut OutQueue| {
            q.complete(run, Bytes::from_static(r), k, out, |_, f| firsts.push(f))
        };
        // Behind the front, a run's parts wait in order...
        assert!(part(&mut q, b"a", 1, &mut out));
        assert!(part(&mut q, b"b", 1, &mut out));
        assert!(out.is_empty());
        // ...and leave once it is the front; later parts go straight out.
        assert!(complete(&mut q, first, b"0", 1, &mut out));
        assert_eq!(out.concat(), b"0ab");
        assert!(!part(&mut q, b"cx", 2, &mut out));
        assert!(part(&mut q, b"c", 1, &mut out));
        assert_eq!(firsts, [0, 1, 2]);
        assert_eq!(q.waiting(), 0);
        assert_eq!(out.concat(), b"0abcd");
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
    }
}
