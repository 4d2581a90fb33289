//! Multi-key commands across Redis Cluster slots: `MGET`, `MSET`, `DEL`, `UNLINK`, `EXISTS` and
//! `TOUCH` whose keys live in several slots are split into one request per slot (each node
//! accepts only keys of one slot), sent in parallel as the parts of a fan-out, and merged back:
//! MGET's values in the order of the original keys, counts summed, MSET `+OK` once every part
//! said so.
//!
//! ```text
//!  MGET a b c   slot(a) = slot(c) ≠ slot(b)  ─▶  part 0: MGET a c   part 1: MGET b
//!  *2 va vc │ *1 vb                          ─▶  *3 va vb vc        (Gather [[0, 2], [1]])
//! ```

use super::Merge;
use crate::request::Request;
use crate::resp;
use bytes::Bytes;
use std::collections::HashMap;

/// The parts of a split request: each part's slot (its first key's) and request, and the merge.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    pub merge: Merge,
    pub parts: Vec<(usize, Bytes)>,
}

/// How a splittable command's arguments group: keys alone, or key-value pairs.
fn stride(name: &str) -> Option<usize> {
    match name {
        "MGET" | "DEL" | "UNLINK" | "EXISTS" | "TOUCH" => Some(1),
        "MSET" => Some(2),
        _ => None,
    }
}

/// True if requests of command `name` are split when their keys span slots.
pub fn splits(name: &str) -> bool {
    stride(name).is_some()
}

/// `req` split per slot (`slot_of` a key), or `None` if it is not a splittable command, its
/// arguments are malformed (the node answers that), or its keys are all in one slot.
pub fn split(req: &Request, slot_of: impl Fn(&[u8]) -> usize) -> Option<Split> {
    let name = req.spec()?.name;
    let step = stride(name)?;
    let args: Vec<&[u8]> = req.args().skip(1).collect();
    if args.is_empty() || args.len() % step != 0 {
        return None;
    }
    // Groups in order of their first key: (slot, indices of its keys among the keys).
    let mut groups: Vec<(usize, Vec<u32>)> = Vec::new();
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    for (i, group) in args.chunks(step).enumerate() {
        let slot = slot_of(group[0]);
        let i = u32::try_from(i).ok()?;
        let g = *group_of.entry(slot).or_insert_with(|| {
            groups.push((slot, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    if groups.len() < 2 {
        return None;
    }
    let parts = groups
        .iter()
        .map(|(slot, keys)| {
            let mut sub: Vec<&[u8]> = vec![name.as_bytes()];
            for &k in keys {
                let at = k as usize * step;
                sub.extend_from_slice(&args[at..at + step]);
            }
            (*slot, resp::encode_request(&sub))
        })
        .collect();
    let merge = match name {
        "MGET" => Merge::Gather(groups.into_iter().map(|(_, keys)| keys).collect()),
        "MSET" => Merge::AllOk,
        _ => Merge::Sum,
    };
    Some(Split { merge, parts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandTable;

    fn request(args: &[&[u8]]) -> Request {
        let bytes = resp::encode_request(args);
        let id = CommandTable::new().lookup(args[0]);
        Request::new(bytes, id, 0)
    }

    /// The slot of a key: its first byte, for tests.
    fn first_byte(key: &[u8]) -> usize {
        usize::from(key[0])
    }

    #[test]
    fn mget_splits_per_slot_in_key_order() {
        let s = split(&request(&[b"MGET", b"a1", b"b1", b"a2"]), first_byte).expect("a split");
        assert_eq!(s.merge, Merge::Gather(vec![vec![0, 2], vec![1]]));
        let subs: Vec<Bytes> = s.parts.iter().map(|p| p.1.clone()).collect();
        assert_eq!(subs[0], resp::encode_request(&[&b"MGET"[..], b"a1", b"a2"]));
        assert_eq!(subs[1], resp::encode_request(&[&b"MGET"[..], b"b1"]));
        assert_eq!(
            (s.parts[0].0, s.parts[1].0),
            (usize::from(b'a'), usize::from(b'b'))
        );
    }

    #[test]
    fn mset_keeps_pairs_and_counts_sum() {
        let s = split(&request(&[b"MSET", b"a", b"1", b"b", b"2"]), first_byte).expect("split");
        assert_eq!(s.merge, Merge::AllOk);
        assert_eq!(
            s.parts[1].1,
            resp::encode_request(&[&b"MSET"[..], b"b", b"2"])
        );
        let del = split(&request(&[b"DEL", b"a", b"b"]), first_byte).expect("split");
        assert_eq!(del.merge, Merge::Sum);
    }

    #[test]
    fn one_slot_bad_arity_and_other_commands_are_not_split() {
        assert_eq!(split(&request(&[b"MGET", b"a1", b"a2"]), first_byte), None);
        assert_eq!(
            split(&request(&[b"MSET", b"a", b"1", b"b"]), first_byte),
            None
        );
        assert_eq!(
            split(&request(&[b"MSETNX", b"a", b"1", b"b", b"2"]), first_byte),
            None
        );
        assert_eq!(split(&request(&[b"RENAME", b"a", b"b"]), first_byte), None);
    }
}
