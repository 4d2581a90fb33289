//! The checks behind respite's fuzz targets, kept in plain functions so that `cargo test`
//! (`tests/corpus_replay.rs`, via `#[path]`) replays the committed corpora on stable.
//!
//! ```text
//!  input = [control byte(s)] [payload]
//!           │                  │
//!           │                  ├─▶ scanned whole ───────────┐
//!           └─ chunking ──────▶├─▶ scanned in chunks ───────┤
//!                              ├─▶ streamed in chunks ──────┴─▶ same frames, same error
//!                              └─▶ redis-protocol decode_range ─▶ same boundaries (differential)
//! ```
//!
//! Invariants checked on every input: no panic; every frame is non-empty and lies inside the
//! buffer; frames join back to exactly the consumed prefix of the payload; a chunked scan gives
//! the same frames and the same error as a whole scan, and so does a chunked scan that streams
//! each multibulk frame on (`consume`) once its `partial_name()` is known. Only `respite` and
//! `redis_protocol` may be used here: the main crate's integration tests compile this file too.
//!
//! A certificate's expiry (`check_cert_expiry`) is read from any bytes without a panic, and
//! bytes after the certificate never change it.
//!
//! The SCAN cursor codec (`check_cursor_codec`) is checked apart: a packed cursor round-trips
//! through its decimal text, and any bytes decode to `None` or to a triple that packs back into
//! the same integer.

use redis_protocol::resp2::decode::decode_range as resp2_decode_range;
use redis_protocol::resp2::types::RangeFrame as Resp2Frame;
use redis_protocol::resp3::decode::complete::decode_range as resp3_decode_range;
use respite::fanout::{decode_cursor, encode_cursor, parse_u128, topology_tag, MAX_SHARDS};
use respite::resp::{parse_i64, Frame, FrameError, Limits, ReplyScanner, RequestScanner};

/// Aggregate type bytes beyond which the differential target skips an input: redis-protocol
/// decodes recursively, and its stack, not respite's, would overflow.
pub const MAX_REFERENCE_NESTING: usize = 64;

/// Nesting depths the reply target wraps its payload in (`*1\r\n` repeated), chosen by the top
/// three bits of the control byte.
const NEST_DEPTHS: [usize; 8] = [0, 0, 0, 1, 2, 3, 64, 5_000];

/// Chunk sizes that add up to `total`, chosen by `sel`: single bytes, a fixed size, a power of
/// two, or pseudo-random small sizes (which land splits inside headers, bodies and CRLFs).
pub fn chunk_sizes(sel: u8, total: usize) -> Vec<usize> {
    let sel = usize::from(sel);
    let mut rng = (sel as u32).wrapping_mul(0x9E37_79B9) | 1;
    let mut sizes = Vec::new();
    let mut left = total;
    while left > 0 {
        let n = match sel % 4 {
            0 => 1,
            1 => sel / 4 + 2,
            2 => 1 << (sel / 4 % 13),
            _ => {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                1 + (rng % (sel as u32 / 4 + 3)) as usize
            }
        };
        let n = n.min(left);
        sizes.push(n);
        left -= n;
    }
    sizes
}

/// What scanning a payload produced: the frames in order, the bytes they consumed, and the error
/// that stopped the scan, if any.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestRun {
    pub frames: Vec<Frame>,
    pub consumed: usize,
    pub error: Option<FrameError>,
}

/// Feeds `input` to one `RequestScanner` in `chunks`, the way a connection does: append to a
/// growing buffer, scan until `None`, drain each frame. With `rescan`, every `None` is followed
/// by a second call on the unchanged buffer, which must also say `None`.
pub fn run_requests(input: &[u8], chunks: &[usize], limits: &Limits, rescan: bool) -> RequestRun {
    let mut sc = RequestScanner::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut run = RequestRun::default();
    let mut fed = 0;
    for &n in chunks {
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match sc.scan(&buf, limits) {
                Ok(Some(frame)) => {
                    let len = frame.consumed();
                    assert!(
                        len > 0 && len <= buf.len(),
                        "frame of {len} bytes in {buf:?}"
                    );
                    assert_eq!(&buf[..len], &input[run.consumed..run.consumed + len]);
                    check_request_frame(&buf[..len], &frame);
                    buf.drain(..len);
                    run.consumed += len;
                    run.frames.push(frame);
                }
                Ok(None) => {
                    assert!(sc.partial_len() <= buf.len());
                    if rescan {
                        assert_eq!(sc.scan(&buf, limits), Ok(None), "rescan of {buf:?}");
                    }
                    break;
                }
                Err(e) => {
                    run.error = Some(e);
                    return run;
                }
            }
        }
    }
    run
}

