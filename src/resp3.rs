//! RESP3 for clients that said `HELLO 3`: replies from RESP2 backends are rewritten into the
//! shape Redis itself would send in RESP3.
//!
//! ```text
//!  backend RESP2 frame ──▶ shape_for(command, args) ──▶ convert ──▶ RESP3 frame to the client
//!      *4 $1 a $1 1 ...        HGETALL: Map              %2 $1 a $1 1 ...
//!      $3 1.5                  ZSCORE: Double            ,1.5
//!      $-1 / *-1 (anywhere)    every shape               _
//! ```
//!
//! The base shape of each command comes from its reply schema (generated into
//! `command_table.rs`); shapes that depend on the arguments (`WITHSCORES`, `WITHVALUES`, a
//! `COUNT`, `ZADD ... INCR`) are chosen here. Conversion walks the frame once, in order, without
//! recursion over the data (only over the shape, a few levels deep), so it stays linear for huge
//! replies. RESP2 clients never pass through here.

use crate::request::Request;
use crate::resp::parse_i64;
use bytes::{BufMut, Bytes, BytesMut};

/// The RESP3 shape of a reply, as far as it differs from RESP2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Unchanged, except that nulls become `_`.
    Plain,
    /// A flat array of key/value pairs becomes a map (`%`).
    Map,
    /// An array becomes a set (`~`).
    Set,
    /// A bulk string holding a number becomes a double (`,`).
    Double,
    /// An array of doubles (or nulls).
    ArrayOfDoubles,
    /// An array of flat key/value arrays, each becoming a map.
    ArrayOfMaps,
    /// An array of (null or) arrays of doubles (GEOPOS).
    ArrayOfDoubleTuples,
    /// A flat `[member, score, member, score...]` array becomes `[[member, score], ...]`.
    ScorePairs,
    /// A flat `[field, value, ...]` array becomes `[[field, value], ...]`.
    ValuePairs,
    /// `[member, score]` with a double score (ZPOPMIN without a count).
    ScorePair,
    /// `[key, member, score]` (BZPOPMIN, BZPOPMAX).
    KeyScorePair,
    /// `[key, [[member, score], ...]]` (ZMPOP, BZMPOP).
    KeyScorePairs,
    /// A bulk string becomes a verbatim string (`=`, `txt:`): INFO, CLIENT INFO, CLIENT LIST.
    Verbatim,
    /// A pub/sub message: the array becomes a push (`>`).
    Push,
    /// An array of `[key, value]` arrays becomes a map of key to value (XREAD, XREADGROUP).
    KeyedMap,
    /// GEOSEARCH and GEORADIUS items with WITHCOORD: each item's coordinate pair (its nested
    /// array) becomes doubles; the distance stays a bulk string, as Redis sends it.
    GeoItems,
    /// EXEC: each element takes the shape of its queued command (`convert_exec`); alone, plain.
    Exec,
}

/// The RESP3 shape of the reply to `req`.
pub fn shape_for(req: &Request) -> Shape {
    let Some(spec) = req.spec() else {
        return Shape::Plain;
    };
    let has = |word: &[u8]| req.has_word(word);
    match spec.name {
        "ZRANGE" | "ZRANGEBYSCORE" | "ZREVRANGE" | "ZREVRANGEBYSCORE" | "ZUNION" | "ZINTER"
        | "ZDIFF" | "ZRANDMEMBER" => {
            if has(b"WITHSCORES") {
                Shape::ScorePairs
            } else {
                Shape::Plain
            }
        }
        "HRANDFIELD" if has(b"WITHVALUES") => Shape::ValuePairs,
        "ZPOPMIN" | "ZPOPMAX" => {
            if req.argc() > 2 {
                Shape::ScorePairs
            } else {
                Shape::ScorePair
            }
        }
        "BZPOPMIN" | "BZPOPMAX" => Shape::KeyScorePair,
        "ZMPOP" | "BZMPOP" => Shape::KeyScorePairs,
        "ZADD" if has(b"INCR") => Shape::Double,
        "SPOP" if req.argc() > 2 => Shape::Set,
        "XREAD" | "XREADGROUP" => Shape::KeyedMap,
        "GEOSEARCH"
        | "GEORADIUS"
        | "GEORADIUS_RO"
        | "GEORADIUSBYMEMBER"
        | "GEORADIUSBYMEMBER_RO"
            if has(b"WITHCOORD") =>
        {
            Shape::GeoItems
        }
        "INFO" => Shape::Verbatim,
        "CLIENT" if req.arg_is(1, b"INFO") || req.arg_is(1, b"LIST") => Shape::Verbatim,
        "CONFIG" | "XINFO" | "MEMORY" | "FUNCTION" | "ACL" | "COMMAND" | "CLUSTER" => {
            // Container commands: the subcommand's schema decides.
            let sub = req.arg(1).unwrap_or_default();
            crate::command::CommandTable::subcommand(spec.name, sub)
                .map_or(Shape::Plain, |s| s.resp3)
        }
        _ => spec.resp3,
    }
}

