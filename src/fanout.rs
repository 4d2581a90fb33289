//! Fan-out: cluster-wide commands sent to every shard master (or every backend, for `SCRIPT`
//! without shards), and the merges that turn the parts into one reply.
//!
//! ```text
//!  client slot ◀── merge ◀── Fanout { parts[0..n], remaining } ◀── Origin::Fanout{id, part} ◀── shard i
//! ```
//!
//! A fan-out is a barrier in its client's stream: it is sent only once the client's earlier
//! requests are answered, and later requests wait for it (so `SET k v; DBSIZE` counts `k` and
//! `FLUSHALL; SET k v` keeps `k`). Every part is completed exactly once — by its reply or by the
//! failure of its connection — so a fan-out always finishes and leaves the slab. An error from any
//! part, or a shard that is down, becomes the reply, naming the shard: never a silently partial
//! result.
//!
//! ## The SCAN cursor
//!
//! ```text
//!  cursor = (shard_cursor << 16) | (topology_tag << 10) | shard_index        (u128, decimal)
//! ```
//!
//! `shard_index` (10 bits) is the position in the sorted list of master addresses,
//! `topology_tag` (6 bits) a hash of that list, and `shard_cursor` the shard's own cursor. When a
//! shard's cursor returns to 0 the walk moves on to the next shard with cursor 0; 0 is returned
//! only after the last shard. A cursor whose tag does not match the current shard set is refused.

use crate::conns::ConnRef;
use crate::resp::{self, parse_i64};
use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;

/// Most shards a SCAN cursor can address.
pub const MAX_SHARDS: usize = 1 << 10;
const TAG_BITS: u32 = 6;
const INDEX_BITS: u32 = 10;
/// Largest shard cursor that fits beside the tag and index in a u128.
const MAX_SHARD_CURSOR: u128 = u128::MAX >> (TAG_BITS + INDEX_BITS);

/// Packs a SCAN cursor. `shard_cursor` must be at most `MAX_SHARD_CURSOR`.
pub fn encode_cursor(shard_cursor: u128, tag: u8, index: usize) -> u128 {
    (shard_cursor << (TAG_BITS + INDEX_BITS))
        | (u128::from(tag & 0x3f) << INDEX_BITS)
        | (index as u128 & (MAX_SHARDS as u128 - 1))
}

/// Unpacks a SCAN cursor: `(shard_cursor, tag, shard_index)`, or `None` if it is not a decimal
/// integer that fits in 128 bits.
pub fn decode_cursor(s: &[u8]) -> Option<(u128, u8, usize)> {
    let c = parse_u128(s)?;
    Some((
        c >> (TAG_BITS + INDEX_BITS),
        ((c >> INDEX_BITS) & 0x3f) as u8,
        (c & (MAX_SHARDS as u128 - 1)) as usize,
    ))
}

/// Strict unsigned decimal.
pub fn parse_u128(s: &[u8]) -> Option<u128> {
    if s.is_empty() || s.len() > 39 {
        return None;
    }
    s.iter().try_fold(0u128, |acc, &d| {
        if d.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u128::from(d - b'0'))
        } else {
            None
        }
    })
}

/// 6 bits of an FNV-1a hash of the sorted master addresses.
pub fn topology_tag(sorted_labels: &[&str]) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for label in sorted_labels {
        for &b in label.as_bytes().iter().chain(b",") {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    ((h ^ (h >> 32) ^ (h >> 48)) & 0x3f) as u8
}

/// Commands that fan out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanoutCmd {
    Scan,
    Keys,
    Dbsize,
    Randomkey,
    /// FLUSHDB and FLUSHALL.
    Flush,
    /// SCRIPT LOAD / FLUSH / EXISTS (other SCRIPT subcommands are forwarded).
    Script,
    Lastsave,
}