/// What one request frame must look like, whatever the input.
fn check_request_frame(bytes: &[u8], frame: &Frame) {
    match frame {
        Frame::Multibulk { len, argc, name } => {
            assert_eq!(bytes[0], b'*');
            assert!(*argc >= 1);
            assert!(
                name.0 >= 2 && name.0 + name.1 + 2 <= *len,
                "{name:?} in {bytes:?}"
            );
            assert_eq!(&bytes[name.0 - 2..name.0], b"\r\n");
            // The reference must read the same frame as an array of `argc` bulk strings whose
            // first one is the reported name.
            match resp2_decode_range(bytes) {
                Ok(Some((Resp2Frame::Array(args), n))) => {
                    assert_eq!(n, *len, "{bytes:?}");
                    assert_eq!(args.len(), *argc, "{bytes:?}");
                    assert!(args.iter().all(|a| matches!(a, Resp2Frame::BulkString(_))));
                    assert!(
                        matches!(args[0], Resp2Frame::BulkString((s, e)) if (s, e - s) == *name),
                        "name {name:?} vs {:?}",
                        args[0]
                    );
                }
                other => panic!("redis-protocol reads {bytes:?} as {other:?}"),
            }
        }
        Frame::Inline { len, args } => {
            assert_eq!(bytes[len - 1], b'\n');
            assert!(!bytes[..len - 1].contains(&b'\n'));
            assert_ne!(bytes[0], b'*');
            assert!(!args.is_empty());
        }
        Frame::Empty { len } => {
            assert_eq!(bytes[len - 1], b'\n');
            if bytes[0] == b'*' {
                assert!(bytes.ends_with(b"\r\n"));
                assert!(matches!(parse_i64(&bytes[1..len - 2]), Some(n) if n <= 0));
            } else {
                assert!(bytes.iter().all(u8::is_ascii_whitespace), "{bytes:?}");
            }
        }
    }
}

/// The request scanner target. Control byte: bit 7 picks tight limits (so limit errors are
/// reached by small inputs), bits 0–6 the chunking.
pub fn check_request_scanner(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let limits = if sel & 0x80 != 0 {
        Limits {
            max_args: 4,
            max_bulk_bytes: 16,
            max_inline_bytes: 32,
            ..Limits::default()
        }
    } else {
        Limits::default()
    };
    let whole = run_requests(input, &[input.len()], &limits, false);
    let chunks = chunk_sizes(sel & 0x7f, input.len());
    let chunked = run_requests(input, &chunks, &limits, true);
    assert_eq!(whole, chunked, "chunking {} of {input:?}", sel & 0x7f);
    // Keeping 0 bytes is how the proxy streams; keeping one tests `consume` below `partial_len`.
    for keep in [0, 1] {
        let streamed = stream_requests(input, &chunks, &limits, keep);
        assert_eq!(
            whole,
            streamed,
            "streamed, keeping {keep}, chunking {} of {input:?}",
            sel & 0x7f
        );
    }
}