/// Rewrites a RESP2 reply frame into RESP3 `shape`. Errors pass through unchanged.
pub fn convert(shape: Shape, frame: &Bytes) -> Bytes {
    match frame.first() {
        Some(b'-') | None => return frame.clone(),
        Some(b'+') => return frame.clone(),
        Some(b':') if shape != Shape::Double => return frame.clone(),
        _ => {}
    }
    if shape == Shape::Plain && memchr::memmem::find(frame, b"-1\r\n").is_none() {
        return frame.clone();
    }
    let mut out = BytesMut::with_capacity(frame.len() + 16);
    if walk_all(frame, shape, &mut out).is_none() {
        // Not the shape the schema promised: only rewrite the nulls.
        out.clear();
        if walk_all(frame, Shape::Plain, &mut out).is_none() {
            return frame.clone();
        }
    }
    out.freeze()
}

/// Rewrites a RESP2 EXEC reply into RESP3: element `i` takes `shapes[i]`, the shape of the
/// `i`-th queued command. A reply of another length (an abort, an error) gets `Plain`.
pub fn convert_exec(shapes: &[Shape], frame: &Bytes) -> Bytes {
    let mut w = Walker { buf: frame, pos: 0 };
    if w.peek_array() != Some(shapes.len() as i64) {
        return convert(Shape::Plain, frame);
    }
    let mut out = BytesMut::with_capacity(frame.len() + 16);
    let mut elements = || {
        w.header()?;
        out.put_slice(&frame[..w.pos]);
        for &shape in shapes {
            w.value_or_plain(shape, &mut out)?;
        }
        (w.pos == frame.len()).then_some(())
    };
    match elements() {
        Some(()) => out.freeze(),
        None => convert(Shape::Plain, frame),
    }
}

/// Converts every frame in `buf` (local answers may hold several, like UNSUBSCRIBE's).
fn walk_all(buf: &[u8], shape: Shape, out: &mut BytesMut) -> Option<()> {
    let mut w = Walker { buf, pos: 0 };
    while w.pos < buf.len() {
        w.value(shape, out)?;
    }
    Some(())
}