/// How the parts of a fan-out are merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Concatenate arrays (KEYS).
    Concat,
    /// Sum integers (DBSIZE).
    Sum,
    /// Smallest integer (LASTSAVE).
    Min,
    /// A random non-nil answer (RANDOMKEY).
    AnyNonNil,
    /// All must succeed; the first answer is the reply (FLUSH*, SCRIPT LOAD/FLUSH).
    AllOk,
    /// Element-wise AND of integer arrays (SCRIPT EXISTS).
    And,
    /// The one part of a SCAN step.
    Scan {
        index: usize,
        shards: usize,
        tag: u8,
    },
    /// respite's INFO text followed by the keyspace summed over the parts.
    InfoKeyspace(String),
}

/// One fan-out in progress.
#[derive(Debug)]
pub struct Fanout {
    /// The client slot waiting for the merge.
    pub client: ConnRef,
    /// Its `seq`.
    pub seq: u64,
    /// How to merge.
    pub merge: Merge,
    /// The answer of each part, once known.
    pub parts: Vec<Option<Bytes>>,
    /// Address of each part's shard or backend, for errors.
    pub labels: Vec<String>,
    /// Parts still unanswered.
    pub remaining: usize,
}

fn error_text(frame: &[u8]) -> String {
    let body = frame.strip_prefix(b"-").unwrap_or(frame);
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    let text = String::from_utf8_lossy(body);
    text.strip_prefix("ERR ").unwrap_or(&text).to_string()
}

fn shard_error(label: &str, msg: &str) -> Bytes {
    resp::error(&format!("ERR shard {label}: {msg}"))
}

/// An integer reply's value.
fn integer(frame: &[u8]) -> Option<i64> {
    parse_i64(frame.strip_prefix(b":")?.strip_suffix(b"\r\n")?)
}

/// An array reply's element count and the offset of its first element (`None` for nil arrays
/// and non-arrays).
fn array(frame: &[u8]) -> Option<(usize, usize)> {
    let rest = frame.strip_prefix(b"*")?;
    let nl = memchr(b'\n', rest)?;
    let n = parse_i64(rest.get(..nl.checked_sub(1)?)?)?;
    Some((usize::try_from(n).ok()?, nl + 2))
}