/// `run_requests` in the proxy's streaming mode: once a partial multibulk frame's
/// `partial_name()` is known, every scan that stops inside the frame is followed by taking the
/// scanned bytes but the last `keep` off the buffer (`consume`) into the frame's sent pieces.
/// Each frame is reported with its whole length, and a streamed one with the name that
/// `partial_name()` gave (its `Frame::Multibulk` itself must say `(0, 0)`), so the result
/// compares equal to an unstreamed scan's.
pub fn stream_requests(input: &[u8], chunks: &[usize], limits: &Limits, keep: usize) -> RequestRun {
    let mut sc = RequestScanner::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut run = RequestRun::default();
    // Bytes of the current frame taken off the buffer, and the name seen before the first take.
    let mut sent: Vec<u8> = Vec::new();
    let mut name: Option<(usize, usize)> = None;
    let mut fed = 0;
    for &n in chunks {
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match sc.scan(&buf, limits) {
                Ok(Some(mut frame)) => {
                    let len = frame.consumed();
                    assert!(len <= buf.len(), "frame of {len} bytes in {buf:?}");
                    sent.extend(buf.drain(..len));
                    let start = run.consumed;
                    assert_eq!(sent, &input[start..start + sent.len()], "frame at {start}");
                    assert_eq!((sc.partial_len(), sc.partial_name()), (0, None));
                    if let Some(seen) = name.take() {
                        let Frame::Multibulk { len, argc, name } = frame else {
                            panic!("streamed frame at {start} ends as {frame:?}");
                        };
                        assert_eq!(name, (0, 0), "streamed frame at {start} keeps its name");
                        frame = Frame::Multibulk {
                            len,
                            argc,
                            name: seen,
                        };
                    }
                    match &mut frame {
                        Frame::Multibulk { len, .. }
                        | Frame::Inline { len, .. }
                        | Frame::Empty { len } => *len = sent.len(),
                    }
                    run.consumed += sent.len();
                    run.frames.push(frame);
                    sent.clear();
                }
                Ok(None) => {
                    let scanned = sc.partial_len();
                    assert!(scanned <= buf.len());
                    if let Some(found @ (at, len)) = sc.partial_name() {
                        // Only reported before the first take: `consume` forgets the name.
                        assert!(sent.is_empty(), "name {found:?} after a take");
                        assert!(
                            name.is_none() || name == Some(found),
                            "name moved to {found:?}"
                        );
                        assert!(at >= 4 && at + len + 2 <= scanned, "name {found:?}");
                        assert_eq!(&buf[at - 2..at], b"\r\n");
                        name = Some(found);
                    }
                    if name.is_some() && scanned > keep {
                        let take = scanned - keep;
                        sc.consume(take);
                        sent.extend(buf.drain(..take));
                        assert_eq!(sc.partial_len(), keep);
                        assert_eq!(sc.partial_name(), None);
                        assert_eq!(sc.scan(&buf, limits), Ok(None), "rescan after a take");
                        assert_eq!(sc.partial_len(), keep);
                    }
                    break;
                }
                Err(e) => {
                    run.error = Some(e);
                    return run;
                }
            }
        }
    }
    let start = run.consumed;
    assert_eq!(
        sent,
        &input[start..start + sent.len()],
        "partial frame at {start}"
    );
    run
}

/// Reply lengths found in order, the bytes they consumed, and the error that stopped the scan.
#[derive(Debug, PartialEq, Eq)]
pub struct ReplyRun {
    pub frames: Vec<usize>,
    pub consumed: usize,
    pub error: Option<FrameError>,
}

/// Feeds `input` to one `ReplyScanner` in `chunks`; see `run_requests`.
pub fn run_replies(input: &[u8], chunks: &[usize], rescan: bool) -> ReplyRun {
    let mut sc = ReplyScanner::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut run = ReplyRun {
        frames: Vec::new(),
        consumed: 0,
        error: None,
    };
    let mut fed = 0;
    for &n in chunks {
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            match sc.scan(&buf) {
                Ok(Some(len)) => {
                    assert!(len > 0 && len <= buf.len(), "reply of {len} bytes");
                    assert_eq!(&buf[..len], &input[run.consumed..run.consumed + len]);
                    assert!(buf[..len].ends_with(b"\r\n"));
                    buf.drain(..len);
                    run.consumed += len;
                    run.frames.push(len);
                }
                Ok(None) => {
                    if rescan {
                        assert_eq!(sc.scan(&buf), Ok(None), "rescan");
                    }
                    break;
                }
                Err(e) => {
                    run.error = Some(e);
                    return run;
                }
            }
        }
    }
    run
}

