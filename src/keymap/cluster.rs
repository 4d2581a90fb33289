//! Redis Cluster: a key's hash slot (CRC16-XMODEM of the key, or of the text between its first
//! `{` and the next `}` when that text is not empty, modulo 16,384: `keyHashSlot` in Redis's
//! `cluster.c`), the slot table a node reports (`CLUSTER SLOTS`: ranges of slots, each with
//! its master and replicas), and the cluster respite shows its own clients: one node, itself,
//! owning every slot (`OneNode`), so that cluster-aware clients send everything to respite.

use super::hashkit::crc16;
use crate::resp::{self, parse_i64};
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;

/// Redis Cluster's slot count (`CLUSTER_SLOTS`).
pub const SLOTS: usize = 16384;

/// The hash slot of `key`, as Redis Cluster computes it.
pub fn slot(key: &[u8]) -> usize {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|beg| {
        let rest = &key[beg + 1..];
        let end = rest.iter().position(|&b| b == b'}')?;
        (end > 0).then(|| &rest[..end])
    });
    // nutcracker's crc16 keeps the register in 32 bits; its low 16 bits are CRC16-XMODEM.
    (crc16(tagged.unwrap_or(key)) as usize) & (SLOTS - 1)
}

/// One range of slots and the nodes serving it (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub master: String,
    pub replicas: Vec<String>,
}

/// The ranges of a `CLUSTER SLOTS` reply (RESP2, or RESP3 from a connection that said
/// `HELLO 3`: Redis 7 then sends each node's metadata as a map), or `None` if it is not one. A
/// node whose address is unknown (`?` or an empty host) is left out: nothing can connect to it.
pub fn parse_cluster_slots(frame: &[u8]) -> Option<Vec<SlotRange>> {
    use redis_protocol::resp3::{decode::complete::decode, types::OwnedFrame};
    let (OwnedFrame::Array { data: entries, .. }, _) = decode(frame).ok()?? else {
        return None;
    };
    let int = |f: Option<&OwnedFrame>| match f {
        Some(OwnedFrame::Number { data, .. }) => Some(*data),
        Some(OwnedFrame::BlobString { data, .. } | OwnedFrame::SimpleString { data, .. }) => {
            parse_i64(data)
        }
        _ => None,
    };
    let node = |f: &OwnedFrame| {
        let OwnedFrame::Array { data: fields, .. } = f else {
            return None;
        };
        let host = match fields.first()? {
            OwnedFrame::BlobString { data, .. } | OwnedFrame::SimpleString { data, .. } => {
                String::from_utf8_lossy(data).into_owned()
            }
            _ => return None,
        };
        let port = int(fields.get(1))?;
        Some((!host.is_empty() && host != "?").then(|| format!("{host}:{port}")))
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in &entries {
        let OwnedFrame::Array { data: fields, .. } = entry else {
            return None;
        };
        let first = u16::try_from(int(fields.first())?).ok()?;
        let last = u16::try_from(int(fields.get(1))?).ok()?;
        if first > last || usize::from(last) >= SLOTS {
            return None;
        }
        let mut nodes = fields.get(2..)?.iter().map(node);
        let Some(master) = nodes.next()?? else {
            continue;
        };
        let replicas = nodes.collect::<Option<Vec<_>>>()?.into_iter().flatten();
        ranges.push(SlotRange {
            first,
            last,
            master,
            replicas: replicas.collect(),
        });
    }
    ranges.sort_by_key(|r| r.first);
    Some(ranges)
}

/// A node's answer that a slot is served elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `-ASK`: for this request only (the slot is migrating); `-MOVED`: for good.
    pub ask: bool,
    pub slot: usize,
    /// `host:port` of the node to ask.
    pub addr: String,
}

