//! Merges: the parts of a fan-out, one reply per shard, turned into the one reply the client
//! gets. An error from any part becomes the reply, naming its shard: never a partial result.
//!
//! ```text
//!  KEYS      *2 a b │ *0 │ *1 c        ─▶ *3 a b c        (Concat)
//!  DBSIZE    :3 │ :4                    ─▶ :7              (Sum; LASTSAVE: Min)
//!  FLUSHALL  +OK │ -ERR x               ─▶ -ERR shard s1: x
//!  SCAN      one shard's [cursor, keys] ─▶ [packed cursor, keys]
//! ```

use super::cursor::{encode_cursor, parse_u128, MAX_SHARD_CURSOR};
use crate::resp::{self, parse_i64};
use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;
use redis_protocol::resp2::{decode::decode, types::OwnedFrame};

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
    /// SCRIPT KILL, FUNCTION KILL: `+OK` if any part killed one; else a part's error other
    /// than `NOTBUSY` (`UNKILLABLE`), else `NOTBUSY`. Parts' errors are answers here.
    AnyKilled,
    /// CONFIG GET: the one part's answer without the parameters that hold secrets.
    RedactConfig,
    /// A multi-key command split per slot (`split.rs`): part `i`'s array elements go to the
    /// positions `positions[i]` of the reply (MGET).
    Gather(Vec<Vec<u32>>),
}

/// Configuration parameters whose values are never shown to clients.
const SECRET_PARAMETERS: [&[u8]; 3] = [b"requirepass", b"masterauth", b"masteruser"];

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
    if *merge == Merge::AnyKilled {
        return any_killed(parts);
    }
    if let Some(i) = parts.iter().position(|p| p.first() == Some(&b'-')) {
        return shard_error(&labels[i], &error_text(&parts[i]));
    }
    let merged = match merge {
        Merge::Concat => concat(parts),
        Merge::Sum => fold_integers(parts, i64::saturating_add),
        Merge::Min => fold_integers(parts, i64::min),
        Merge::AnyNonNil => Ok(any_non_nil(parts, random)),
        Merge::AllOk => Ok(parts.first().cloned().unwrap_or(resp::reply::OK)),
        Merge::And => and_arrays(parts),
        Merge::Scan { index, shards, tag } => {
            return merge_scan(&parts[0], &labels[0], *index, *shards, *tag)
        }
        Merge::InfoKeyspace(text) => info_keyspace(text, parts),
        Merge::RedactConfig => redact_config(&parts[0]).ok_or(0),
        Merge::Gather(positions) => gather(parts, positions),
        Merge::AnyKilled => unreachable!("answered above"),
    };
    merged.unwrap_or_else(|i| shard_error(&labels[i], "unexpected reply"))
}

/// SCRIPT KILL, FUNCTION KILL over every server that may run the script.
fn any_killed(parts: &[Bytes]) -> Bytes {
    if parts.iter().any(|p| p.first() != Some(&b'-')) {
        return resp::reply::OK;
    }
    let telling = parts.iter().find(|p| !p.starts_with(b"-NOTBUSY"));
    telling
        .or(parts.first())
        .cloned()
        .unwrap_or(resp::reply::OK)
}

/// CONFIG GET's `[name, value, ...]` without the pairs whose name is a secret; `None` if the
/// answer is not that shape.
fn redact_config(part: &[u8]) -> Option<Bytes> {
    let Ok(Some((OwnedFrame::Array(items), _))) = decode(part) else {
        return None;
    };
    let mut kept = Vec::with_capacity(items.len());
    for pair in items.chunks(2) {
        let [OwnedFrame::BulkString(name), OwnedFrame::BulkString(value)] = pair else {
            return None;
        };
        if !SECRET_PARAMETERS
            .iter()
            .any(|s| name.eq_ignore_ascii_case(s))
        {
            kept.push((name, value));
        }
    }
    let mut out = BytesMut::new();
    resp::put_array_header(&mut out, 2 * kept.len());
    for (name, value) in kept {
        resp::put_bulk(&mut out, name);
        resp::put_bulk(&mut out, value);
    }
    Some(out.freeze())
}

/// KEYS: the arrays concatenated. `Err(i)`: part `i` is not an array.
fn concat(parts: &[Bytes]) -> Result<Bytes, usize> {
    let mut total = 0;
    let mut bodies = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let (n, at) = array(p).ok_or(i)?;
        total += n;
        bodies.push(&p[at..]);
    }
    let mut out = BytesMut::with_capacity(bodies.iter().map(|b| b.len()).sum::<usize>() + 16);
    resp::put_array_header(&mut out, total);
    for b in bodies {
        out.put_slice(b);
    }
    Ok(out.freeze())
}