/// The reply scanner target. Control byte: bits 0–4 pick the chunking, bits 5–7 a nesting depth.
/// Wrapping the payload in `depth` one-element arrays must lengthen its first reply by exactly
/// `4 * depth` bytes and change nothing else (same later replies, same error).
pub fn check_reply_scanner(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let chunking = sel & 0x1f;
    let whole = run_replies(input, &[input.len()], false);
    let chunked = run_replies(input, &chunk_sizes(chunking, input.len()), true);
    assert_eq!(whole, chunked, "chunking {chunking} of {input:?}");

    let depth = NEST_DEPTHS[usize::from(sel >> 5)];
    if depth == 0 {
        return;
    }
    let mut nested = b"*1\r\n".repeat(depth);
    nested.extend_from_slice(input);
    let deep = run_replies(&nested, &[nested.len()], false);
    // Small chunks over 400 KB of headers would only slow the fuzzer down.
    let chunking = if depth >= 10_000 {
        chunking | 2
    } else {
        chunking
    };
    let deep_chunked = run_replies(&nested, &chunk_sizes(chunking, nested.len()), true);
    assert_eq!(deep, deep_chunked, "depth {depth}, chunking {chunking}");
    assert_eq!(deep.error, whole.error, "depth {depth} of {input:?}");
    match whole.frames.split_first() {
        None => assert!(deep.frames.is_empty()),
        Some((first, rest)) => {
            assert_eq!(
                deep.frames[0],
                first + 4 * depth,
                "depth {depth} of {input:?}"
            );
            assert_eq!(&deep.frames[1..], rest);
        }
    }
}

/// Differential target: respite's reply boundaries against redis-protocol's `decode_range`
/// (RESP2 and RESP3 "complete" decoders), reply after reply along the input.
///
/// Where redis-protocol decodes a complete reply of `m` bytes, respite must find a reply of `m`
/// bytes, except where redis-protocol is more lenient than respite (see `reference_leniency`).
/// Where respite finds a reply that neither decoder accepts with that length, the reply must use
/// a leniency of respite's (see `classify_reply`): respite finds boundaries and does not
/// validate what it forwards unchanged.
pub fn check_differential(data: &[u8]) {
    let aggregates = data
        .iter()
        .filter(|b| matches!(b, b'*' | b'%' | b'~' | b'>' | b'|'))
        .count();
    if aggregates > MAX_REFERENCE_NESTING {
        return;
    }
    let mut off = 0;
    while off < data.len() {
        let buf = &data[off..];
        let ours = ReplyScanner::new().scan(buf);
        let resp2 = match resp2_decode_range(buf) {
            Ok(Some((_, n))) => Some(n),
            _ => None,
        };
        let resp3 = match resp3_decode_range(buf) {
            Ok(Some((_, n))) => Some(n),
            _ => None,
        };
        for theirs in [resp2, resp3].into_iter().flatten() {
            if ours != Ok(Some(theirs)) {
                assert!(
                    reference_leniency(&buf[..theirs], &ours),
                    "redis-protocol reads a reply of {theirs} bytes, respite {ours:?}, in {:?}",
                    String::from_utf8_lossy(buf)
                );
            }
        }
        let Ok(Some(n)) = ours else {
            break;
        };
        if resp2 != Some(n) && resp3 != Some(n) {
            match classify_reply(&buf[..n]) {
                Ok(Class::Lenient) => {}
                Ok(Class::Common) => panic!(
                    "respite accepts {:?} ({n} bytes), redis-protocol does not \
                     (resp2 {resp2:?}, resp3 {resp3:?})",
                    String::from_utf8_lossy(&buf[..n])
                ),
                Err(why) => panic!(
                    "respite accepts {:?} ({n} bytes), the model says {why}",
                    String::from_utf8_lossy(&buf[..n])
                ),
            }
        }
        off += n;
    }
}

