//! The resumable request scanner: where each client request ends, where its command name lies,
//! and whether it respects the `Limits`, checked on every header before any memory is reserved
//! for a body.
//!
//! ```text
//!  scan ─┬─ at Start ─▶ scan_start ─▶ small_multibulk: whole, ≤ 9 args, 1–2 digit headers,
//!        │                  │         checked a word at a time, no call
//!        └─ mid-frame ──────┴─▶ scan_slow ─▶ whole_multibulk (at Start): whole, any header
//!                                   │        lengths, one pass, no state kept
//!                                   ▼  the resumable loop, any split:
//!   Start ──'*N'──▶ ArgHeader ──'$N'──▶ ArgBody ──┬─ more args ─▶ ArgHeader
//!     │                                            └─ last ──────▶ Frame::Multibulk
//!     ├── '*0', '*-1' ─▶ Frame::Empty
//!     └── other ──▶ Inline ── '\n' ──▶ Frame::Inline (Frame::Empty for a blank line)
//!                   inline_line
//! ```
//!
//! Invariants: the two fast paths accept only frames the resumable path accepts, with the same
//! boundaries, so they change the cost of an answer, never the answer. `pos` counts the bytes of
//! the current frame already accounted for; it is 0 and the state is `Start` between frames. A
//! bulk body is skipped by arithmetic, never searched, but its final CRLF is always checked. An
//! inline line is searched only from where the previous call stopped.
//!
//! The number readers live here and are shared: the reply scanner reads its headers with
//! `small_header` and `short_number`, and `parse_i64` (Redis's `string2ll`) is public. Keeping
//! `parse_i64` in this file, next to its caller `header_line`, keeps them in one codegen unit:
//! with it in `encode.rs`, `scan_slow` compiled to about 20% more instructions per argument of
//! a multibulk split across reads.

use memchr::memchr;

/// Limits a request must respect before respite reserves memory for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest argument count of a multibulk request (Redis: 1,048,576 in practice).
    pub max_args: u64,
    /// Largest bulk string (Redis `proto-max-bulk-len`: 512 MB).
    pub max_bulk_bytes: u64,
    /// Longest inline command line (Redis `PROTO_INLINE_MAX_SIZE`: 64 KB).
    pub max_inline_bytes: usize,
    /// The limits of a client that has not authenticated yet (see `before_auth`).
    pub unauthenticated: bool,
}

impl Limits {
    /// Redis's limits for a client that must authenticate and has not: at most 10 arguments of
    /// at most 16 KB, so that no one can make the proxy buffer much before `AUTH`.
    pub fn before_auth(self) -> Limits {
        Limits {
            max_args: self.max_args.min(10),
            max_bulk_bytes: self.max_bulk_bytes.min(16 * 1024),
            unauthenticated: true,
            ..self
        }
    }

    fn too_many_args(&self) -> FrameError {
        FrameError::Text(if self.unauthenticated {
            "unauthenticated multibulk length"
        } else {
            "invalid multibulk length"
        })
    }

