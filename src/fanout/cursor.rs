//! The SCAN cursor: one integer that walks every shard, statelessly.
//!
//! ```text
//!  cursor = (shard_cursor << 16) | (topology_tag << 10) | shard_index        (u128, decimal)
//! ```
//!
//! `shard_index` (10 bits) is the position in the sorted list of master addresses,
//! `topology_tag` (6 bits) a hash of that list, and `shard_cursor` the shard's own cursor. When a
//! shard's cursor returns to 0 the walk moves on to the next shard with cursor 0; 0 is returned
//! only after the last shard. A cursor whose tag does not match the current shard set is refused.

/// Most shards a SCAN cursor can address.
pub const MAX_SHARDS: usize = 1 << 10;
const TAG_BITS: u32 = 6;
const INDEX_BITS: u32 = 10;
/// Largest shard cursor that fits beside the tag and index in a u128.
pub(super) const MAX_SHARD_CURSOR: u128 = u128::MAX >> (TAG_BITS + INDEX_BITS);

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
}