/// The redirect in an error reply (`-MOVED 3999 127.0.0.1:6381\r\n`, `-ASK ...`), if it is
/// one.
pub fn parse_redirect(frame: &[u8]) -> Option<Redirect> {
    let line = frame.strip_prefix(b"-")?.strip_suffix(b"\r\n")?;
    let mut words = line.split(|&b| b == b' ');
    let ask = match words.next()? {
        b"MOVED" => false,
        b"ASK" => true,
        _ => return None,
    };
    let slot = usize::try_from(parse_i64(words.next()?)?).ok()?;
    let addr = std::str::from_utf8(words.next()?).ok()?.to_string();
    (slot < SLOTS && words.next().is_none()).then_some(Redirect { ask, slot, addr })
}

/// respite seen as a cluster of one node at `addr` (the address the client reached) that owns
/// every slot: the answers to `CLUSTER SLOTS|SHARDS|NODES|INFO|MYID`, in RESP2.
pub struct OneNode {
    pub addr: SocketAddr,
}

impl OneNode {
    /// A node id (40 hex digits) that stays the same for one address.
    pub fn id(&self) -> String {
        let text = self.addr.to_string();
        let h = super::hashkit::fnv1a_64(text.as_bytes());
        format!("{h:016x}{:024x}", u64::from(self.addr.port()))
    }

