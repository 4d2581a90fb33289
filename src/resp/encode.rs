//! The RESP that respite writes itself, and the reader of the frames it scanned.
//!
//! ```text
//!  encode_request(args) ──▶ *N $len arg ...   requests respite sends: AUTH, fan-out, inline re-encoded
//!  put_* / bulk / integer / error ──────────▶ replies respite answers itself
//!  reply::OK, reply::NULL ... ──────────────▶ static replies, shared without allocation
//!  frame_args(frame) ◀── a scanned multibulk  its arguments: local commands, the slow log
//! ```
//!
//! Invariants: every encoder writes whole, well-formed values (an error message's CR and LF become
//! spaces), so what they produce scans back to the same frames.

use super::parse_i64;
use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;

/// The arguments of a complete, already scanned multibulk frame (for commands respite handles
/// itself; never used on the forward path).
pub fn frame_args(frame: &[u8]) -> Vec<&[u8]> {
    let mut args = Vec::new();
    let mut at = match memchr(b'\n', frame) {
        Some(i) => i + 1,
        None => return args,
    };
    while at < frame.len() {
        let Some(nl) = memchr(b'\n', &frame[at..]).map(|i| at + i) else {
            break;
        };
        let Some(n) = parse_i64(&frame[at + 1..nl.saturating_sub(1)]) else {
            break;
        };
        let start = nl + 1;
        let end = start + n.max(0) as usize;
        if end > frame.len() {
            break;
        }
        args.push(&frame[start..end]);
        at = end + 2;
    }
    args
}

/// Encodes `args` as a RESP multibulk request.
pub fn encode_request<A: AsRef<[u8]>>(args: &[A]) -> Bytes {
    let mut out =
        BytesMut::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    out.put_u8(b'*');
    put_decimal(&mut out, args.len() as i64);
    out.put_slice(b"\r\n");
    for a in args {
        put_bulk(&mut out, a.as_ref());
    }
    out.freeze()
}

/// Appends `n` in decimal.
pub fn put_decimal(out: &mut BytesMut, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(&buf[i..]);
}

/// Appends a bulk string.
pub fn put_bulk(out: &mut BytesMut, s: &[u8]) {
    out.put_u8(b'$');
    put_decimal(out, s.len() as i64);
    out.put_slice(b"\r\n");
    out.put_slice(s);
    out.put_slice(b"\r\n");
}

/// Appends an array header.
pub fn put_array_header(out: &mut BytesMut, n: usize) {
    out.put_u8(b'*');
    put_decimal(out, n as i64);
    out.put_slice(b"\r\n");
}

/// Appends an integer reply.
pub fn put_integer(out: &mut BytesMut, n: i64) {
    out.put_u8(b':');
    put_decimal(out, n);
    out.put_slice(b"\r\n");
}

/// A bulk string reply.
pub fn bulk(s: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(s.len() + 16);
    put_bulk(&mut out, s);
    out.freeze()
}

/// An integer reply.
pub fn integer(n: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    put_integer(&mut out, n);
    out.freeze()
}

/// An error reply; `msg` starts with its code (`ERR ...`, `NOAUTH ...`) and must hold no CR/LF.
pub fn error(msg: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    out.put_u8(b'-');
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.put_slice(b"\r\n");
    out.freeze()
}

/// Static replies, shared without allocation.
pub mod reply {
    use bytes::Bytes;
    /// `+OK`
    pub const OK: Bytes = Bytes::from_static(b"+OK\r\n");
    pub const QUEUED: Bytes = Bytes::from_static(b"+QUEUED\r\n");
    /// `+PONG`
    pub const PONG: Bytes = Bytes::from_static(b"+PONG\r\n");
    /// A null bulk string.
    pub const NULL: Bytes = Bytes::from_static(b"$-1\r\n");
    /// `+RESET`
    pub const RESET: Bytes = Bytes::from_static(b"+RESET\r\n");
    /// Sent to a client that must authenticate first.
    pub const NOAUTH: Bytes = Bytes::from_static(b"-NOAUTH Authentication required.\r\n");
    /// Sent when no healthy backend is left.
    pub const NO_BACKEND: Bytes = Bytes::from_static(b"-ERR no backend available\r\n");
    /// Sent before closing a client over `maxclients`.
    pub const MAX_CLIENTS: Bytes = Bytes::from_static(b"-ERR max number of clients reached\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_args_and_encoding_round_trip() {
        let req = encode_request(&[&b"SET"[..], b"k\r\n", b""]);
        assert_eq!(&req[..], b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n");
        assert_eq!(frame_args(&req), vec![&b"SET"[..], b"k\r\n", b""]);
    }
}