    fn too_long_bulk(&self) -> FrameError {
        FrameError::Text(if self.unauthenticated {
            "unauthenticated bulk length"
        } else {
            "invalid bulk length"
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_args: 1024 * 1024,
            max_bulk_bytes: 512 * 1024 * 1024,
            max_inline_bytes: 64 * 1024,
            unauthenticated: false,
        }
    }
}

/// Longest header line (`*N\r\n`, `$N\r\n`) a well-formed request can have, with slack.
const MAX_HEADER_BYTES: usize = 64;

/// Why a byte stream is not valid RESP, in Redis's words (they follow `-ERR Protocol error: `).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    Text(&'static str),
    /// A multibulk argument that does not start with `$`; Redis names the byte it got.
    ExpectedBulk(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            FrameError::Text(why) => write!(f, "Protocol error: {why}"),
            // Redis prints the raw byte, with CR and LF made spaces like every error text.
            FrameError::ExpectedBulk(b) => {
                let got = if b == b'\r' || b == b'\n' {
                    ' '
                } else {
                    char::from(b)
                };
                write!(f, "Protocol error: expected '$', got '{got}'")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// One complete request at the front of the scanned buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A multibulk request: the first `len` bytes of the buffer, `argc ≥ 1` arguments, the command
    /// name at `name.0 .. name.0 + name.1` within those bytes.
    Multibulk {
        len: usize,
        argc: usize,
        name: (usize, usize),
    },
    /// An inline command line of `len` bytes, split into arguments like redis-server does.
    Inline { len: usize, args: Vec<Vec<u8>> },
    /// `len` bytes that carry no command (`*0\r\n`, `*-1\r\n`, an empty inline line): drop them.
    Empty { len: usize },
}

impl Frame {
    /// The bytes it takes at the front of the scanned buffer.
    pub fn consumed(&self) -> usize {
        match *self {
            Frame::Multibulk { len, .. } | Frame::Inline { len, .. } | Frame::Empty { len } => len,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReqState {
    /// At the first byte of a frame.
    Start,
    /// Inside a multibulk, expecting the `$N\r\n` header of an argument; `left` arguments to go.
    ArgHeader { left: u64 },
    /// Inside an argument body; `body` bytes (including the final CRLF) still to skip.
    ArgBody { left: u64, body: u64 },
    /// Inside an inline line; everything before `searched` holds no `\n`.
    Inline { searched: usize },
}

/// Resumable scanner of client requests. Feed it the same growing buffer until it yields a frame,
/// then remove the frame's bytes from the buffer and keep scanning.
#[derive(Debug)]
pub struct RequestScanner {
    state: ReqState,
    /// Bytes of the current frame already accounted for.
    pos: usize,
    argc: u64,
    name: (usize, usize),
}

impl Default for RequestScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestScanner {
    /// A scanner positioned at the start of a frame.
    pub fn new() -> Self {
        RequestScanner {
            state: ReqState::Start,
            pos: 0,
            argc: 0,
            name: (0, 0),
        }
    }

    /// Bytes of a partial frame already scanned (0 between frames).
    pub fn partial_len(&self) -> usize {
        self.pos
    }

    /// Where the command name lies in the partial multibulk frame being scanned, once the scan
    /// is past it (`None` between frames, inside an inline line, or before the name's end).
    pub fn partial_name(&self) -> Option<(usize, usize)> {
        match self.state {
            ReqState::ArgHeader { left } | ReqState::ArgBody { left, .. } if left < self.argc => {
                Some(self.name).filter(|&(at, _)| at > 0)
            }
            _ => None,
        }
    }

    /// Tells the scanner that the caller took the first `n ≤ partial_len()` bytes of the partial
    /// frame off the buffer (to stream them on): the scan goes on from the same place in the
    /// frame. The name of the frame is forgotten (its `Frame::Multibulk` will say `(0, 0)`).
    pub fn consume(&mut self, n: usize) {
        self.pos -= n.min(self.pos);
        self.name = (0, 0);
    }

    /// Scans `buf`, whose first byte is the first byte of the current frame. Returns the frame
    /// once it is complete; the caller then drops `len` bytes from the front of `buf`.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<Frame>, FrameError> {
        if let ReqState::Start = self.state {
            if buf.is_empty() {
                // Once per read, after the last complete frame: a few instructions, no frame.
                return Ok(None);
            }
            return self.scan_start(buf, limits);
        }
        self.scan_slow(buf, limits)
    }

    /// `scan` at the start of a frame. The fast path calls nothing, so that it needs few
    /// registers; everything else is out of line.
    #[inline(never)]
    fn scan_start(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = small_multibulk(buf, limits) {
            return Ok(Some(frame));
        }
        self.scan_slow(buf, limits)
    }

    /// Everything but the fast path: a whole frame with longer headers, then the resumable
    /// scan for any frame shape, any split, and errors.
    ///
    /// The multibulk states stay inline in this loop on purpose: as step methods that tell the
    /// loop to go on, even `#[inline(always)]` ones, they compiled to a slower loop (up to a
    /// third more instructions on multibulk requests split across reads). Methods that end the
    /// call or return no verdict (`inline_line`, `skip_body_part`, `finish_*`) compile to the
    /// same code as the lines they replace.
    #[inline(never)]
    fn scan_slow(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<Frame>, FrameError> {
        if self.state == ReqState::Start && buf.first() == Some(&b'*') {
            if let Some(frame) = whole_multibulk(buf, limits) {
                return Ok(Some(frame));
            }
        }
        loop {
            match self.state {
                ReqState::Start => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    match first {
                        b'*' => {
                            let Some((n, next)) =
                                header_line(buf, 0, b"too big mbulk count string")?
                            else {
                                return Ok(None);
                            };
                            if n <= 0 {
                                return Ok(Some(self.finish_empty(next)));
                            }
                            if n as u64 > limits.max_args {
                                return Err(limits.too_many_args());
                            }
                            self.pos = next;
                            self.argc = n as u64;
                            self.state = ReqState::ArgHeader { left: n as u64 };
                        }
                        // Anything else starts an inline command, `$4` included, as in Redis.
                        _ => self.state = ReqState::Inline { searched: 0 },
                    }
                }
                ReqState::ArgHeader { left } => {
                    let Some(&first) = buf.get(self.pos) else {
                        return Ok(None);
                    };
                    if first != b'$' {
                        return Err(FrameError::ExpectedBulk(first));
                    }
                    let Some((n, next)) = header_line(buf, self.pos, b"too big bulk count string")?
                    else {
                        return Ok(None);
                    };
                    if n < 0 {
                        return Err(FrameError::Text("invalid bulk length"));
                    }
                    if n as u64 > limits.max_bulk_bytes {
                        return Err(limits.too_long_bulk());
                    }
                    if left == self.argc {
                        self.name = (next, n as usize);
                    }
                    self.pos = next;
                    self.state = ReqState::ArgBody {
                        left,
                        body: n as u64 + 2,
                    };
                }
                ReqState::ArgBody { left, body } => {
                    let avail = (buf.len() - self.pos) as u64;
                    if avail < body {
                        self.skip_body_part(left, body, avail);
                        return Ok(None);
                    }
                    let end = self.pos + body as usize;
                    if body < 2 || &buf[end - 2..end] != b"\r\n" {
                        return Err(FrameError::Text("bulk string not terminated by CRLF"));
                    }
                    self.pos = end;
                    if left == 1 {
                        return Ok(Some(self.finish_multibulk(end)));
                    }
                    self.state = ReqState::ArgHeader { left: left - 1 };
                }
                ReqState::Inline { searched } => return self.inline_line(buf, searched, limits),
            }
        }
    }

    /// `Inline`: the line up to its `\n`, split into arguments like redis-server does. The
    /// search for the `\n` resumes at `searched`, where the previous call stopped.
    #[inline(always)]
    fn inline_line(
        &mut self,
        buf: &[u8],
        searched: usize,
        limits: &Limits,
    ) -> Result<Option<Frame>, FrameError> {
        let Some(nl) = memchr(b'\n', &buf[searched..]).map(|i| searched + i) else {
            if buf.len() > limits.max_inline_bytes {
                return Err(FrameError::Text("too big inline request"));
            }
            self.state = ReqState::Inline {
                searched: buf.len(),
            };
            self.pos = buf.len();
            return Ok(None);
        };
        if nl > limits.max_inline_bytes {
            return Err(FrameError::Text("too big inline request"));
        }
        let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
        let args = split_inline(line)?;
        *self = RequestScanner::new();
        if args.is_empty() {
            return Ok(Some(Frame::Empty { len: nl + 1 }));
        }
        Ok(Some(Frame::Inline { len: nl + 1, args }))
    }

    /// `ArgBody` with `avail < body`: skips the part of the body that has arrived, but never
    /// its final CRLF, which must be checked once it is here.
    #[inline(always)]
    fn skip_body_part(&mut self, left: u64, body: u64, avail: u64) {
        let skip = avail.min(body.saturating_sub(2));
        self.pos += skip as usize;
        self.state = ReqState::ArgBody {
            left,
            body: body - skip,
        };
    }

    /// The multibulk frame of `len` bytes whose last argument was just checked; the scanner
    /// starts over.
    fn finish_multibulk(&mut self, len: usize) -> Frame {
        let frame = Frame::Multibulk {
            len,
            argc: self.argc as usize,
            name: self.name,
        };
        *self = RequestScanner::new();
        frame
    }

    /// The frame of `len` bytes that carries no command (`*0`, `*-1`); the scanner starts over.
    fn finish_empty(&mut self, len: usize) -> Frame {
        *self = RequestScanner::new();
        Frame::Empty { len }
    }
}

/// The fastest path: a whole multibulk request of at most 9 arguments, a command name of at
/// most 9 bytes and other arguments of at most 99 bytes (`GET`, `SET`, `HGET`... on short keys
/// and values), with no call and few registers. Each header is checked a word at a time together
/// with the CRLF before it (see `digit_in`). Anything else returns `None` and takes
/// `whole_multibulk`, which accepts the same frames and finds the same boundaries.
#[inline(always)]
fn small_multibulk(buf: &[u8], limits: &Limits) -> Option<Frame> {
    // `*N\r\n$M\r\n`: the argument count and the length of the name, one digit each.
    let t = u64::from_le_bytes(*buf.first_chunk::<8>()?) ^ u64::from_le_bytes(*b"*0\r\n$0\r\n");
    let argc = digit_in(t as u32, 1)?;
    let name_len = digit_in((t >> 32) as u32, 1)?;
    if argc == 0 || argc as u64 > limits.max_args || limits.max_bulk_bytes < 99 {
        return None;
    }
    let mut at = 8 + name_len;
    for _ in 1..argc {
        // The CRLF that ends the previous argument, then `$N\r\n` or `$NN\r\n`: a complete
        // frame has these 8 bytes, since the argument has at least its CRLF after them.
        let c = buf.get(at..)?.first_chunk::<8>()?;
        let head = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let d = digit_in(head ^ u32::from_le_bytes(*b"\r\n$0"), 3)?;
        if c[4..6] == *b"\r\n" {
            at += 6 + d;
        } else {
            let d0 = c[4].wrapping_sub(b'0');
            if d == 0 || d0 >= 10 || c[5..7] != *b"\r\n" {
                return None;
            }
            at += 7 + d * 10 + usize::from(d0);
        }
    }
    if buf.get(at..at + 2) != Some(b"\r\n") {
        return None;
    }
    Some(Frame::Multibulk {
        len: at + 2,
        argc,
        name: (8, name_len),
    })
}

/// `t` is 4 bytes XOR-ed with the text they should hold, with `0` in byte `at` where a digit
/// goes: the digit, if every other byte matched (is zero). Rotating the digit's byte to the
/// bottom leaves a number below 10 only then.
#[inline(always)]
const fn digit_in(t: u32, at: u32) -> Option<usize> {
    let d = t.rotate_right(8 * at);
    if d < 10 {
        Some(d as usize)
    } else {
        None
    }
}

/// The fast path once `small_multibulk` has declined: a multibulk request that is entirely in
/// `buf` and well-formed, parsed in one pass with no state kept. Anything else (incomplete,
/// malformed, unusual) returns `None` and takes the resumable path, which is taken only from a
/// frame's start, so the whole-frame attempts cost at most two extra passes per frame.
fn whole_multibulk(buf: &[u8], limits: &Limits) -> Option<Frame> {
    let (argc, rest) = header(buf, b'*')?;
    if argc == 0 || argc > limits.max_args {
        return None;
    }
    let max_bulk = limits.max_bulk_bytes;
    // One `$N\r\n<N bytes>\r\n` argument: its length, the bytes left at its body, the bytes
    // left after it.
    let bulk = |rest| {
        let (len, rest) = header(rest, b'$')?;
        if len > max_bulk {
            return None;
        }
        let len = usize::try_from(len).ok()?;
        let (_, after) = rest.split_at_checked(len)?;
        Some((len, rest.len(), after.strip_prefix(b"\r\n")?))
    };
    // The first argument is the command name; the loop covers the others.
    let (name_len, at_name, mut rest) = bulk(rest)?;
    for _ in 1..argc {
        rest = bulk(rest)?.2;
    }
    Some(Frame::Multibulk {
        len: buf.len() - rest.len(),
        argc: usize::try_from(argc).ok()?,
        name: (buf.len() - at_name, name_len),
    })
}

/// A header line at the start of `buf`: `mark`, 1 to 18 digits and CRLF. Returns the number and
/// the bytes after the CRLF.
#[inline]
fn header(buf: &[u8], mark: u8) -> Option<(u64, &[u8])> {
    if let Some(found) = small_header(buf, mark) {
        return Some(found);
    }
    if buf.first() != Some(&mark) {
        return None;
    }
    let (n, next) = short_number(buf, 1)?;
    Some((n, buf.get(next..)?))
}

/// `header` for one and two digits (`*2`, `$3`, `$16`), almost every header: checked a word at
/// a time, with no call.
#[inline(always)]
pub(super) fn small_header(buf: &[u8], mark: u8) -> Option<(u64, &[u8])> {
    let (head, rest) = buf.split_first_chunk::<4>()?;
    let w = u32::from_le_bytes(*head);
    if let Some(d) = digit_in(w ^ u32::from_le_bytes([mark, b'0', b'\r', b'\n']), 1) {
        return Some((d as u64, rest));
    }
    // `mark`, two digits and `\r`, then `\n`: the digits rotated to the bottom two bytes must
    // both be below 10, and the other bytes zero.
    let t = (w ^ u32::from_le_bytes([mark, b'0', b'0', b'\r'])).rotate_right(8);
    match rest.split_first() {
        // The first digit, at the bottom, is not a 0.
        Some((b'\n', rest)) if t < 0x0A00 && (t & 0xFF).wrapping_sub(1) < 9 => {
            Some((u64::from(t & 0xFF) * 10 + u64::from(t >> 8), rest))
        }
        _ => None,
    }
}

/// 1 to 18 digits, the first not a 0 unless alone, and CRLF at `buf[at..]`: the value and the offset past the CRLF.
#[inline]
pub(super) fn short_number(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut i = at;
    let mut n: u64 = 0;
    let end = buf.len().min(at + 18);
    while i < end && buf[i].is_ascii_digit() {
        n = n * 10 + u64::from(buf[i] - b'0');
        i += 1;
    }
    // No leading zero: `$04` is not a length (Redis's `string2ll`).
    let digits = i - at;
    let well_formed = digits == 1 || (digits > 1 && buf[at] != b'0');
    (well_formed && buf.get(i..i + 2) == Some(b"\r\n")).then_some((n, i + 2))
}

/// Parses the header line at `buf[at..]` (`*N\r\n` or `$N\r\n`): the number and the offset just
/// past the CRLF, or `None` if the line is not complete yet.
fn header_line(
    buf: &[u8],
    at: usize,
    too_big: &'static [u8],
) -> Result<Option<(i64, usize)>, FrameError> {
    // Fast path: up to 18 digits (no overflow possible) and CRLF, the shape of almost every
    // header. Anything else takes the strict path below.
    if let Some((n, next)) = short_number(buf, at + 1) {
        return Ok(Some((n as i64, next)));
    }
    let window = &buf[at + 1..buf.len().min(at + 1 + MAX_HEADER_BYTES)];
    let Some(cr) = memchr(b'\r', window) else {
        if window.len() >= MAX_HEADER_BYTES {
            return Err(FrameError::Text(static_str(too_big)));
        }
        return Ok(None);
    };
    let Some(&lf) = buf.get(at + 1 + cr + 1) else {
        return Ok(None);
    };
    if lf != b'\n' {
        return Err(FrameError::Text("expected CRLF after a length"));
    }
    let n = parse_i64(&window[..cr]).ok_or(FrameError::Text(if buf[at] == b'*' {
        "invalid multibulk length"
    } else {
        "invalid bulk length"
    }))?;
    Ok(Some((n, at + 1 + cr + 2)))
}

fn static_str(b: &'static [u8]) -> &'static str {
    std::str::from_utf8(b).unwrap_or("invalid length")
}

/// Parses a decimal integer the way Redis's `string2ll` does: optional `-`, digits, no spaces,
/// no leading `+` or zero, no overflow.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    // `0` is the only number that starts with 0 (`04` and `-0` are not numbers).
    if digits[0] == b'0' && (digits.len() > 1 || neg) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub((d - b'0') as i64)?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// Splits an inline command line into arguments like Redis's `sdssplitargs`: whitespace
/// separated, with `"..."` (C escapes, `\xHH`) and `'...'` (only `\'`) quoting.
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => i = double_quoted(line, i + 1, &mut arg)?,
            b'\'' => i = single_quoted(line, i + 1, &mut arg)?,
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(arg);
    }
}

const UNBALANCED_QUOTES: FrameError = FrameError::Text("unbalanced quotes in request");

/// The rest of a `"..."` argument, from `line[i]` just past the opening quote, into `arg`:
/// C escapes and `\xHH` are decoded. Returns the offset after the closing quote.
fn double_quoted(line: &[u8], mut i: usize, arg: &mut Vec<u8>) -> Result<usize, FrameError> {
    loop {
        match line.get(i) {
            None => return Err(UNBALANCED_QUOTES),
            Some(b'"') => return after_quote(line, i + 1),
            Some(b'\\')
                if line.get(i + 1) == Some(&b'x')
                    && i + 3 < line.len()
                    && hex(line[i + 2]).is_some()
                    && hex(line[i + 3]).is_some() =>
            {
                let (h, l) = (hex(line[i + 2]).unwrap_or(0), hex(line[i + 3]).unwrap_or(0));
                arg.push(h << 4 | l);
                i += 4;
            }
            Some(b'\\') if i + 1 < line.len() => {
                arg.push(match line[i + 1] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => 8,
                    b'a' => 7,
                    c => c,
                });
                i += 2;
            }
            Some(&c) => {
                arg.push(c);
                i += 1;
            }
        }
    }
}

/// The rest of a `'...'` argument, from `line[i]` just past the opening quote, into `arg`:
/// only `\'` is an escape. Returns the offset after the closing quote.
fn single_quoted(line: &[u8], mut i: usize, arg: &mut Vec<u8>) -> Result<usize, FrameError> {
    loop {
        match line.get(i) {
            None => return Err(UNBALANCED_QUOTES),
            Some(b'\'') => return after_quote(line, i + 1),
            Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                arg.push(b'\'');
                i += 2;
            }
            Some(&c) => {
                arg.push(c);
                i += 1;
            }
        }
    }
}

/// `i` is just past a closing quote, which must be followed by a space or the end of the line.
fn after_quote(line: &[u8], i: usize) -> Result<usize, FrameError> {
    match line.get(i) {
        Some(c) if !c.is_ascii_whitespace() => Err(UNBALANCED_QUOTES),
        _ => Ok(i),
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut sc = RequestScanner::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut frames = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(f) = sc.scan(&buf, &Limits::default())? {
                frames.push(buf.drain(..f.consumed()).collect());
            }
        }
        Ok(frames)
    }