/// MGET split per slot: each part's values put back where their keys were. `Err(i)`: part `i`
/// is not an array of as many values as it was asked for.
fn gather(parts: &[Bytes], positions: &[Vec<u32>]) -> Result<Bytes, usize> {
    let total: usize = positions.iter().map(Vec::len).sum();
    let mut values: Vec<&[u8]> = vec![&[]; total];
    for (i, (p, at)) in parts.iter().zip(positions).enumerate() {
        let (n, mut off) = array(p).ok_or(i)?;
        if n != at.len() {
            return Err(i);
        }
        for &to in at {
            let len = match crate::resp::ReplyScanner::new().scan(&p[off..]) {
                Ok(Some(len)) => len,
                _ => return Err(i),
            };
            *values.get_mut(to as usize).ok_or(i)? = &p[off..off + len];
            off += len;
        }
    }
    let mut out = BytesMut::with_capacity(values.iter().map(|v| v.len()).sum::<usize>() + 16);
    resp::put_array_header(&mut out, total);
    for v in values {
        out.put_slice(v);
    }
    Ok(out.freeze())
}

/// DBSIZE, LASTSAVE: the integers folded with `f`. `Err(i)`: part `i` is not an integer.
fn fold_integers(parts: &[Bytes], f: fn(i64, i64) -> i64) -> Result<Bytes, usize> {
    let mut acc: Option<i64> = None;
    for (i, p) in parts.iter().enumerate() {
        let v = integer(p).ok_or(i)?;
        acc = Some(acc.map_or(v, |a| f(a, v)));
    }
    Ok(resp::integer(acc.unwrap_or(0)))
}

/// RANDOMKEY: a random non-nil answer, or nil.
fn any_non_nil(parts: &[Bytes], random: &mut dyn FnMut(usize) -> usize) -> Bytes {
    let found: Vec<&Bytes> = parts.iter().filter(|p| &p[..] != b"$-1\r\n").collect();
    match found.len() {
        0 => resp::reply::NULL,
        n => found[random(n)].clone(),
    }
}

/// SCRIPT EXISTS: the arrays of 0/1 ANDed element by element. `Err(i)`: part `i` is not an
/// array, or not as long as the others.
fn and_arrays(parts: &[Bytes]) -> Result<Bytes, usize> {
    let mut acc: Option<Vec<bool>> = None;
    for (i, p) in parts.iter().enumerate() {
        let Ok(Some((OwnedFrame::Array(items), _))) = decode(p) else {
            return Err(i);
        };
        let bits = items.iter().map(|f| matches!(f, OwnedFrame::Integer(1)));
        acc = Some(match acc {
            None => bits.collect(),
            Some(a) if a.len() == items.len() => a.iter().zip(bits).map(|(x, y)| *x && y).collect(),
            Some(_) => return Err(i),
        });
    }
    let acc = acc.unwrap_or_default();
    let mut out = BytesMut::new();
    resp::put_array_header(&mut out, acc.len());
    for b in acc {
        resp::put_integer(&mut out, i64::from(b));
    }
    Ok(out.freeze())
}

/// INFO with the keyspace section: respite's `text`, then `db<N>:keys=..,expires=..` summed
/// over the parts. `Err(i)`: part `i` is not a bulk string.
fn info_keyspace(text: &str, parts: &[Bytes]) -> Result<Bytes, usize> {
    let mut dbs: std::collections::BTreeMap<u32, (u64, u64)> = Default::default();
    for (i, p) in parts.iter().enumerate() {
        let Ok(Some((OwnedFrame::BulkString(body), _))) = decode(p) else {
            return Err(i);
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
    let mut out = text.to_string();
    if !out.is_empty() {
        out.push_str("\r\n");
    }
    out.push_str("# Keyspace\r\n");
    for (db, (keys, expires)) in dbs {
        out.push_str(&format!(
            "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n"
        ));
    }
    Ok(resp::bulk(out.as_bytes()))
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

    #[test]
    fn a_kill_succeeds_if_any_server_killed_and_config_secrets_never_show() {
        let notbusy = &b"-NOTBUSY No scripts in execution right now.\r\n"[..];
        assert_eq!(run(&Merge::AnyKilled, &[notbusy, b"+OK\r\n"]), b"+OK\r\n");
        assert_eq!(run(&Merge::AnyKilled, &[notbusy, notbusy]), notbusy);
        let unkillable = &b"-UNKILLABLE Sorry the script already executed write commands\r\n"[..];
        assert_eq!(run(&Merge::AnyKilled, &[notbusy, unkillable]), unkillable);
        let all = resp::encode_request(&[
            &b"maxmemory"[..],
            b"0",
            b"requirepass",
            b"pw",
            b"MasterAuth",
            b"x",
        ]);
        assert_eq!(
            run(&Merge::RedactConfig, &[&all]),
            resp::encode_request(&[&b"maxmemory"[..], b"0"]).to_vec()
        );
        assert_eq!(run(&Merge::RedactConfig, &[b"*0\r\n"]), b"*0\r\n");
    }
}
