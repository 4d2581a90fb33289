//! Fan-out: cluster-wide commands sent to every shard master (or every backend, for `SCRIPT`
//! without shards) — the plan of what each part sends, the record of a fan-out in progress, the
//! SCAN cursor (`cursor.rs`) and the merges (`merge.rs`).
//!
//! ```text
//!  request ─▶ plan: sub-request, parts, merge ─▶ Origin::Fanout{id, part} ─▶ shard i
//!  client slot ◀── merge ◀── Fanout { parts[0..n], remaining } ◀── each part's reply
//! ```
//!
//! A fan-out is a barrier in its client's stream: it is sent only once the client's earlier
//! requests are answered, and later requests wait for it (so `SET k v; DBSIZE` counts `k` and
//! `FLUSHALL; SET k v` keeps `k`). Every part is completed exactly once — by its reply or by the
//! failure of its connection — so a fan-out always finishes and leaves the slab. An error from any
//! part, or a shard that is down, becomes the reply, naming the shard: never a silently partial
//! result.

mod cursor;
mod merge;
pub mod split;

pub use crate::command::FanoutCmd;
pub use cursor::{decode_cursor, encode_cursor, parse_u128, topology_tag, MAX_SHARDS};
pub use merge::{merge, Merge};

use crate::conns::ConnRef;
use crate::request::Request;
use crate::resp;
use bytes::Bytes;

/// What a fan-out sends and how its answers merge.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// How the parts' answers become the reply.
    pub merge: Merge,
    /// The request each part sends.
    pub sub: Bytes,
    /// The targets that take part, as indices into the sorted target list.
    pub parts: Vec<usize>,
}

/// Plans the fan-out of `req` (command `cmd`) over the targets whose addresses, sorted, are
/// `labels`; `info` is respite's own INFO text when the request is an INFO that wants the
/// keyspace. `Err` is the reply that ends the request at once (a bad SCAN cursor).
pub fn plan(
    cmd: FanoutCmd,
    req: &Request,
    labels: &[String],
    info: Option<String>,
) -> Result<Plan, Bytes> {
    let all = (0..labels.len()).collect();
    let whole = || req.bytes.clone();
    let (merge, sub, parts) = match (cmd, info) {
        (_, Some(text)) => (
            Merge::InfoKeyspace(text),
            resp::encode_request(&[&b"INFO"[..], b"keyspace"]),
            all,
        ),
        (FanoutCmd::Scan, None) => return plan_scan(req, labels),
        (FanoutCmd::Keys, None) => (Merge::Concat, whole(), all),
        (FanoutCmd::Dbsize, None) => (Merge::Sum, whole(), all),
        (FanoutCmd::Lastsave, None) => (Merge::Min, whole(), all),
        (FanoutCmd::Randomkey, None) => (Merge::AnyNonNil, whole(), all),
        (FanoutCmd::Flush, None) => (Merge::AllOk, whole(), all),
        (FanoutCmd::Script, None) if req.arg_is(1, b"EXISTS") => (Merge::And, whole(), all),
        (FanoutCmd::Script | FanoutCmd::Function, None) if req.arg_is(1, b"KILL") => {
            (Merge::AnyKilled, whole(), all)
        }
        (FanoutCmd::Script | FanoutCmd::Function, None) => (Merge::AllOk, whole(), all),
        (FanoutCmd::ConfigGet, None) => (Merge::RedactConfig, whole(), vec![0]),
    };
    Ok(Plan { merge, sub, parts })
}

/// One step of a SCAN: the shard the cursor points at, asked with its own cursor.
fn plan_scan(req: &Request, labels: &[String]) -> Result<Plan, Bytes> {
    let cursor = req
        .arg(1)
        .ok_or_else(|| resp::error("ERR wrong number of arguments for 'scan' command"))?;
    let (shard_cursor, tag, index) =
        decode_cursor(cursor).ok_or_else(|| resp::error("ERR invalid cursor"))?;
    let sorted: Vec<&str> = labels.iter().map(String::as_str).collect();
    let current = topology_tag(&sorted);
    let (shard_cursor, index) = if shard_cursor == 0 && tag == 0 && index == 0 {
        (0, 0)
    } else if tag != current {
        return Err(resp::error(
            "ERR SCAN cursor refers to a different shard set; restart the scan from 0",
        ));
    } else if index >= labels.len() {
        return Err(resp::error("ERR invalid cursor"));
    } else {
        (shard_cursor, index)
    };
    let c = shard_cursor.to_string();
    let mut sub_args: Vec<&[u8]> = vec![b"SCAN", c.as_bytes()];
    sub_args.extend(req.args().skip(2));
    Ok(Plan {
        merge: Merge::Scan {
            index,
            shards: labels.len(),
            tag: current,
        },
        sub: resp::encode_request(&sub_args),
        parts: vec![index],
    })
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
    parts: Vec<Option<Bytes>>,
    /// Address of each part's shard or backend, for errors.
    pub labels: Vec<String>,
    /// Parts still unanswered.
    remaining: usize,
    /// The request of each part, kept when a part may have to be sent again to another node
    /// (a split request redirected by Redis Cluster); empty otherwise.
    pub requests: Vec<Bytes>,
    /// Redirects followed for its parts so far.
    pub redirects: u32,
}