    #[test]
    fn scans_a_pipeline_at_every_split_point() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
        for split in 1..=input.len() {
            let frames = scan_all(input, split).unwrap();
            assert_eq!(frames.len(), 4, "split {split}");
            assert_eq!(frames.concat(), input.to_vec());
        }
    }

    #[test]
    fn records_the_command_name() {
        let mut sc = RequestScanner::new();
        let buf = b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n";
        match sc.scan(buf, &Limits::default()).unwrap() {
            Some(Frame::Multibulk { len, argc, name }) => {
                assert_eq!((len, argc), (buf.len(), 2));
                assert_eq!(&buf[name.0..name.0 + name.1], b"get");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_bad_frames() {
        let bad: &[&[u8]] = &[
            b"*1\r\n*1\r\n$4\r\nPING\r\n",
            b"*1\r\n:5\r\n",
            b"*x\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$abc\r\n",
            b"*2147483647\r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$04\r\nPING\r\n",
            b"*-0\r\n",
            b"*1\r\n$4\r\nPINGxx",
            b"set \"a b\r\n",
        ];
        for b in bad {
            assert!(
                scan_all(b, 1000).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        let long = vec![b'a'; 70 * 1024];
        assert!(scan_all(&long, 1000).is_err());
    }

    #[test]
    fn unauthenticated_limits_use_redis_texts() {
        let limits = Limits::default().before_auth();
        let scan = |b: &[u8]| RequestScanner::new().scan(b, &limits);
        let text = |e: Result<Option<Frame>, FrameError>| e.err().map(|e| e.to_string());
        assert_eq!(
            text(scan(b"*11\r\n")).as_deref(),
            Some("Protocol error: unauthenticated multibulk length")
        );
        assert_eq!(
            text(scan(b"*1\r\n$16385\r\n")).as_deref(),
            Some("Protocol error: unauthenticated bulk length")
        );
        assert!(matches!(scan(b"*1\r\n$16384\r\n"), Ok(None)));
    }

    #[test]
    fn parses_inline_commands_like_redis() {
        let frames = scan_all(b"set a b\r\n\r\nget \"x\\r\\ny\" 'it\\'s'\n", 3).unwrap();
        assert_eq!(frames.len(), 3);
        let mut sc = RequestScanner::new();
        match sc
            .scan(b"get \"x\\r\\ny\\x41\" 'it\\'s'\n", &Limits::default())
            .unwrap()
        {
            Some(Frame::Inline { args, .. }) => {
                assert_eq!(
                    args,
                    vec![b"get".to_vec(), b"x\r\nyA".to_vec(), b"it's".to_vec()]
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_bulk_in_small_reads_is_linear() {
        let mut sc = RequestScanner::new();
        let body = vec![b'x'; 1 << 20];
        let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n".to_vec();
        input.extend_from_slice(&body);
        input.extend_from_slice(b"\r\n");
        let mut got = None;
        for end in (0..=input.len()).step_by(1024).chain([input.len()]) {
            if let Some(f) = sc.scan(&input[..end], &Limits::default()).unwrap() {
                got = Some(f);
                break;
            }
        }
        assert!(matches!(got, Some(Frame::Multibulk { len, argc: 3, .. }) if len == input.len()));
    }

    #[test]
    fn a_frame_streamed_at_every_split_point_keeps_its_boundaries() {
        // Once the name is known, the caller takes what was scanned off the buffer after each
        // piece (`consume`): the pieces put back together are the frame, and the frame after it
        // is found intact.
        let input = b"*3\r\n$4\r\nMSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\n*1\r\n$4\r\nPING\r\n";
        let first = input.len() - 14;
        for chunk in 1..=input.len() {
            let mut sc = RequestScanner::new();
            let (mut buf, mut sent, mut name) = (Vec::new(), Vec::new(), None);
            let mut frames = Vec::new();
            for piece in input.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(f) = sc.scan(&buf, &Limits::default()).unwrap() {
                    let Frame::Multibulk { len, .. } = f else {
                        panic!("{f:?}");
                    };
                    sent.extend(buf.drain(..len));
                    frames.push(std::mem::take(&mut sent));
                }
                if let Some((at, n)) = sc.partial_name() {
                    name.get_or_insert_with(|| buf[at..at + n].to_vec());
                }
                let n = sc.partial_len();
                if frames.is_empty() && name.is_some() {
                    sc.consume(n);
                    sent.extend(buf.drain(..n));
                }
            }
            assert_eq!(frames.len(), 2, "chunk {chunk}");
            assert_eq!(frames[0], &input[..first], "chunk {chunk}");
            assert_eq!(frames[1], &input[first..], "chunk {chunk}");
            if chunk < first {
                assert_eq!(name.as_deref(), Some(&b"MSET"[..]), "chunk {chunk}");
            }
        }
    }

    #[test]
    fn parses_integers_strictly() {
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"0"), Some(0));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1a",
            b"04",
            b"-0",
            b"-01",
            b"00",
        ] {
            assert_eq!(parse_i64(bad), None);
        }
    }
}