/// A cursor over one RESP2 frame that copies values into `out` while rewriting them.
struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Walker<'_> {
    /// The type byte and the number on the current header line; advances past it.
    fn header(&mut self) -> Option<(u8, &[u8])> {
        // Lines end at CRLF, exactly where the reply scanner ends them (a lone LF is data).
        let kind = *self.buf.get(self.pos)?;
        let cr = self.pos + memchr::memmem::find(&self.buf[self.pos..], b"\r\n")?;
        let line = self.buf.get(self.pos + 1..cr)?;
        self.pos = cr + 2;
        Some((kind, line))
    }

    /// The length of an aggregate at the cursor without consuming it (`None`: not an array).
    fn peek_array(&self) -> Option<i64> {
        if self.buf.get(self.pos) != Some(&b'*') {
            return None;
        }
        let cr = self.pos + memchr::memmem::find(&self.buf[self.pos..], b"\r\n")?;
        parse_i64(self.buf.get(self.pos + 1..cr)?)
    }

    /// Copies any one value, turning nulls into `_`; nested aggregates are walked with a count
    /// of values still owed, not by recursion.
    fn plain(&mut self, out: &mut BytesMut) -> Option<()> {
        let mut owed: u64 = 1;
        while owed > 0 {
            let start = self.pos;
            let (kind, line) = self.header()?;
            owed -= 1;
            match kind {
                b'$' => {
                    let n = parse_i64(line)?;
                    if n < 0 {
                        out.put_slice(b"_\r\n");
                    } else {
                        let end = self.pos.checked_add(n as usize + 2)?;
                        out.put_slice(self.buf.get(start..end)?);
                        self.pos = end;
                    }
                }
                b'*' => {
                    let n = parse_i64(line)?;
                    if n < 0 {
                        out.put_slice(b"_\r\n");
                    } else {
                        out.put_slice(&self.buf[start..self.pos]);
                        owed = owed.checked_add(n as u64)?;
                    }
                }
                _ => out.put_slice(&self.buf[start..self.pos]),
            }
        }
        Some(())
    }

    fn double(&mut self, out: &mut BytesMut) -> Option<()> {
        let start = self.pos;
        let (kind, line) = self.header()?;
        match kind {
            b'$' => {
                let n = parse_i64(line)?;
                if n < 0 {
                    out.put_slice(b"_\r\n");
                    return Some(());
                }
                let body = self.buf.get(self.pos..self.pos + n as usize)?;
                if body.is_empty() || body.iter().any(|&b| b == b'\r' || b == b'\n') {
                    // Not a number a double line can carry: keep the bulk string.
                    out.put_slice(self.buf.get(start..self.pos + n as usize + 2)?);
                } else {
                    out.put_u8(b',');
                    out.put_slice(body);
                    out.put_slice(b"\r\n");
                }
                self.pos += n as usize + 2;
                Some(())
            }
            b':' => {
                out.put_u8(b',');
                out.put_slice(line);
                out.put_slice(b"\r\n");
                Some(())
            }
            _ => {
                self.pos = start;
                self.plain(out)
            }
        }
    }

    /// An array header (`*n`) rewritten as `kind` with `n / per` elements; `None` if the value
    /// is not an array. A null array becomes `_` and yields `Some(None)`.
    fn aggregate(&mut self, kind: u8, per: i64, out: &mut BytesMut) -> Option<Option<i64>> {
        let n = self.peek_array()?;
        self.header()?;
        if n < 0 {
            out.put_slice(b"_\r\n");
            return Some(None);
        }
        if n % per != 0 {
            return None;
        }
        out.put_u8(kind);
        crate::resp::put_decimal(out, n / per);
        out.put_slice(b"\r\n");
        Some(Some(n / per))
    }

    /// Copies one value rewritten into `shape`; `None` if it is not of that shape.
    fn value(&mut self, shape: Shape, out: &mut BytesMut) -> Option<()> {
        match shape {
            Shape::Plain => self.plain(out),
            Shape::Double => self.double(out),
            Shape::Verbatim => self.verbatim(out),
            Shape::Map => self.retyped(b'%', 2, out),
            Shape::Set => self.retyped(b'~', 1, out),
            Shape::Push => self.retyped(b'>', 1, out),
            Shape::ArrayOfDoubles | Shape::ArrayOfMaps | Shape::ArrayOfDoubleTuples => {
                self.array_of(shape, out)
            }
            Shape::ScorePairs | Shape::ValuePairs => self.pairs(shape, out),
            Shape::ScorePair | Shape::KeyScorePair => self.ending_in_double(out),
            Shape::KeyScorePairs => self.key_score_pairs(out),
            Shape::KeyedMap => self.keyed_map(out),
            Shape::GeoItems => self.geo_items(out),
            Shape::Exec => self.plain(out),
        }
    }

    /// `value` in `shape`, or else the same value copied plain.
    fn value_or_plain(&mut self, shape: Shape, out: &mut BytesMut) -> Option<()> {
        let (pos, len) = (self.pos, out.len());
        if self.value(shape, out).is_some() {
            return Some(());
        }
        self.pos = pos;
        out.truncate(len);
        self.plain(out)
    }

    /// A bulk string as a verbatim string (`=N`, `txt:`); anything else is copied as is.
    fn verbatim(&mut self, out: &mut BytesMut) -> Option<()> {
        let start = self.pos;
        let (kind, line) = self.header()?;
        let n = if kind == b'$' { parse_i64(line)? } else { -2 };
        if n < 0 {
            self.pos = start;
            return self.plain(out);
        }
        out.put_u8(b'=');
        crate::resp::put_decimal(out, n + 4);
        out.put_slice(b"\r\ntxt:");
        out.put_slice(self.buf.get(self.pos..self.pos + n as usize + 2)?);
        self.pos += n as usize + 2;
        Some(())
    }

    /// An array retyped as `kind` with `n / per` elements (a map of pairs, a set, a push); the
    /// elements are copied with their nulls rewritten.
    fn retyped(&mut self, kind: u8, per: i64, out: &mut BytesMut) -> Option<()> {
        let Some(n) = self.aggregate(kind, per, out)? else {
            return Some(());
        };
        for _ in 0..n * per {
            self.plain(out)?;
        }
        Some(())
    }

    /// An array of doubles, of maps, or (GEOPOS) of arrays of doubles.
    fn array_of(&mut self, shape: Shape, out: &mut BytesMut) -> Option<()> {
        let Some(n) = self.aggregate(b'*', 1, out)? else {
            return Some(());
        };
        for _ in 0..n {
            match shape {
                Shape::ArrayOfDoubles => self.double(out)?,
                Shape::ArrayOfMaps => self.value(Shape::Map, out)?,
                _ => self.double_tuple(out)?,
            }
        }
        Some(())
    }

    /// One GEOPOS position: an array of doubles, or a null.
    fn double_tuple(&mut self, out: &mut BytesMut) -> Option<()> {
        match self.peek_array() {
            Some(m) if m >= 0 => {
                self.header()?;
                out.put_u8(b'*');
                crate::resp::put_decimal(out, m);
                out.put_slice(b"\r\n");
                for _ in 0..m {
                    self.double(out)?;
                }
                Some(())
            }
            _ => self.plain(out),
        }
    }

    /// A flat array of pairs as an array of 2-element arrays; with `ScorePairs`, the second of
    /// each pair is a double.
    fn pairs(&mut self, shape: Shape, out: &mut BytesMut) -> Option<()> {
        let Some(n) = self.aggregate(b'*', 2, out)? else {
            return Some(());
        };
        for _ in 0..n {
            out.put_slice(b"*2\r\n");
            self.plain(out)?;
            if shape == Shape::ScorePairs {
                self.double(out)?;
            } else {
                self.plain(out)?;
            }
        }
        Some(())
    }

    /// `[member, score]` or `[key, member, score]`: an array whose last element is a double.
    fn ending_in_double(&mut self, out: &mut BytesMut) -> Option<()> {
        let Some(n) = self.aggregate(b'*', 1, out)? else {
            return Some(());
        };
        if n == 0 {
            return Some(());
        }
        for _ in 0..n - 1 {
            self.plain(out)?;
        }
        self.double(out)
    }

    /// `[[key, value], ...]` as a map `{key: value, ...}`.
    fn keyed_map(&mut self, out: &mut BytesMut) -> Option<()> {
        let Some(n) = self.aggregate(b'%', 1, out)? else {
            return Some(());
        };
        for _ in 0..n {
            if self.peek_array()? != 2 {
                return None;
            }
            self.header()?;
            self.plain(out)?;
            self.plain(out)?;
        }
        Some(())
    }

    /// GEO items: a member alone, or `[member, dist?, hash?, [lon, lat]?]` whose coordinate
    /// pair becomes two doubles.
    fn geo_items(&mut self, out: &mut BytesMut) -> Option<()> {
        let Some(n) = self.aggregate(b'*', 1, out)? else {
            return Some(());
        };
        for _ in 0..n {
            let Some(m) = self.peek_array().filter(|&m| m >= 0) else {
                self.plain(out)?;
                continue;
            };
            self.aggregate(b'*', 1, out)?;
            for _ in 0..m {
                if self.peek_array().is_some() {
                    self.double_tuple(out)?;
                } else {
                    self.plain(out)?;
                }
            }
        }
        Some(())
    }

    /// `[key, [[member, score], ...]]` (ZMPOP, BZMPOP).
    fn key_score_pairs(&mut self, out: &mut BytesMut) -> Option<()> {
        let Some(n) = self.aggregate(b'*', 1, out)? else {
            return Some(());
        };
        if n != 2 {
            return None;
        }
        self.plain(out)?;
        let Some(m) = self.aggregate(b'*', 1, out)? else {
            return Some(());
        };
        for _ in 0..m {
            self.value(Shape::ScorePair, out)?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(shape: Shape, input: &[u8]) -> Vec<u8> {
        convert(shape, &Bytes::copy_from_slice(input)).to_vec()
    }

    #[test]
    fn converts_the_common_shapes() {
        assert_eq!(conv(Shape::Plain, b"$-1\r\n"), b"_\r\n");
        assert_eq!(
            conv(Shape::Plain, b"*3\r\n$1\r\na\r\n$-1\r\n*-1\r\n"),
            b"*3\r\n$1\r\na\r\n_\r\n_\r\n"
        );
        assert_eq!(conv(Shape::Plain, b":-1\r\n"), b":-1\r\n");
        assert_eq!(
            conv(
                Shape::Map,
                b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"
            ),
            b"%2\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n"
        );
        assert_eq!(conv(Shape::Map, b"*0\r\n"), b"%0\r\n");
        assert_eq!(conv(Shape::Set, b"*1\r\n$1\r\nx\r\n"), b"~1\r\n$1\r\nx\r\n");
        assert_eq!(conv(Shape::Double, b"$3\r\n1.5\r\n"), b",1.5\r\n");
        assert_eq!(conv(Shape::Double, b"$-1\r\n"), b"_\r\n");
        // Found by fuzzing: a bulk that cannot be a double line stays a bulk, and lines end at
        // CRLF only.
        assert_eq!(conv(Shape::Double, b"+a\nb\r\n"), b"+a\nb\r\n");
        assert_eq!(conv(Shape::Plain, b"*1\r\n+a\nb\r\n"), b"*1\r\n+a\nb\r\n");
        assert_eq!(conv(Shape::Double, b"$3\r\na\r\n\r\n"), b"$3\r\na\r\n\r\n");
        assert_eq!(
            conv(Shape::ArrayOfDoubles, b"*2\r\n$1\r\n1\r\n$-1\r\n"),
            b"*2\r\n,1\r\n_\r\n"
        );
        assert_eq!(
            conv(
                Shape::ScorePairs,
                b"*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$3\r\ninf\r\n"
            ),
            b"*2\r\n*2\r\n$1\r\na\r\n,1\r\n*2\r\n$1\r\nb\r\n,inf\r\n"
        );
        assert_eq!(
            conv(Shape::ScorePair, b"*2\r\n$1\r\na\r\n$1\r\n1\r\n"),
            b"*2\r\n$1\r\na\r\n,1\r\n"
        );
        assert_eq!(conv(Shape::ScorePair, b"*0\r\n"), b"*0\r\n");
        assert_eq!(
            conv(
                Shape::ArrayOfDoubleTuples,
                b"*2\r\n*2\r\n$1\r\n1\r\n$1\r\n2\r\n*-1\r\n"
            ),
            b"*2\r\n*2\r\n,1\r\n,2\r\n_\r\n"
        );
        assert_eq!(conv(Shape::Verbatim, b"$2\r\nhi\r\n"), b"=6\r\ntxt:hi\r\n");
        assert_eq!(
            conv(Shape::Push, b"*2\r\n$1\r\na\r\n:1\r\n"),
            b">2\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(conv(Shape::Map, b"-ERR x\r\n"), b"-ERR x\r\n");
    }

    #[test]
    fn stream_reads_geo_items_and_exec_elements_take_their_shapes() {
        assert_eq!(
            conv(Shape::KeyedMap, b"*1\r\n*2\r\n$1\r\ns\r\n*0\r\n"),
            b"%1\r\n$1\r\ns\r\n*0\r\n"
        );
        assert_eq!(conv(Shape::KeyedMap, b"*-1\r\n"), b"_\r\n");
        assert_eq!(
            conv(
                Shape::GeoItems,
                b"*2\r\n*3\r\n$1\r\na\r\n$3\r\n0.5\r\n*2\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\nb\r\n"
            ),
            b"*2\r\n*3\r\n$1\r\na\r\n$3\r\n0.5\r\n*2\r\n,1\r\n,2\r\n$1\r\nb\r\n"
        );
        let exec = Bytes::from_static(b"*3\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n$3\r\n1.5\r\n-ERR x\r\n");
        let shapes = [Shape::Map, Shape::Double, Shape::Map];
        assert_eq!(
            &convert_exec(&shapes, &exec)[..],
            b"*3\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n,1.5\r\n-ERR x\r\n"
        );
        assert_eq!(&convert_exec(&shapes[..2], &exec)[..], &exec[..]);
        assert_eq!(
            &convert_exec(&shapes, &Bytes::from_static(b"*-1\r\n"))[..],
            b"_\r\n"
        );
    }

    #[test]
    fn a_reply_of_an_unexpected_shape_only_gets_its_nulls_rewritten() {
        assert_eq!(
            conv(Shape::Map, b"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n"),
            b"*3\r\n$1\r\na\r\n_\r\n:1\r\n"
        );
        assert_eq!(conv(Shape::ScorePairs, b"$1\r\nx\r\n"), b"$1\r\nx\r\n");
    }

    #[test]
    fn deep_nesting_is_walked_without_recursion() {
        let mut input = b"*1\r\n".repeat(100_000);
        input.extend_from_slice(b"$-1\r\n");
        let out = conv(Shape::Plain, &input);
        assert!(out.ends_with(b"*1\r\n_\r\n"));
    }
}
