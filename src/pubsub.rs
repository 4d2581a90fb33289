//! Pub/sub bookkeeping: what a frame on a subscribed connection is, how many frames a request
//! sent on it is answered with, and how many subscriptions a client holds.
//!
//! ```text
//!  SUBSCRIBE a b ──▶ ["subscribe","a",1] ["subscribe","b",2]      two replies, counted
//!  (publish)     ──▶ ["message","a","hi"]                          not a reply: streamed
//!  UNSUBSCRIBE   ──▶ ["unsubscribe","a",1] ["unsubscribe","b",0]   one per channel held
//!  PING          ──▶ ["pong",""]                                   one reply
//! ```
//!
//! Replies keep the client's request order with everything else it sent (they fill its reply
//! slots); messages are not replies and go to the client as they arrive. The counts in the
//! confirmations are Redis's own: channels and patterns together, shard channels apart, so the
//! client's channels, patterns and shard channels are tracked from them exactly.

use crate::request::Request;
use crate::resp::parse_i64;

/// The six subscribe-family commands, by what they act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    Subscribe,
    Unsubscribe,
    PSubscribe,
    PUnsubscribe,
    SSubscribe,
    SUnsubscribe,
}

impl SubKind {
    /// The kind named by a command or a confirmation (any case).
    pub fn from_name(name: &[u8]) -> Option<SubKind> {
        const KINDS: [(&[u8], SubKind); 6] = [
            (b"subscribe", SubKind::Subscribe),
            (b"unsubscribe", SubKind::Unsubscribe),
            (b"psubscribe", SubKind::PSubscribe),
            (b"punsubscribe", SubKind::PUnsubscribe),
            (b"ssubscribe", SubKind::SSubscribe),
            (b"sunsubscribe", SubKind::SUnsubscribe),
        ];
        KINDS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, k)| k)
    }
}

/// What a frame read from a subscribed connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFrame {
    /// A published message (`message`, `pmessage`, `smessage`): not a reply to anything.
    Message,
    /// A subscribe-family confirmation, with the subscription count it reports.
    Confirmation(SubKind, i64),
    /// The reply to some other request (`PING`, an error).
    Reply,
}

impl PushFrame {
    /// Classifies a whole frame, RESP2 (`*`) or RESP3 push (`>`).
    pub fn of(frame: &[u8]) -> PushFrame {
        let Some(rest) = frame
            .strip_prefix(b"*")
            .or_else(|| frame.strip_prefix(b">"))
        else {
            return PushFrame::Reply;
        };
        let Some(kind) = first_bulk(rest) else {
            return PushFrame::Reply;
        };
        if [&b"message"[..], b"pmessage", b"smessage"].contains(&kind) {
            return PushFrame::Message;
        }
        match (SubKind::from_name(kind), last_integer(frame)) {
            (Some(sub), Some(count)) => PushFrame::Confirmation(sub, count),
            _ => PushFrame::Reply,
        }
    }
}

/// The first bulk string of an aggregate whose header (`N\r\n`) starts `rest`.
fn first_bulk(rest: &[u8]) -> Option<&[u8]> {
    let nl = memchr::memchr(b'\n', rest)?;
    let bulk = rest.get(nl + 1..)?.strip_prefix(b"$")?;
    let nl = memchr::memchr(b'\n', bulk)?;
    let len = usize::try_from(parse_i64(bulk.get(..nl.checked_sub(1)?)?)?).ok()?;
    bulk.get(nl + 1..nl + 1 + len)
}

/// `frame` (a confirmation) with the integer that ends it replaced by `n`.
pub fn with_count(frame: &[u8], n: i64) -> Option<bytes::Bytes> {
    let body = frame.strip_suffix(b"\r\n")?;
    let colon = memchr::memrchr(b':', body)?;
    let mut out = bytes::BytesMut::with_capacity(frame.len() + 20);
    out.extend_from_slice(&frame[..colon]);
    crate::resp::put_integer(&mut out, n);
    Some(out.freeze())
}

/// The integer that ends a frame (`...:N\r\n`).
fn last_integer(frame: &[u8]) -> Option<i64> {
    let body = frame.strip_suffix(b"\r\n")?;
    let colon = memchr::memrchr(b':', body)?;
    if body.get(colon.checked_sub(1)?) != Some(&b'\n') {
        return None;
    }
    parse_i64(&body[colon + 1..])
}

/// The subscriptions of one client, as its confirmations reported them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Subscriptions {
    channels: i64,
    patterns: i64,
    shard_channels: i64,
}

