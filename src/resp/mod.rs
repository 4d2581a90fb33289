//! RESP framing: the resumable request scanner, the reply boundary scanner, and small encoders.
//!
//! ```text
//!  client bytes ──▶ RequestScanner ──▶ Frame::Multibulk { len, argc, name }   (forwarded as raw bytes)
//!                                  ├─▶ Frame::Inline { len, args }            (re-encoded once)
//!                                  └─▶ FrameError  ──▶ "-ERR Protocol error: ..." + close
//!  backend bytes ─▶ ReplyScanner ───▶ length of one complete reply frame      (returned byte-for-byte)
//!
//!  request_scanner.rs   Limits, FrameError, Frame, RequestScanner, split_inline, parse_i64
//!  reply_scanner.rs     ReplyScanner
//!  encode.rs            encode_request, put_*, bulk, integer, error, reply::*, frame_args
//! ```
//!
//! Both scanners keep their position between calls, so a frame that arrives in many small reads is
//! scanned in linear time: a bulk body is skipped by arithmetic, never searched, and a partial line
//! is searched only from where the previous call stopped. Neither recurses: the reply scanner
//! tracks nesting as a single count of values still owed, so a 100,000-deep array costs nothing
//! but its bytes. Limits are checked on the header, before any memory is reserved for a body.
//!
//! Each scanner first tries a fast path on a frame that is whole in the buffer and has the common
//! short shape (`GET`/`SET` on short keys, `+OK`, `$N` with one or two digits): its headers are
//! checked a word at a time, with no call. Whatever it declines takes the general path, which
//! accepts the same frames, so the fast path changes no answer, only its cost.
//!
//! The files are private; every public name is re-exported here, so callers write
//! `resp::RequestScanner`, `resp::encode_request`, `resp::reply::OK`.

mod encode;
mod reply_scanner;
mod request_scanner;

pub use encode::{
    bulk, encode_request, error, frame_args, integer, put_array_header, put_bulk, put_decimal,
    put_integer, reply,
};
pub use reply_scanner::ReplyScanner;
pub use request_scanner::{parse_i64, split_inline, Frame, FrameError, Limits, RequestScanner};