/// Where redis-protocol accepts what respite rejects. redis-protocol:
/// - ends a line at the first CRLF, so it takes a bare CR inside a line; respite ends a line at
///   its first CR and requires LF next (Redis never puts CR or LF in a simple line);
/// - parses lengths with `str::parse`, so it takes `+3`, `-0`, `01` and more than 19 digits;
///   respite uses Redis's `string2ll` rules;
/// - knows HELLO (`H...`), RESP3 streamed chunks (`;`) and end markers (`.`), which a Redis
///   server never sends as a reply;
/// - skips the two bytes after a bulk body without checking that they are CRLF; respite checks
///   (`ours` is then that error).
pub fn reference_leniency(frame: &[u8], ours: &Result<Option<usize>, FrameError>) -> bool {
    if matches!(ours, Err(FrameError::Text(why)) if why.contains("not terminated by CRLF")) {
        return true;
    }
    let bare_cr = frame
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && frame.get(i + 1) != Some(&b'\n'));
    let plus_len = frame
        .windows(2)
        .any(|w| b"$*%~>|=!;".contains(&w[0]) && w[1] == b'+');
    let long_digits = frame
        .split(|b| !b.is_ascii_digit())
        .any(|run| run.len() > 19);
    let odd_type = std::iter::once(0)
        .chain(
            frame
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .filter_map(|i| frame.get(i))
        .any(|b| matches!(b, b'H' | b';' | b'.'));
    // Lengths as Redis's string2ll reads them: no leading zero, no "-0" (redis-protocol
    // takes both).
    let zero_led = frame.windows(3).any(|w| {
        b"$*%~>|=!".contains(&w[0]) && (w[1] == b'0' && w[2].is_ascii_digit() || w[1..] == *b"-0")
    });
    bare_cr || plus_len || long_digits || odd_type || zero_led
}

/// Whether a reply respite accepted lies in the syntax both sides define alike.
#[derive(Debug, PartialEq, Eq)]
pub enum Class {
    /// Both redis-protocol decoders should agree with respite on it (one of them accepts it).
    Common,
    /// It uses a leniency of respite's, listed on `classify_reply`.
    Lenient,
}

struct Level {
    kind: u8,
    /// Children (for maps and attributes, keys and values) this aggregate holds.
    len: u64,
    /// Children seen so far.
    seen: u64,
}

/// Walks one reply (a model of respite's grammar, without recursion) and tells whether it uses
/// one of respite's leniencies, where redis-protocol rejects or stalls:
/// - simple lines are not validated: `:` need not be an i64, `,` a float, `#` `t`/`f`;
/// - a verbatim string (`=`) need not be 4+ bytes starting with `txt`/`mkd`;
/// - a `-1` length means null for every type (redis-protocol: only `$`/`*`, and in RESP3 it reads
///   `$-1`/`*-1` as a streamed header, so it rejects them nested in a RESP3 reply), and a length
///   may be written `-0`;
/// - map keys, set members and attribute keys may be aggregates (redis-protocol hashes them);
/// - an attribute may annotate a null or another attribute.
///
/// `Err` means the model does not find a reply of exactly these bytes: a disagreement with
/// respite's scanner.
pub fn classify_reply(frame: &[u8]) -> Result<Class, String> {
    let mut stack: Vec<Level> = Vec::new();
    let mut pos = 0;
    let mut lenient = false;
    let mut resp3 = false;
    let mut null_len = false;
    let mut after_attribute = false;
    loop {
        let must_hash = match stack.last() {
            Some(l) if l.kind == b'~' => true,
            Some(l) if matches!(l.kind, b'%' | b'|') => l.seen % 2 == 0,
            _ => false,
        };
        let annotated = std::mem::take(&mut after_attribute);
        let kind = *frame.get(pos).ok_or("ran out of bytes")?;
        let cr = frame[pos + 1..]
            .iter()
            .position(|&b| b == b'\r')
            .map(|i| pos + 1 + i)
            .ok_or("line without CR")?;
        if frame.get(cr + 1) != Some(&b'\n') {
            return Err(format!("bare CR at {cr}"));
        }
        let line = &frame[pos + 1..cr];
        pos = cr + 2;
        resp3 |= !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*');
        let strict_len = !line.is_empty() && line.iter().all(u8::is_ascii_digit);
        let mut complete = true;
        match kind {
            b'+' | b'-' | b'(' => {}
            b'_' => lenient |= annotated,
            b':' => lenient |= parse::<i64>(line).is_none(),
            b',' => lenient |= parse::<f64>(line).is_none(),
            b'#' => lenient |= line != b"t" && line != b"f",
            b'$' | b'!' | b'=' => match parse_i64(line) {
                Some(-1) => {
                    lenient |= kind != b'$' || annotated || line != b"-1";
                    null_len = true;
                }
                Some(n) if n >= 0 => {
                    lenient |= !strict_len;
                    let n = usize::try_from(n).map_err(|_| "huge body")?;
                    let end = pos.checked_add(n).ok_or("huge body")?;
                    if frame.get(end..end + 2) != Some(b"\r\n") {
                        return Err(format!("body of {n} bytes at {pos} not ended by CRLF"));
                    }
                    if kind == b'=' {
                        let format = &frame[pos..end];
                        lenient |=
                            n < 4 || !(format.starts_with(b"txt") || format.starts_with(b"mkd"));
                    }
                    pos = end + 2;
                }
                _ => return Err(format!("bad length {line:?}")),
            },
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = match parse_i64(line) {
                    Some(-1) => {
                        lenient |= kind != b'*' || annotated || line != b"-1";
                        null_len = true;
                        0
                    }
                    Some(n) if n >= 0 => {
                        lenient |= !strict_len;
                        n as u64
                    }
                    _ => return Err(format!("bad length {line:?}")),
                };
                if kind == b'|' {
                    lenient |= annotated;
                } else {
                    lenient |= must_hash;
                }
                let len = if matches!(kind, b'%' | b'|') {
                    2 * n
                } else {
                    n
                };
                if len > 0 {
                    stack.push(Level { kind, len, seen: 0 });
                    complete = false;
                } else if kind == b'|' {
                    after_attribute = true;
                    complete = false;
                }
            }
            _ => return Err(format!("unknown type {kind}")),
        }
        while complete {
            let Some(top) = stack.last_mut() else {
                if pos != frame.len() {
                    return Err(format!("reply ends at {pos}"));
                }
                let lenient = lenient || (resp3 && null_len);
                return Ok(if lenient {
                    Class::Lenient
                } else {
                    Class::Common
                });
            };
            top.seen += 1;
            if top.seen < top.len {
                break;
            }
            let done = stack.pop().map(|l| l.kind);
            // An attribute does not count as a value of its parent: the value it annotates does.
            if done == Some(b'|') {
                after_attribute = true;
                complete = false;
            }
        }
    }
}