impl Subscriptions {
    /// How many frames answer `req` sent on the subscribed connection: one confirmation per
    /// channel named, one per subscription held of its kind for an unsubscribe naming none (at
    /// least one), one for anything else. Exact only once every earlier request on the
    /// connection is answered: an unsubscribe naming nothing waits for that (a barrier).
    pub fn replies_to(&self, req: &Request) -> u32 {
        let kind = req.arg(0).and_then(SubKind::from_name);
        let named = req.argc().saturating_sub(1) as u32;
        let held = match kind {
            Some(SubKind::Unsubscribe) => self.channels,
            Some(SubKind::PUnsubscribe) => self.patterns,
            Some(SubKind::SUnsubscribe) => self.shard_channels,
            Some(_) => return named.max(1),
            None => return 1,
        };
        if named > 0 {
            named
        } else {
            u32::try_from(held).unwrap_or(0).max(1)
        }
    }

    /// Takes in a confirmation: `count` is Redis's count after it (channels and patterns
    /// together, or shard channels).
    pub fn confirm(&mut self, kind: SubKind, count: i64) {
        match kind {
            SubKind::Subscribe | SubKind::Unsubscribe => self.channels = count - self.patterns,
            SubKind::PSubscribe | SubKind::PUnsubscribe => self.patterns = count - self.channels,
            SubKind::SSubscribe | SubKind::SUnsubscribe => self.shard_channels = count,
        }
    }

    /// True when nothing is subscribed: the client is out of subscribed mode.
    pub fn is_empty(&self) -> bool {
        self.channels <= 0 && self.patterns <= 0 && self.shard_channels <= 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmation_takes_another_count() {
        let frame = b"*3\r\n$10\r\nssubscribe\r\n$2\r\nch\r\n:1\r\n";
        let total = with_count(frame, 12).expect("a confirmation");
        assert_eq!(
            &total[..],
            b"*3\r\n$10\r\nssubscribe\r\n$2\r\nch\r\n:12\r\n"
        );
        assert_eq!(
            PushFrame::of(&total),
            PushFrame::Confirmation(SubKind::SSubscribe, 12)
        );
        let push = with_count(b">3\r\n$12\r\nsunsubscribe\r\n$1\r\nc\r\n:0\r\n", 3);
        assert!(push.is_some_and(|p| p.ends_with(b":3\r\n")));
    }
    use crate::command::CommandTable;
    use crate::resp::encode_request;

    fn req(args: &[&[u8]]) -> Request {
        Request::new(encode_request(args), CommandTable::new().lookup(args[0]), 0)
    }

    #[test]
    fn classifies_messages_confirmations_and_replies() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n";
        assert_eq!(PushFrame::of(msg), PushFrame::Message);
        let pmsg = b">4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$1\r\n:\r\n";
        assert_eq!(PushFrame::of(pmsg), PushFrame::Message);
        let sub = b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
        assert_eq!(
            PushFrame::of(sub),
            PushFrame::Confirmation(SubKind::Subscribe, 1)
        );
        let unsub = b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n";
        assert_eq!(
            PushFrame::of(unsub),
            PushFrame::Confirmation(SubKind::PUnsubscribe, 0)
        );
        assert_eq!(
            PushFrame::of(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
            PushFrame::Reply
        );
        assert_eq!(
            PushFrame::of(b"-ERR Can't execute 'get'\r\n"),
            PushFrame::Reply
        );
        assert_eq!(PushFrame::of(b"+PONG\r\n"), PushFrame::Reply);
        // A channel named like a count does not fool it: the count is the frame's last line.
        let odd = b"*3\r\n$9\r\nsubscribe\r\n$2\r\n:7\r\n:2\r\n";
        assert_eq!(
            PushFrame::of(odd),
            PushFrame::Confirmation(SubKind::Subscribe, 2)
        );
    }

    #[test]
    fn counts_the_replies_a_request_owes_from_the_subscriptions_held() {
        let mut subs = Subscriptions::default();
        assert_eq!(subs.replies_to(&req(&[b"SUBSCRIBE", b"a", b"b"])), 2);
        subs.confirm(SubKind::Subscribe, 1);
        subs.confirm(SubKind::Subscribe, 2);
        subs.confirm(SubKind::PSubscribe, 3);
        subs.confirm(SubKind::SSubscribe, 1);
        assert_eq!(subs.replies_to(&req(&[b"UNSUBSCRIBE"])), 2);
        assert_eq!(subs.replies_to(&req(&[b"punsubscribe"])), 1);
        assert_eq!(subs.replies_to(&req(&[b"UNSUBSCRIBE", b"x"])), 1);
        assert_eq!(subs.replies_to(&req(&[b"PING"])), 1);
        subs.confirm(SubKind::Unsubscribe, 2);
        subs.confirm(SubKind::Unsubscribe, 1);
        subs.confirm(SubKind::PUnsubscribe, 0);
        assert!(!subs.is_empty(), "a shard channel is still held");
        subs.confirm(SubKind::SUnsubscribe, 0);
        assert!(subs.is_empty());
        assert_eq!(
            subs.replies_to(&req(&[b"UNSUBSCRIBE"])),
            1,
            "Redis answers once"
        );
    }
}
