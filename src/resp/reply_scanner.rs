//! The reply boundary scanner: where each backend reply (RESP2 or RESP3) ends, found without
//! decoding it, so that the reply goes back to its client byte for byte.
//!
//! ```text
//!  scan ─ between replies ─┬─ "+OK", a short line, a whole short bulk ─▶ its length, no state
//!                          └─ anything else: owed = 1 ─▶ scan_resumable, any split, a loop of:
//!   header line  line_end, take_line, then by type: simple value or null: owed - 1
//!                bulk: body = N + 2 · aggregate: owed - 1 + N
//!                (maps and attributes: 2N; an attribute still leaves its value owed)
//!   bulk body    skipped by arithmetic, its CRLF checked, owed - 1
//!   owed == 0 ─▶ the reply's length; the scanner starts over
//! ```
//!
//! Invariants: `owed` is 0 only between replies, and nesting is that one count, never recursion,
//! so a 100,000-deep array costs nothing but its bytes. `pos` counts the bytes of the current
//! reply already accounted for; a partial line is searched only from `searched`. A line longer
//! than `MAX_REPLY_LINE_BYTES` is an error however it was split across reads.

use super::request_scanner::{short_number, small_header};
use super::{parse_i64, FrameError};
use memchr::memchr;

/// Longest simple line (`+...`, `-...`, `:...`) accepted in a reply before the backend is
/// considered broken.
const MAX_REPLY_LINE_BYTES: usize = 1024 * 1024;

/// Resumable boundary scanner for replies (RESP2 and RESP3). It never decodes: it only finds
/// where one complete reply ends, counting the values an aggregate still owes.
#[derive(Debug, Default)]
pub struct ReplyScanner {
    /// Bytes of the current reply already accounted for.
    pos: usize,
    /// Values still owed before the reply is complete (0 between replies).
    owed: u64,
    /// Bulk body bytes (with their CRLF) still to skip.
    body: u64,
    /// Within a partial line, everything before this offset holds no `\r`.
    searched: usize,
}

impl ReplyScanner {
    /// A scanner positioned at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scans `buf`, whose first byte is the first byte of the current reply; returns the reply's
    /// length once it is complete (the caller then splits those bytes off).
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        // `owed` is 0 only between replies. Then the common one-line and bulk replies that are
        // already complete are measured here, and an empty buffer (once per read, after the last
        // reply) costs a few instructions.
        if self.owed == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            // No dispatch on the first byte: each check includes it.
            if buf.first_chunk::<5>() == Some(b"+OK\r\n") {
                return Ok(Some(5));
            }
            let found = match short_bulk(buf) {
                None if matches!(buf.first(), Some(b'+' | b'-' | b':')) => short_line(buf),
                found => found,
            };
            if let Some(len) = found {
                return Ok(Some(len));
            }
            self.owed = 1;
        }
        self.scan_resumable(buf)
    }

    /// The general path: any reply, any split, errors.
    ///
    /// What a header does to the count stays inline in this loop: moved into a method, even an
    /// `#[inline(always)]` one, it compiled to a loop that scanned a 1M-element array about 15%
    /// slower. The line search (`line_end`), `take_line` and `finish` leave the array loop's
    /// instructions as they were.
    #[inline(never)]
    fn scan_resumable(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        loop {
            if self.body > 0 {
                let avail = (buf.len() - self.pos) as u64;
                if avail < self.body {
                    let skip = avail.min(self.body.saturating_sub(2));
                    self.pos += skip as usize;
                    self.body -= skip;
                    return Ok(None);
                }
                let end = self.pos + self.body as usize;
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(FrameError::Text("bulk reply not terminated by CRLF"));
                }
                self.pos = end;
                self.body = 0;
                self.owed -= 1;
            } else {
                let Some(&kind) = buf.get(self.pos) else {
                    return Ok(None);
                };
                // Elements of big arrays are mostly short bulk strings and integers: take
                // their header without a memchr call.
                if kind == b'$' || kind == b':' {
                    if let Some((n, next)) = short_number(buf, self.pos + 1) {
                        self.pos = next;
                        self.searched = 0;
                        if kind == b'$' {
                            self.body = n + 2;
                        } else {
                            self.owed -= 1;
                        }
                        if self.owed == 0 {
                            return Ok(Some(self.finish()));
                        }
                        continue;
                    }
                }
                let Some(cr) = self.line_end(buf)? else {
                    return Ok(None);
                };
                let line = self.take_line(buf, cr);
                match kind {
                    b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => self.owed -= 1,
                    b'$' | b'=' | b'!' => match parse_i64(line) {
                        Some(-1) => self.owed -= 1,
                        Some(n) if n >= 0 => self.body = n as u64 + 2,
                        _ => return Err(FrameError::Text("invalid bulk length in reply")),
                    },
                    b'*' | b'~' | b'>' | b'%' | b'|' => {
                        let n = match parse_i64(line) {
                            Some(-1) => 0,
                            Some(n) if n >= 0 => n as u64,
                            _ => return Err(FrameError::Text("invalid aggregate length in reply")),
                        };
                        let children = if matches!(kind, b'%' | b'|') {
                            2 * n
                        } else {
                            n
                        };
                        // An attribute precedes the value it annotates: it owes its pairs and
                        // still leaves that value owed.
                        let consumed = u64::from(kind != b'|');
                        self.owed = (self.owed - consumed)
                            .checked_add(children)
                            .ok_or(FrameError::Text("aggregate too large"))?;
                    }
                    _ => return Err(FrameError::Text("unknown reply type")),
                }
            }
            if self.owed == 0 {
                return Ok(Some(self.finish()));
            }
        }
    }

    /// Where the header line at `pos` ends: the offset of its `\r`, once its `\n` has arrived
    /// too. A partial line is searched only from where the previous call stopped, and a line
    /// longer than `MAX_REPLY_LINE_BYTES` is an error however it was split across reads.
    #[inline(always)]
    fn line_end(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let from = self.searched.max(self.pos + 1);
        let Some(cr) = memchr(b'\r', &buf[from..]).map(|i| from + i) else {
            if buf.len() - self.pos > MAX_REPLY_LINE_BYTES {
                return Err(FrameError::Text("reply line too long"));
            }
            self.searched = buf.len();
            return Ok(None);
        };
        let Some(&lf) = buf.get(cr + 1) else {
            self.searched = cr;
            return Ok(None);
        };
        if lf != b'\n' {
            return Err(FrameError::Text("expected CRLF in reply"));
        }
        if cr - self.pos > MAX_REPLY_LINE_BYTES {
            // Same verdict however the line was split across reads.
            return Err(FrameError::Text("reply line too long"));
        }
        Ok(Some(cr))
    }

    /// The header line at `pos` that ends at `cr`, without its type byte and CRLF; `pos` moves
    /// past it.
    #[inline(always)]
    fn take_line<'b>(&mut self, buf: &'b [u8], cr: usize) -> &'b [u8] {
        self.searched = 0;
        let line = &buf[self.pos + 1..cr];
        self.pos = cr + 2;
        line
    }

    /// The length of the reply just completed; the scanner starts over.
    #[inline(always)]
    fn finish(&mut self) -> usize {
        let len = self.pos;
        *self = ReplyScanner::new();
        len
    }
}

