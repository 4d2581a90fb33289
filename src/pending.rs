//! `PendingQueue`: one slot per request of a client, in request order.
//!
//! ```text
//!  seq:   base   base+1  base+2  base+3
//!         [ready][wait ][ready ][wait ]   ── drain_ready_front ──▶ base's reply only
//! ```
//!
//! Replies may complete out of order (different backends, fan-outs, local answers); a client only
//! ever receives the longest ready prefix, so its replies keep its request order. Invariant: every
//! `seq` handed out by `push` is completed at most once, and slots leave only from the front.

use bytes::Bytes;
use std::collections::VecDeque;

/// What a slot remembers of its request, for command statistics and the slow log.
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
}

impl Tag {
    /// Moves the request out for a slot, leaving the command and arrival time (no refcount
    /// traffic per request).
    pub fn take(&mut self) -> Tag {
        Tag {
            cmd: self.cmd,
            start: self.start,
            req: std::mem::take(&mut self.req),
            retried: false,
        }
    }

    /// A tag for a request of unknown command arriving at `start`.
    pub fn unknown(start: u64) -> Self {
        Tag {
            cmd: u16::MAX,
            start,
            req: Bytes::new(),
            retried: false,
        }
    }
}

#[derive(Debug)]
struct Slot {
    reply: Option<Bytes>,
    tag: Tag,
}

/// The ordered reply slots of one client.
#[derive(Debug, Default)]
pub struct PendingQueue {
    /// `seq` of the front slot.
    base: u64,
    slots: VecDeque<Slot>,
    /// Slots still waiting for their reply.
    waiting: usize,
}

impl PendingQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a waiting slot at the back and returns its `seq`.
    pub fn push(&mut self, tag: Tag) -> u64 {
        self.slots.push_back(Slot { reply: None, tag });
        self.waiting += 1;
        self.base + self.slots.len() as u64 - 1
    }

    /// Adds a slot whose reply is already known (a local answer) and returns its `seq`.
    pub fn push_ready(&mut self, reply: Bytes, tag: Tag) -> u64 {
        self.slots.push_back(Slot {
            reply: Some(reply),
            tag,
        });
        self.base + self.slots.len() as u64 - 1
    }

    /// Fills slot `seq` and returns its tag. Returns `None` if there is no such waiting slot (a
    /// stale or duplicate completion), which leaves the queue unchanged.
    pub fn complete(&mut self, seq: u64, reply: Bytes) -> Option<&Tag> {
        let i = seq.checked_sub(self.base)?;
        match self.slots.get_mut(i as usize) {
            Some(slot) if slot.reply.is_none() => {
                slot.reply = Some(reply);
                self.waiting -= 1;
                Some(&slot.tag)
            }
            _ => None,
        }
    }

    /// The tag of slot `seq` if it is still waiting for its reply.
    pub fn waiting_tag_mut(&mut self, seq: u64) -> Option<&mut Tag> {
        let i = seq.checked_sub(self.base)?;
        self.slots
            .get_mut(i as usize)
            .filter(|s| s.reply.is_none())
            .map(|s| &mut s.tag)
    }

    /// Moves the ready replies at the front, in order, into `out`; returns how many.
    pub fn drain_ready_front(&mut self, out: &mut VecDeque<Bytes>) -> usize {
        let mut n = 0;
        while self.slots.front().is_some_and(|s| s.reply.is_some()) {
            if let Some(Slot {
                reply: Some(reply), ..
            }) = self.slots.pop_front()
            {
                out.push_back(reply);
            }
            self.base += 1;
            n += 1;
        }
        n
    }

    /// Releases the memory of an empty queue.
    pub fn shrink(&mut self) {
        self.slots.shrink_to_fit();
    }

    /// Slots not yet handed to the client (waiting or ready behind a waiting one).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no slot is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots still waiting for a reply.
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

    #[test]
    fn replies_leave_in_request_order() {
        let mut q = PendingQueue::new();
        let a = q.push(tag());
        let b = q.push(tag());
        let c = q.push_ready(Bytes::from_static(b"c"), tag());
        let mut out = VecDeque::new();
        assert!(q.complete(b, Bytes::from_static(b"b")).is_some());
        assert_eq!(q.drain_ready_front(&mut out), 0);
        assert!(q.complete(a, Bytes::from_static(b"a")).is_some());
        assert_eq!(q.drain_ready_front(&mut out), 3);
        assert_eq!(out, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(c, 2);
        assert!(q.is_empty());
        assert_eq!(q.push(tag()), 3);
    }

    #[test]
    fn stale_and_duplicate_completions_are_ignored() {
        let mut q = PendingQueue::new();
        let a = q.push(tag());
        assert!(q.complete(a, Bytes::new()).is_some());
        assert!(q.complete(a, Bytes::new()).is_none());
        assert!(q.complete(7, Bytes::new()).is_none());
        let mut out = VecDeque::new();
        q.drain_ready_front(&mut out);
        assert!(q.complete(a, Bytes::new()).is_none());
        assert_eq!(q.waiting(), 0);
    }
}