impl Fanout {
    /// A fan-out for slot `seq` of `client` over parts at `labels`, none answered yet.
    pub fn new(client: ConnRef, seq: u64, merge: Merge, labels: Vec<String>) -> Self {
        Fanout {
            client,
            seq,
            merge,
            parts: vec![None; labels.len()],
            remaining: labels.len(),
            labels,
            requests: Vec::new(),
            redirects: 0,
        }
    }

    /// Records the answer of `part` (a second answer for a part is ignored). Returns the
    /// answers, in part order, once every part has one.
    pub fn answer(&mut self, part: usize, reply: Bytes) -> Option<Vec<Bytes>> {
        let slot @ None = self.parts.get_mut(part)? else {
            return None;
        };
        *slot = Some(reply);
        self.remaining -= 1;
        (self.remaining == 0).then(|| self.parts.iter_mut().flat_map(Option::take).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;

    fn req(args: &[&[u8]]) -> Request {
        Request::new(
            resp::encode_request(args),
            CommandTable::new().lookup(args[0]),
            0,
        )
    }

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("127.0.0.1:{i}")).collect()
    }

    #[test]
    fn plans_send_the_request_to_every_part_or_a_scan_step_to_one() {
        let keys = req(&[b"KEYS", b"*"]);
        let p = plan(FanoutCmd::Keys, &keys, &labels(3), None).unwrap();
        assert_eq!(
            (p.merge, p.sub, p.parts),
            (Merge::Concat, keys.bytes, vec![0, 1, 2])
        );
        let exists = req(&[b"SCRIPT", b"exists", b"abc"]);
        assert_eq!(
            plan(FanoutCmd::Script, &exists, &labels(2), None)
                .unwrap()
                .merge,
            Merge::And
        );
        let info = plan(
            FanoutCmd::Dbsize,
            &req(&[b"INFO"]),
            &labels(2),
            Some("x".into()),
        );
        assert_eq!(
            info.unwrap().sub,
            resp::encode_request(&[&b"INFO"[..], b"keyspace"])
        );

        let tag = topology_tag(&["127.0.0.1:0", "127.0.0.1:1", "127.0.0.1:2"]);
        let cursor = encode_cursor(42, tag, 2).to_string();
        let scan = req(&[b"SCAN", cursor.as_bytes(), b"MATCH", b"k*"]);
        let p = plan(FanoutCmd::Scan, &scan, &labels(3), None).unwrap();
        assert_eq!(p.parts, vec![2]);
        assert_eq!(
            p.sub,
            resp::encode_request(&[&b"SCAN"[..], b"42", b"MATCH", b"k*"])
        );
    }

    #[test]
    fn a_scan_cursor_from_another_shard_set_or_out_of_range_is_refused() {
        let other = encode_cursor(1, 63 - topology_tag(&["a", "b"]), 0).to_string();
        let refused = |c: &str, n| {
            plan(
                FanoutCmd::Scan,
                &req(&[b"SCAN", c.as_bytes()]),
                &labels(n),
                None,
            )
        };
        assert!(refused(&other, 2)
            .unwrap_err()
            .starts_with(b"-ERR SCAN cursor refers"));
        assert_eq!(
            refused("x", 2).unwrap_err(),
            resp::error("ERR invalid cursor")
        );
        let tag = topology_tag(&["127.0.0.1:0"]);
        let past = encode_cursor(0, tag, 1).to_string();
        assert_eq!(
            refused(&past, 1).unwrap_err(),
            resp::error("ERR invalid cursor")
        );
        assert_eq!(refused("0", 1).unwrap().parts, vec![0]);
    }

    #[test]
    fn a_fanout_finishes_once_with_every_answer_in_part_order() {
        let client = ConnRef { token: 1, gen: 1 };
        let mut f = Fanout::new(client, 0, Merge::Sum, labels(2));
        assert_eq!(f.answer(1, Bytes::from_static(b":2\r\n")), None);
        assert_eq!(
            f.answer(1, Bytes::from_static(b":9\r\n")),
            None,
            "a part answers once"
        );
        assert_eq!(f.answer(7, Bytes::from_static(b":9\r\n")), None);
        let all = f.answer(0, Bytes::from_static(b":1\r\n")).unwrap();
        assert_eq!(all, [&b":1\r\n"[..], b":2\r\n"]);
    }
}
