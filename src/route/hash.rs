//! Hash functions and consistent-hash rings, byte-compatible with Python
//! carbon (`carbon.hashing`) and carbon-c-relay (`consistent-hash.c`).
//!
//! A ring holds `REPLICAS` entries per member at 16-bit positions (md5 or
//! folded FNV-1a of a per-replica key). A metric's key hashes to a
//! position; its nodes are the distinct members met walking the ring from
//! the first entry at or after that position.

use md5::{Digest, Md5};

/// Ring entries per member, as in carbon and carbon-c-relay.
pub const REPLICAS: usize = 100;

/// 32-bit FNV-1a.
pub fn fnv1a_32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// 64-bit FNV-1a.
pub fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Carbon's md5 position: the first two bytes of the digest, big-endian.
pub fn md5_position(key: &[u8]) -> u32 {
    let digest = Md5::digest(key);
    u32::from(u16::from_be_bytes([digest[0], digest[1]]))
}

/// Carbon's FNV-1a position: the 32-bit hash folded to 16 bits.
pub fn fnv1a_position(key: &[u8]) -> u32 {
    let hash = fnv1a_32(key);
    (hash >> 16) ^ (hash & 0xffff)
}

/// Jump consistent hash (Lamping and Veach), as carbon-c-relay computes it.
pub fn jump_bucket(mut key: u64, n_buckets: usize) -> usize {
    let (mut bucket, mut next): (i64, i64) = (-1, 0);
    while next < n_buckets as i64 {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    bucket.max(0) as usize
}

/// 32-bit FNV-1a as carbon-c-relay computes it: `char` is signed, so a
/// byte of 0x80 or more is XORed sign-extended.
pub fn fnv1a_32_signed(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ (b as i8 as i32 as u32)).wrapping_mul(0x0100_0193)
    })
}

/// 64-bit FNV-1a as carbon-c-relay computes it (bytes sign-extended).
pub fn fnv1a_64_signed(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ (b as i8 as i64 as u64)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// carbon-c-relay's FNV-1a position (signed bytes, folded to 16 bits).
pub fn fnv1a_position_signed(key: &[u8]) -> u32 {
    let hash = fnv1a_32_signed(key);
    (hash >> 16) ^ (hash & 0xffff)
}

/// carbon-c-relay's mix between two jump draws when replicating.
pub fn jump_remix(mut hash: u64) -> u64 {
    hash ^= hash >> 12;
    hash ^= hash << 25;
    hash ^= hash >> 27;
    hash.wrapping_mul(2_685_821_657_736_338_717)
}

/// A consistent-hash ring over member indices.
#[derive(Debug, Clone)]
pub struct Ring {
    /// `(position, member)` sorted by position.
    entries: Vec<(u32, usize)>,
    n_members: usize,
    /// carbon-c-relay walks a full turn; Python carbon stops one entry short.
    full_turn: bool,
}

impl Ring {
    /// Python carbon's ring: members are added in order and a position
    /// already taken moves up by one until free.
    pub fn python(member_positions: impl IntoIterator<Item = Vec<u32>>) -> Self {
        let mut entries: Vec<(u32, usize)> = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for (member, positions) in member_positions.into_iter().enumerate() {
            for mut position in positions {
                while !taken.insert(position) {
                    position += 1;
                }
                entries.push((position, member));
            }
        }
        entries.sort_unstable();
        let n_members = entries.iter().map(|e| e.1 + 1).max().unwrap_or(0);
        Self {
            entries,
            n_members,
            full_turn: false,
        }
    }

    /// carbon-c-relay's ring: entries stably sorted by position then by
    /// `tie_break`, and every run of equal positions owned by the member
    /// that sorts first in it.
    pub fn ccr(
        member_positions: impl IntoIterator<Item = Vec<u32>>,
        tie_break: impl Fn(usize, usize) -> std::cmp::Ordering,
    ) -> Self {
        let mut entries: Vec<(u32, usize)> = member_positions
            .into_iter()
            .enumerate()
            .flat_map(|(member, positions)| positions.into_iter().map(move |p| (p, member)))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| tie_break(a.1, b.1)));
        for i in 1..entries.len() {
            if entries[i].0 == entries[i - 1].0 {
                entries[i].1 = entries[i - 1].1;
            }
        }
        let n_members = entries.iter().map(|e| e.1 + 1).max().unwrap_or(0);
        Self {
            entries,
            n_members,
            full_turn: true,
        }
    }

    /// Distinct members in ring order from the first entry at or after
    /// `position` (wrapping), as the flavour's lookup yields them.
    pub fn walk(&self, position: u32) -> impl Iterator<Item = usize> + '_ {
        let len = self.entries.len();
        let start = self.entries.partition_point(|(p, _)| *p < position) % len.max(1);
        let steps = if self.full_turn {
            len
        } else {
            len.saturating_sub(1)
        };
        let mut seen: smallvec::SmallVec<[bool; 64]> = smallvec::smallvec![false; self.n_members];
        (0..steps)
            .map(move |step| self.entries[(start + step) % len].1)
            .filter(move |&member| !std::mem::replace(&mut seen[member], true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_hash_values() {
        assert_eq!(fnv1a_32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a_32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        // md5("") = d41d8cd9...
        assert_eq!(md5_position(b""), 0xd41d);
    }

    #[test]
    fn jump_spreads_and_is_stable() {
        assert_eq!(jump_bucket(0, 1), 0);
        let mut counts = [0usize; 5];
        for key in 0..10_000u64 {
            let bucket = jump_bucket(fnv1a_64(&key.to_le_bytes()), 5);
            counts[bucket] += 1;
            // Growing the set only moves keys to the new bucket.
            let grown = jump_bucket(fnv1a_64(&key.to_le_bytes()), 6);
            assert!(grown == bucket || grown == 5);
        }
        assert!(counts.iter().all(|&n| n > 1500), "{counts:?}");
    }

    #[test]
    fn collisions_move_up_in_python_carbon_rings() {
        let ring = Ring::python([vec![5, 9], vec![5]]);
        assert_eq!(ring.entries, vec![(5, 0), (6, 1), (9, 0)]);
        assert_eq!(ring.walk(6).collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(ring.walk(10).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn ccr_rings_give_a_tied_position_to_the_first_member_in_order() {
        // Member 1 sorts first on ties, so it owns position 5 twice.
        let ring = Ring::ccr([vec![5, 9], vec![5]], |a, b| b.cmp(&a));
        assert_eq!(ring.entries, vec![(5, 1), (5, 1), (9, 0)]);
        assert_eq!(ring.walk(6).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn signed_char_variants_differ_only_above_ascii() {
        assert_eq!(fnv1a_32_signed(b"foo.bar"), fnv1a_32(b"foo.bar"));
        assert_ne!(
            fnv1a_32_signed("caf\u{e9}".as_bytes()),
            fnv1a_32("caf\u{e9}".as_bytes())
        );
        assert_eq!(fnv1a_64_signed(b"foo.bar"), fnv1a_64(b"foo.bar"));
    }
}