fn parse<T: std::str::FromStr>(line: &[u8]) -> Option<T> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

/// Bits of a SCAN cursor below the shard cursor: 6 of topology tag, 10 of shard index.
const CURSOR_LOW_BITS: u32 = 16;

/// The SCAN cursor target, two checks on every input.
///
/// Round trip: a triple built from the input (byte 0 picks how far the 16 little-endian bytes
/// 1..17 are shifted down to make the shard cursor, so small and maximal cursors are both
/// reached; bit 7 of byte 17 takes the tag from `topology_tag` of the lines after byte 19, else
/// its low 6 bits are the tag; bytes 18..20 the index) must decode from its decimal text
/// unchanged.
///
/// Decoding: the whole input decodes (and `parse_u128` parses it) exactly when it is 1 to 39
/// ASCII digits whose value fits in a u128 (by `str::parse`, as the model); a decoded triple
/// is in range and re-encodes to the parsed value.
pub fn check_cursor_codec(data: &[u8]) {
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let mut wide = [0u8; 16];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = byte(1 + i);
    }
    let shift = CURSOR_LOW_BITS + u32::from(byte(0)) % (128 - CURSOR_LOW_BITS);
    let shard_cursor = u128::from_le_bytes(wide) >> shift;
    let tag = if byte(17) & 0x80 != 0 {
        let text = String::from_utf8_lossy(data.get(20..).unwrap_or_default());
        let labels: Vec<&str> = text.lines().collect();
        let tag = topology_tag(&labels);
        assert!(tag < 64, "topology tag {tag} of {labels:?}");
        tag
    } else {
        byte(17) & 0x3f
    };
    let index = usize::from(u16::from_le_bytes([byte(18), byte(19)])) % MAX_SHARDS;
    let cursor = encode_cursor(shard_cursor, tag, index);
    let text = cursor.to_string();
    assert_eq!(
        decode_cursor(text.as_bytes()),
        Some((shard_cursor, tag, index)),
        "cursor {text} of ({shard_cursor}, {tag}, {index})"
    );
    assert_eq!(parse_u128(text.as_bytes()), Some(cursor), "{text}");

    let model = std::str::from_utf8(data)
        .ok()
        .filter(|s| (1..=39).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u128>().ok());
    let parsed = parse_u128(data);
    assert_eq!(parsed, model, "parse_u128 of {data:?}");
    let decoded = decode_cursor(data);
    match (decoded, parsed) {
        (None, None) => {}
        (Some((sc, tag, index)), Some(value)) => {
            assert!(
                sc <= u128::MAX >> CURSOR_LOW_BITS && tag < 64 && index < MAX_SHARDS,
                "{data:?} decodes to ({sc}, {tag}, {index})"
            );
            assert_eq!(encode_cursor(sc, tag, index), value, "{data:?}");
        }
        (decoded, parsed) => panic!("{data:?} decodes to {decoded:?}, parses to {parsed:?}"),
    }
}