/// Merges complete parts. `random` picks an index below its argument (RANDOMKEY).
pub fn merge(
    merge: &Merge,
    parts: &[Bytes],
    labels: &[String],
    random: &mut dyn FnMut(usize) -> usize,
) -> Bytes {
    if let Some(i) = parts.iter().position(|p| p.first() == Some(&b'-')) {
        return shard_error(&labels[i], &error_text(&parts[i]));
    }
    let unexpected = |i: usize| shard_error(&labels[i], "unexpected reply");
    match merge {
        Merge::Concat => {
            let mut total = 0;
            let mut bodies = Vec::with_capacity(parts.len());
            for (i, p) in parts.iter().enumerate() {
                let Some((n, at)) = array(p) else {
                    return unexpected(i);
                };
                total += n;
                bodies.push(&p[at..]);
            }
            let mut out =
                BytesMut::with_capacity(bodies.iter().map(|b| b.len()).sum::<usize>() + 16);
            resp::put_array_header(&mut out, total);
            for b in bodies {
                out.put_slice(b);
            }
            out.freeze()
        }
        Merge::Sum | Merge::Min => {
            let mut acc: Option<i64> = None;
            for (i, p) in parts.iter().enumerate() {
                let Some(v) = integer(p) else {
                    return unexpected(i);
                };
                acc = Some(match (acc, merge) {
                    (None, _) => v,
                    (Some(a), Merge::Sum) => a.saturating_add(v),
                    (Some(a), _) => a.min(v),
                });
            }
            resp::integer(acc.unwrap_or(0))
        }
        Merge::AnyNonNil => {
            let found: Vec<&Bytes> = parts.iter().filter(|p| &p[..] != b"$-1\r\n").collect();
            match found.len() {
                0 => resp::reply::NULL,
                n => found[random(n)].clone(),
            }
        }
        Merge::AllOk => parts.first().cloned().unwrap_or(resp::reply::OK),
        Merge::And => {
            let mut acc: Option<Vec<bool>> = None;
            for (i, p) in parts.iter().enumerate() {
                let Ok(Some((redis_protocol::resp2::types::OwnedFrame::Array(items), _))) =
                    redis_protocol::resp2::decode::decode(p)
                else {
                    return unexpected(i);
                };
                let bits: Vec<bool> = items
                    .iter()
                    .map(|f| matches!(f, redis_protocol::resp2::types::OwnedFrame::Integer(1)))
                    .collect();
                acc = Some(match acc {
                    None => bits,
                    Some(a) if a.len() == bits.len() => {
                        a.iter().zip(&bits).map(|(x, y)| *x && *y).collect()
                    }
                    Some(_) => return unexpected(i),
                });
            }
            let acc = acc.unwrap_or_default();
            let mut out = BytesMut::new();
            resp::put_array_header(&mut out, acc.len());
            for b in acc {
                resp::put_integer(&mut out, i64::from(b));
            }
            out.freeze()
        }
        Merge::Scan { index, shards, tag } => {
            merge_scan(&parts[0], &labels[0], *index, *shards, *tag)
        }
        Merge::InfoKeyspace(text) => {
            let mut dbs: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
            for (i, p) in parts.iter().enumerate() {
                let Ok(Some((redis_protocol::resp2::types::OwnedFrame::BulkString(body), _))) =
                    redis_protocol::resp2::decode::decode(p)
                else {
                    return unexpected(i);
                };
                for line in String::from_utf8_lossy(&body).lines() {
                    let Some((db, fields)) = line.split_once(':') else {
                        continue;
                    };
                    let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u32>().ok()) else {
                        continue;
                    };
                    let entry = dbs.entry(n).or_default();
                    for field in fields.split(',') {
                        match field.split_once('=') {
                            Some(("keys", v)) => entry.0 += v.parse::<u64>().unwrap_or(0),
                            Some(("expires", v)) => entry.1 += v.parse::<u64>().unwrap_or(0),
                            _ => {}
                        }
                    }
                }
            }
            let mut out = text.clone();
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            out.push_str("# Keyspace\r\n");
            for (db, (keys, expires)) in dbs {
                out.push_str(&format!(
                    "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n"
                ));
            }
            resp::bulk(out.as_bytes())
        }
    }
}

