//! Fan-outs in the loop: choosing the shards, sending one part to each, and filling the
//! client's slot with the merge once every part is answered (the merges are in `fanout.rs`).

use super::Proxy;
use crate::backend::Origin;
use crate::conns::ConnRef;
use crate::fanout::{decode_cursor, merge, topology_tag, Fanout, FanoutCmd, Merge};
use crate::resp;
use crate::upstream::Upstream;
use bytes::Bytes;

impl Proxy {
    /// Starts a fan-out for request `seq` of client `client`; the merged reply fills its slot.
    pub(crate) fn start_fanout(
        &mut self,
        client: ConnRef,
        seq: u64,
        cmd: FanoutCmd,
        req: &[u8],
        info: Option<String>,
    ) {
        let origin = Origin::Client {
            token: client.token,
            gen: client.gen,
            seq,
            n: 1,
        };
        let args = resp::frame_args(req);
        let targets: Vec<Upstream> = if !self.ups.have_shards() {
            self.ups.healthy_backends()
        } else {
            match self.ups.shard_set() {
                Ok(set) => set.into_iter().map(Upstream::shard).collect(),
                Err(e) => return self.complete(origin, resp::error(&format!("ERR {e}"))),
            }
        };
        if targets.is_empty() {
            return self.complete(origin, resp::reply::NO_BACKEND);
        }
        let labels: Vec<String> = targets
            .iter()
            .map(|&u| self.ups.get(u).label.clone())
            .collect();
        let (merge, sub, targets) = match (cmd, info) {
            (_, Some(text)) => (
                Merge::InfoKeyspace(text),
                resp::encode_request(&[&b"INFO"[..], b"keyspace"]),
                targets,
            ),
            (FanoutCmd::Scan, None) => {
                let Some(cursor) = args.get(1) else {
                    return self.complete(
                        origin,
                        resp::error("ERR wrong number of arguments for 'scan' command"),
                    );
                };
                let Some((shard_cursor, tag, index)) = decode_cursor(cursor) else {
                    return self.complete(origin, resp::error("ERR invalid cursor"));
                };
                let sorted: Vec<&str> = labels.iter().map(String::as_str).collect();
                let current = topology_tag(&sorted);
                let (shard_cursor, index) = if shard_cursor == 0 && tag == 0 && index == 0 {
                    (0, 0)
                } else if tag != current {
                    return self.complete(
                        origin,
                        resp::error("ERR SCAN cursor refers to a different shard set; restart the scan from 0"),
                    );
                } else if index >= targets.len() {
                    return self.complete(origin, resp::error("ERR invalid cursor"));
                } else {
                    (shard_cursor, index)
                };
                let mut sub_args: Vec<&[u8]> = vec![b"SCAN"];
                let c = shard_cursor.to_string();
                sub_args.push(c.as_bytes());
                sub_args.extend_from_slice(&args[2..]);
                let merge = Merge::Scan {
                    index,
                    shards: targets.len(),
                    tag: current,
                };
                (merge, resp::encode_request(&sub_args), vec![targets[index]])
            }
            (FanoutCmd::Keys, None) => (Merge::Concat, Bytes::copy_from_slice(req), targets),
            (FanoutCmd::Dbsize, None) => (Merge::Sum, Bytes::copy_from_slice(req), targets),
            (FanoutCmd::Lastsave, None) => (Merge::Min, Bytes::copy_from_slice(req), targets),
            (FanoutCmd::Randomkey, None) => {
                (Merge::AnyNonNil, Bytes::copy_from_slice(req), targets)
            }
            (FanoutCmd::Flush, None) => (Merge::AllOk, Bytes::copy_from_slice(req), targets),
            (FanoutCmd::Script, None) => {
                let exists = args
                    .get(1)
                    .is_some_and(|s| s.eq_ignore_ascii_case(b"EXISTS"));
                let merge = if exists { Merge::And } else { Merge::AllOk };
                (merge, Bytes::copy_from_slice(req), targets)
            }
        };
        let labels = match &merge {
            Merge::Scan { index, .. } => vec![labels[*index].clone()],
            _ => labels,
        };
        let n = targets.len();
        let id = self.fanouts.insert(Fanout {
            client,
            seq,
            merge,
            parts: vec![None; n],
            labels,
            remaining: n,
        });
        for (part, u) in targets.into_iter().enumerate() {
            match self.backend_conn(u, 0) {
                Some(conn) => {
                    self.ups.get_mut(u).requests += 1;
                    self.enqueue(conn, Origin::Fanout { id, part }, sub.clone());
                }
                None => {
                    let label = self.ups.get(u).label.clone();
                    let kind = u.kind();
                    self.fanout_part_done(
                        id,
                        part,
                        resp::error(&format!("ERR {kind} {label} connection failed")),
                    );
                }
            }
        }
    }

    /// Records one part's answer; the last one merges and fills the client's slot.
    pub(crate) fn fanout_part_done(&mut self, id: usize, part: usize, reply: Bytes) {
        let Some(f) = self.fanouts.get_mut(id) else {
            return;
        };
        let Some(slot @ None) = f.parts.get_mut(part) else {
            return;
        };
        *slot = Some(reply);
        f.remaining -= 1;
        if f.remaining > 0 {
            return;
        }
        let f = self.fanouts.remove(id);
        let parts: Vec<Bytes> = f.parts.into_iter().flatten().collect();
        let picker = &mut self.picker;
        let merged = merge(&f.merge, &parts, &f.labels, &mut |n| {
            picker.random_below(n as u64) as usize
        });
        let origin = Origin::Client {
            token: f.client.token,
            gen: f.client.gen,
            seq: f.seq,
            n: 1,
        };
        self.complete(origin, merged);
    }

    /// True if `group` has a fan-out target for `cmd` (else the command is forwarded).
    pub(crate) fn fans_out(&self, cmd: FanoutCmd) -> bool {
        self.ups.have_shards() || cmd == FanoutCmd::Script
    }
}
