//! The scan-and-split hot path keeps nothing per request: scanning a prefilled read buffer and
//! cutting each frame off with `split_to(len).freeze()` neither copies nor reallocates.
//!
//! ```text
//!  one allocation: [ req 0 | req 1 | req 2 | ... ]   read buffer, filled once
//!                    ▲       ▲                       each frozen frame points into it
//!                    Bytes   Bytes
//! ```
//!
//! The scanners own no heap memory (they need no `Drop`), a multibulk frame and a reply length
//! carry no heap data, and every frozen frame is a view at the expected offset of the one
//! buffer, which never moves. (`alloc_count.rs` counts the whole proxy's allocations.)

use bytes::BytesMut;
use respite::resp::{encode_request, Frame, Limits, ReplyScanner, RequestScanner};

const REQUESTS: usize = 10_000;

fn prefilled_requests() -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..REQUESTS {
        let key = format!("key:{i}");
        if i % 2 == 0 {
            buf.extend_from_slice(&encode_request(&[&b"SET"[..], key.as_bytes(), b"value"]));
        } else {
            buf.extend_from_slice(&encode_request(&[&b"GET"[..], key.as_bytes()]));
        }
    }
    buf
}

#[test]
fn scanners_own_no_heap_memory() {
    assert!(!std::mem::needs_drop::<RequestScanner>());
    assert!(!std::mem::needs_drop::<ReplyScanner>());
    assert!(!std::mem::needs_drop::<Limits>());
}

#[test]
fn request_scan_and_split_copies_nothing() {
    let mut buf = prefilled_requests();
    let limits = Limits::default();
    let base = buf.as_ptr() as usize;
    let total = buf.len();
    let mut sc = RequestScanner::new();
    let mut consumed = 0;
    let mut frames = Vec::with_capacity(REQUESTS);
    while !buf.is_empty() {
        let len = match sc.scan(&buf, &limits) {
            Ok(Some(frame @ Frame::Multibulk { .. })) => frame.consumed(),
            other => panic!("at {consumed}: {other:?}"),
        };
        let frame = buf.split_to(len).freeze();
        assert_eq!(frame.as_ptr() as usize, base + consumed, "request copied");
        consumed += len;
        assert_eq!(buf.as_ptr() as usize, base + consumed, "read buffer moved");
        frames.push(frame);
    }
    assert_eq!((frames.len(), consumed), (REQUESTS, total));
    assert_eq!(sc.partial_len(), 0);
}

#[test]
fn reply_scan_and_split_copies_nothing() {
    let mut buf = BytesMut::new();
    for i in 0..REQUESTS {
        match i % 3 {
            0 => buf.extend_from_slice(b"+OK\r\n"),
            1 => buf.extend_from_slice(b"$5\r\nvalue\r\n"),
            _ => buf.extend_from_slice(b"*2\r\n:1\r\n$-1\r\n"),
        }
    }
    let base = buf.as_ptr() as usize;
    let mut sc = ReplyScanner::new();
    let mut consumed = 0;
    let mut replies = 0;
    while let Ok(Some(len)) = sc.scan(&buf) {
        let reply = buf.split_to(len).freeze();
        assert_eq!(reply.as_ptr() as usize, base + consumed, "reply copied");
        consumed += len;
        replies += 1;
    }
    assert!(buf.is_empty());
    assert_eq!(replies, REQUESTS);
}