/// The length of the one-line reply at the start of `buf` if its first `\r` is among its first
/// 64 bytes and is followed by `\n`; `None` sends the line to the general path, which gives the
/// same answer or the error.
#[inline(always)]
fn short_line(buf: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let cr = match buf.first_chunk::<8>() {
        Some(head) => {
            // The lowest byte flagged by the zero-byte test is exact (a borrow only runs up).
            let x = u64::from_le_bytes(*head) ^ (ONES * u64::from(b'\r'));
            let found = x.wrapping_sub(ONES) & !x & (ONES << 7);
            if found != 0 {
                (found.trailing_zeros() / 8) as usize
            } else {
                let window = &buf[..buf.len().min(64)];
                8 + window.get(8..)?.iter().position(|&b| b == b'\r')?
            }
        }
        None => buf.iter().position(|&b| b == b'\r')?,
    };
    (buf.get(cr + 1) == Some(&b'\n')).then_some(cr + 2)
}

/// The length of the complete bulk reply at the start of `buf` if its length has one or two
/// digits, or if it is the null bulk string; `None` sends it to the general path.
#[inline(always)]
fn short_bulk(buf: &[u8]) -> Option<usize> {
    if buf.first_chunk::<5>() == Some(b"$-1\r\n") {
        return Some(5);
    }
    let (len, rest) = small_header(buf, b'$')?;
    let len = len as usize;
    (rest.get(len..len + 2)? == b"\r\n").then(|| buf.len() - rest.len() + len + 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(input: &[u8], chunk: usize) -> Result<Vec<usize>, FrameError> {
        let mut sc = ReplyScanner::new();
        let mut buf = Vec::new();
        let mut lens = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(n) = sc.scan(&buf)? {
                lens.push(n);
                buf.drain(..n);
            }
        }
        assert!(buf.is_empty() || lens.iter().sum::<usize>() < input.len());
        Ok(lens)
    }

    #[test]
    fn finds_reply_boundaries_at_every_split_point() {
        let input = b"+OK\r\n$-1\r\n*-1\r\n$0\r\n\r\n*2\r\n*2\r\n:1\r\n$1\r\na\r\n-ERR x\r\n%1\r\n+k\r\n_\r\n|1\r\n+a\r\n+b\r\n:3\r\n*0\r\n";
        let expect = vec![5, 5, 5, 6, 27, 11, 16, 4];
        for split in 1..=input.len() {
            assert_eq!(replies(input, split).unwrap(), expect, "split {split}");
        }
    }

    #[test]
    fn deep_nesting_costs_nothing_but_bytes() {
        let mut input = b"*1\r\n".repeat(100_000);
        input.extend_from_slice(b":1\r\n");
        assert_eq!(replies(&input, 4096).unwrap(), vec![input.len()]);
    }

    #[test]
    fn rejects_bad_replies() {
        assert!(replies(b"?1\r\n", 10).is_err());
        assert!(replies(b"$x\r\n", 10).is_err());
        assert!(replies(b"$1\r\nab\r\n", 10).is_err());
    }
}
