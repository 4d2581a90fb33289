//! Codis 3.2: a key's slot (`pkg/proxy/mapper.go` `Hash`: IEEE CRC-32 of the key, or of the
//! text between its first `{` and the next `}`, modulo 1,024) and the slot table a codis-proxy
//! reports (`SLOTSMAPPING`: each slot's group master).
//!
//! Codis places a request by one argument (`getHashKey`): the first after the name, the third
//! for ZINTERSTORE, ZUNIONSTORE, EVAL and EVALSHA. It splits MGET, MSET, DEL and EXISTS per
//! slot. Anything else with keys in other slots runs on the wrong group: `placed_by_codis` says
//! whether Codis would place a request where its keys live.

use super::hashkit::crc32a;
use crate::resp::parse_i64;

/// Codis's slot count (`MaxSlotNum`).
pub const SLOTS: usize = 1024;

/// The slot of `key`, as Codis computes it.
pub fn slot(key: &[u8]) -> usize {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|beg| {
        let rest = &key[beg + 1..];
        rest.iter().position(|&b| b == b'}').map(|end| &rest[..end])
    });
    crc32a(tagged.unwrap_or(key)) as usize % SLOTS
}

/// The argument Codis places a request of command `name` by.
fn hash_arg(name: &str) -> usize {
    match name {
        "ZINTERSTORE" | "ZUNIONSTORE" | "EVAL" | "EVALSHA" => 3,
        _ => 1,
    }
}

/// True if Codis would send a request of command `name` with `args` (the name first) and these
/// `keys` to the group that holds them all: keyless, split per slot by Codis, or every key in
/// the slot of the argument Codis hashes.
pub fn placed_by_codis(name: &str, args: &[&[u8]], keys: &[&[u8]]) -> bool {
    if keys.is_empty() || matches!(name, "MGET" | "MSET" | "DEL" | "EXISTS") {
        return true;
    }
    let Some(hashed) = args.get(hash_arg(name)) else {
        return false;
    };
    // The common case, one key at the hashed argument, needs no hashing.
    if keys.len() == 1 && std::ptr::eq(keys[0].as_ptr(), hashed.as_ptr()) {
        return true;
    }
    let home = slot(hashed);
    keys.iter().all(|k| slot(k) == home)
}

/// The group master of every slot from a `SLOTSMAPPING` reply (`[slot, addr, migrate_from,
/// replica_groups]` per slot, RESP2), or `None` if it is not one. A slot being migrated is
/// given to its new master, where Codis sends its requests.
pub fn parse_slots_mapping(frame: &[u8]) -> Option<Vec<String>> {
    use redis_protocol::resp2::{decode::decode, types::OwnedFrame};
    let (OwnedFrame::Array(entries), _) = decode(frame).ok()?? else {
        return None;
    };
    let mut masters = vec![String::new(); SLOTS];
    for entry in entries {
        let OwnedFrame::Array(fields) = entry else {
            return None;
        };
        let text = |f: Option<&OwnedFrame>| match f {
            Some(OwnedFrame::SimpleString(s) | OwnedFrame::BulkString(s)) => {
                Some(String::from_utf8_lossy(s).into_owned())
            }
            Some(OwnedFrame::Integer(i)) => Some(i.to_string()),
            _ => None,
        };
        let slot = usize::try_from(parse_i64(text(fields.first())?.as_bytes())?).ok()?;
        *masters.get_mut(slot)? = text(fields.get(1))?;
    }
    Some(masters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_codis_hash() {
        // crc32("foo") = 0x8c736521; Codis's own test: HashSlot of "{abc}" keys agree.
        assert_eq!(slot(b"foo"), 0x8c73_6521 % 1024);
        assert_eq!(slot(b"a{foo}b"), slot(b"foo"));
        assert_eq!(slot(b"{}x"), slot(b""));
        assert_eq!(slot(b"{foo"), slot(b"{foo"));
        assert_ne!(slot(b"{foo"), slot(b"foo"));
    }

    #[test]
    fn codis_places_by_one_argument() {
        let args: Vec<&[u8]> = vec![b"XREAD", b"STREAMS", b"s", b"0"];
        assert!(!placed_by_codis("XREAD", &args, &[args[2]]) || slot(b"STREAMS") == slot(b"s"));
        let args: Vec<&[u8]> = vec![b"XADD", b"s", b"*", b"f", b"v"];
        assert!(placed_by_codis("XADD", &args, &[args[1]]));
        let args: Vec<&[u8]> = vec![b"SUNION", b"{t}a", b"{t}b"];
        assert!(placed_by_codis("SUNION", &args, &[args[1], args[2]]));
        let args: Vec<&[u8]> = vec![b"MGET", b"a", b"b"];
        assert!(placed_by_codis("MGET", &args, &[args[1], args[2]]));
    }

    #[test]
    fn reads_a_slot_table() {
        let mut frame = b"*2\r\n".to_vec();
        frame.extend_from_slice(b"*4\r\n+0\r\n+127.0.0.1:1\r\n+\r\n*-1\r\n");
        frame.extend_from_slice(b"*4\r\n+1\r\n+127.0.0.1:2\r\n+127.0.0.1:1\r\n*-1\r\n");
        let masters = parse_slots_mapping(&frame).expect("a table");
        assert_eq!(masters[0], "127.0.0.1:1");
        assert_eq!(masters[1], "127.0.0.1:2");
        assert_eq!(masters[2], "");
        assert!(parse_slots_mapping(b"-ERR no\r\n").is_none());
    }
}