/// Rewrites one shard's `SCAN` reply with the proxy's cursor; the keys pass through unchanged.
fn merge_scan(part: &Bytes, label: &str, index: usize, shards: usize, tag: u8) -> Bytes {
    let parsed = (|| {
        let (2, at) = array(part)? else {
            return None;
        };
        let rest = &part[at..];
        let body = rest.strip_prefix(b"$")?;
        let nl = memchr(b'\n', body)?;
        let len = usize::try_from(parse_i64(body.get(..nl.checked_sub(1)?)?)?).ok()?;
        let start = at + 1 + nl + 1;
        let cursor = parse_u128(part.get(start..start + len)?)?;
        Some((cursor, start + len + 2))
    })();
    let Some((cursor, keys_at)) = parsed else {
        return shard_error(label, "unexpected reply to SCAN");
    };
    if cursor > MAX_SHARD_CURSOR {
        return shard_error(label, "SCAN cursor too large to pack");
    }
    let next = match (cursor, index + 1 < shards) {
        (0, true) => encode_cursor(0, tag, index + 1),
        (0, false) => 0,
        (c, _) => encode_cursor(c, tag, index),
    };
    let mut out = BytesMut::with_capacity(part.len() + 32);
    resp::put_array_header(&mut out, 2);
    resp::put_bulk(&mut out, next.to_string().as_bytes());
    out.put_slice(&part[keys_at..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_for_every_index_and_wide_shard_cursors() {
        for index in 0..MAX_SHARDS {
            for tag in [0u8, 1, 37, 63] {
                for sc in [0u128, 1, 12345, u64::MAX as u128, MAX_SHARD_CURSOR] {
                    let c = encode_cursor(sc, tag, index);
                    assert_eq!(
                        decode_cursor(c.to_string().as_bytes()),
                        Some((sc, tag, index))
                    );
                }
            }
        }
        assert_eq!(decode_cursor(b"0"), Some((0, 0, 0)));
        for bad in [
            &b""[..],
            b"-1",
            b"1a",
            b"+5",
            b"340282366920938463463374607431768211456",
        ] {
            assert_eq!(
                decode_cursor(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn topology_tag_depends_on_the_set() {
        let a = topology_tag(&["127.0.0.1:1", "127.0.0.1:2"]);
        assert_eq!(a, topology_tag(&["127.0.0.1:1", "127.0.0.1:2"]));
        let others = (3..20)
            .filter(|p| topology_tag(&["127.0.0.1:1", &format!("127.0.0.1:{p}")]) != a)
            .count();
        assert!(others >= 14);
    }

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    fn run(m: &Merge, parts: &[&[u8]]) -> Vec<u8> {
        let parts: Vec<Bytes> = parts.iter().map(|p| Bytes::copy_from_slice(p)).collect();
        merge(m, &parts, &labels(parts.len()), &mut |_| 0).to_vec()
    }

    #[test]
    fn merges_parts() {
        assert_eq!(
            run(
                &Merge::Concat,
                &[
                    b"*1\r\n$1\r\na\r\n",
                    b"*0\r\n",
                    b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
                ]
            ),
            b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n"
        );
        assert_eq!(run(&Merge::Sum, &[b":3\r\n", b":4\r\n"]), b":7\r\n");
        assert_eq!(run(&Merge::Min, &[b":9\r\n", b":4\r\n"]), b":4\r\n");
        assert_eq!(
            run(&Merge::AnyNonNil, &[b"$-1\r\n", b"$1\r\nk\r\n"]),
            b"$1\r\nk\r\n"
        );
        assert_eq!(
            run(&Merge::AnyNonNil, &[b"$-1\r\n", b"$-1\r\n"]),
            b"$-1\r\n"
        );
        assert_eq!(run(&Merge::AllOk, &[b"+OK\r\n", b"+OK\r\n"]), b"+OK\r\n");
        assert_eq!(
            run(&Merge::And, &[b"*2\r\n:1\r\n:1\r\n", b"*2\r\n:1\r\n:0\r\n"]),
            b"*2\r\n:1\r\n:0\r\n"
        );
        assert_eq!(
            run(&Merge::Sum, &[b":3\r\n", b"-ERR boom\r\n"]),
            b"-ERR shard s1: boom\r\n"
        );
        assert_eq!(
            run(&Merge::Sum, &[b":3\r\n", b"+OK\r\n"]),
            b"-ERR shard s1: unexpected reply\r\n"
        );
        let p1 = resp::bulk(b"# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=5\r\n");
        let p2 =
            resp::bulk(b"# Keyspace\r\ndb0:keys=4,expires=0,avg_ttl=0\r\ndb2:keys=1,expires=0\r\n");
        let info = run(&Merge::InfoKeyspace("# Server\r\n".into()), &[&p1, &p2]);
        let want = "# Server\r\n\r\n# Keyspace\r\ndb0:keys=7,expires=1,avg_ttl=0\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n";
        assert_eq!(info, resp::bulk(want.as_bytes()).to_vec());
    }

    #[test]
    fn scan_step_moves_to_the_next_shard_and_ends_after_the_last() {
        let m = |index| Merge::Scan {
            index,
            shards: 3,
            tag: 5,
        };
        let keys = b"*1\r\n$1\r\nk\r\n";
        let reply = |c: &str| {
            [
                format!("*2\r\n${}\r\n{c}\r\n", c.len()).into_bytes(),
                keys.to_vec(),
            ]
            .concat()
        };
        let next = encode_cursor(0, 5, 1).to_string();
        assert_eq!(run(&m(0), &[&reply("0")]), reply(&next));
        let mid = encode_cursor(17, 5, 2).to_string();
        assert_eq!(run(&m(2), &[&reply("17")]), reply(&mid));
        assert_eq!(run(&m(2), &[&reply("0")]), reply("0"));
    }
}