/// The RESP2 → RESP3 converter (`respite::resp3`): the first input byte picks a shape, the rest
/// is scanned into complete RESP2 reply frames, and each is converted. Properties: no panic; the
/// output is a sequence of complete RESP3 frames, exactly one per input frame; a frame without
/// nulls converted as `Plain` is unchanged; where redis-protocol can decode the output (shallow
/// inputs), it decodes as RESP3 with the same number of frames.
pub fn check_resp3_converter(data: &[u8]) {
    use respite::resp3::{convert, Shape};
    const SHAPES: [Shape; 14] = [
        Shape::Plain,
        Shape::Map,
        Shape::Set,
        Shape::Double,
        Shape::ArrayOfDoubles,
        Shape::ArrayOfMaps,
        Shape::ArrayOfDoubleTuples,
        Shape::ScorePairs,
        Shape::ValuePairs,
        Shape::ScorePair,
        Shape::KeyScorePair,
        Shape::KeyScorePairs,
        Shape::Verbatim,
        Shape::Push,
    ];
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let shape = SHAPES[usize::from(sel) % SHAPES.len()];
    let mut scanner = ReplyScanner::new();
    let mut rest = input;
    for _ in 0..64 {
        let Ok(Some(len)) = scanner.scan(rest) else {
            return;
        };
        let frame = bytes::Bytes::copy_from_slice(&rest[..len]);
        rest = &rest[len..];
        let out = convert(shape, &frame);
        // Output validity is promised for RESP2 input (what backends send); check it where
        // redis-protocol can confirm the input is RESP2 (shallow frames).
        let aggregates = frame.iter().filter(|&&b| b == b'*').count();
        if aggregates > MAX_REFERENCE_NESTING
            || !matches!(resp2_decode_range(&frame), Ok(Some((_, used))) if used == frame.len())
        {
            continue;
        }
        let mut sc = ReplyScanner::new();
        let Ok(Some(n)) = sc.scan(&out) else {
            panic!("converted output is not a complete frame: {out:?} from {frame:?} as {shape:?}");
        };
        assert_eq!(
            n,
            out.len(),
            "one frame in, one frame out: {out:?} from {frame:?} as {shape:?}"
        );
        if shape == Shape::Plain && memchr_null(&frame).is_none() {
            assert_eq!(out, frame, "Plain without nulls is unchanged");
        }
        let aggregates = out
            .iter()
            .filter(|&&b| b == b'*' || b == b'%' || b == b'~' || b == b'>')
            .count();
        if aggregates <= MAX_REFERENCE_NESTING {
            if let Ok(Some((_, used))) = resp3_decode_range(&out) {
                assert_eq!(
                    used,
                    out.len(),
                    "redis-protocol reads the same frame: {out:?}"
                );
            }
        }
    }
}

fn memchr_null(frame: &[u8]) -> Option<usize> {
    frame.windows(4).position(|w| w == b"-1\r\n")
}

/// Reads `notAfter` out of `data` as a DER certificate: never panics, and what follows the
/// certificate's outer element cannot change the answer.
pub fn check_cert_expiry(data: &[u8]) {
    let expiry = respite::tls::not_after(data);
    let mut longer = data.to_vec();
    longer.extend_from_slice(b"\x30\x03\x02\x01\x00 trailing bytes");
    if expiry.is_some() {
        assert_eq!(
            respite::tls::not_after(&longer),
            expiry,
            "trailing bytes changed it"
        );
    }
}