    /// The answer to `CLUSTER <sub>`, or `None` for a subcommand it does not answer.
    pub fn answer(&self, sub: &[u8], args: &[&[u8]]) -> Option<Bytes> {
        let ip = self.addr.ip().to_string();
        let port = i64::from(self.addr.port());
        let id = self.id();
        let mut out = BytesMut::new();
        match sub.to_ascii_uppercase().as_slice() {
            b"SLOTS" => {
                resp::put_array_header(&mut out, 1);
                resp::put_array_header(&mut out, 3);
                resp::put_integer(&mut out, 0);
                resp::put_integer(&mut out, SLOTS as i64 - 1);
                resp::put_array_header(&mut out, 3);
                resp::put_bulk(&mut out, ip.as_bytes());
                resp::put_integer(&mut out, port);
                resp::put_bulk(&mut out, id.as_bytes());
            }
            b"SHARDS" => {
                resp::put_array_header(&mut out, 1);
                resp::put_array_header(&mut out, 4);
                resp::put_bulk(&mut out, b"slots");
                resp::put_array_header(&mut out, 2);
                resp::put_integer(&mut out, 0);
                resp::put_integer(&mut out, SLOTS as i64 - 1);
                resp::put_bulk(&mut out, b"nodes");
                resp::put_array_header(&mut out, 1);
                resp::put_array_header(&mut out, 14);
                for (k, v) in [("id", id.as_str()), ("ip", &ip), ("endpoint", &ip)] {
                    resp::put_bulk(&mut out, k.as_bytes());
                    resp::put_bulk(&mut out, v.as_bytes());
                }
                resp::put_bulk(&mut out, b"port");
                resp::put_integer(&mut out, port);
                for (k, v) in [("role", "master"), ("health", "online")] {
                    resp::put_bulk(&mut out, k.as_bytes());
                    resp::put_bulk(&mut out, v.as_bytes());
                }
                resp::put_bulk(&mut out, b"replication-offset");
                resp::put_integer(&mut out, 0);
            }
            b"NODES" => {
                let line = format!(
                    "{id} {ip}:{port}@{port} myself,master - 0 0 1 connected 0-{}\n",
                    SLOTS - 1
                );
                resp::put_bulk(&mut out, line.as_bytes());
            }
            b"INFO" => {
                let text = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\n\
                            cluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\n\
                            cluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\n\
                            cluster_current_epoch:1\r\ncluster_my_epoch:1\r\n";
                resp::put_bulk(&mut out, text.as_bytes());
            }
            b"MYID" => resp::put_bulk(&mut out, id.as_bytes()),
            b"KEYSLOT" => match args {
                [key] => resp::put_integer(&mut out, slot(key) as i64),
                _ => {
                    return Some(resp::error(
                        "ERR wrong number of arguments for 'cluster|keyslot' command",
                    ))
                }
            },
            _ => return None,
        }
        Some(out.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis_cluster() {
        // CLUSTER KEYSLOT answers of redis-server 7.0.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"123456789"), 0x31c3 & 0x3fff);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(
            slot(b"foo{}{bar}"),
            slot(b"bar"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b"\xff\x00{\xfe}"), slot(b"\xfe"));
    }

    #[test]
    fn one_node_owns_every_slot() {
        let node = OneNode {
            addr: "127.0.0.1:7000".parse().expect("an address"),
        };
        let id = node.id();
        assert_eq!(id.len(), 40);
        let slots = node.answer(b"slots", &[]).expect("SLOTS");
        let ranges = parse_cluster_slots(&slots).expect("a slot table");
        assert_eq!((ranges[0].first, ranges[0].last), (0, 16383));
        assert_eq!(ranges[0].master, "127.0.0.1:7000");
        let nodes = node.answer(b"NODES", &[]).expect("NODES");
        assert!(String::from_utf8_lossy(&nodes).contains("myself,master - 0 0 1 connected 0-16383"));
        assert_eq!(
            node.answer(b"KEYSLOT", &[b"foo"]),
            Some(resp::integer(12182))
        );
        assert_eq!(node.answer(b"ADDSLOTS", &[]), None);
        for sub in [&b"SHARDS"[..], b"INFO", b"MYID"] {
            let reply = node.answer(sub, &[]).expect("an answer");
            assert!(crate::resp::ReplyScanner::new().scan(&reply) == Ok(Some(reply.len())));
        }
    }

    #[test]
    fn parses_redirects() {
        let moved = parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n");
        assert_eq!(
            moved,
            Some(Redirect {
                ask: false,
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        let ask = parse_redirect(b"-ASK 0 ::1:7000\r\n").expect("an ASK");
        assert!(ask.ask && ask.slot == 0 && ask.addr == "::1:7000");
        assert_eq!(parse_redirect(b"-MOVED 16384 h:1\r\n"), None);
        assert_eq!(parse_redirect(b"-ERR MOVED 1 h:1\r\n"), None);
        assert_eq!(parse_redirect(b"+MOVED 1 h:1\r\n"), None);
    }

    #[test]
    fn parses_cluster_slots() {
        let reply = b"*2\r\n\
            *4\r\n:5461\r\n:10922\r\n*3\r\n$9\r\n127.0.0.1\r\n:7001\r\n$2\r\nid\r\n*4\r\n$9\r\n127.0.0.1\r\n:7004\r\n$2\r\nid\r\n*0\r\n\
            *3\r\n:0\r\n:5460\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n";
        let ranges = parse_cluster_slots(reply).expect("a slot table");
        assert_eq!(
            ranges,
            vec![
                SlotRange {
                    first: 0,
                    last: 5460,
                    master: "127.0.0.1:7000".into(),
                    replicas: vec![],
                },
                SlotRange {
                    first: 5461,
                    last: 10922,
                    master: "127.0.0.1:7001".into(),
                    replicas: vec!["127.0.0.1:7004".into()],
                },
            ]
        );
        assert_eq!(parse_cluster_slots(b"*0\r\n"), Some(vec![]));
        // RESP3, as Redis 7 sends it after HELLO 3: node metadata as a map.
        let resp3 =
            b"*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n%0\r\n";
        let ranges = parse_cluster_slots(resp3).expect("a RESP3 slot table");
        assert_eq!(
            (ranges.len(), ranges[0].master.as_str()),
            (1, "127.0.0.1:7000")
        );
        assert_eq!(
            parse_cluster_slots(b"-ERR This instance has cluster support disabled\r\n"),
            None
        );
        assert_eq!(
            parse_cluster_slots(b"*1\r\n*3\r\n:9\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
            None
        );
    }
}
