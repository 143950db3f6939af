//! Internet checksum arithmetic (RFC 1071, incremental updates after RFC 1624).
//!
//! The one's complement sum does not depend on byte order (RFC 1071 2.B), so every value
//! here is a native-endian load of wire bytes: a checksum field read with
//! `u16::from_ne_bytes`, an address word read with `u32::from_ne_bytes`. The XDP program
//! never swaps bytes to update a checksum.

/// Folds a 32-bit sum of 16-bit words into 16 bits with end-around carry.
#[inline(always)]
pub const fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Sum of the two 16-bit halves of a word, as the checksum sees them.
#[inline(always)]
const fn halves(w: u32) -> u32 {
    (w & 0xffff) + (w >> 16)
}

/// A pending checksum change: the sum of `~old + new` over every rewritten field.
/// Apply it to each checksum that covers those fields (RFC 1624 eqn. 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    pub const fn new() -> Self {
        Delta(0)
    }

    /// Records that a 16-bit field changed from `old` to `new`.
    #[inline(always)]
    pub const fn u16(self, old: u16, new: u16) -> Self {
        Delta(fold(self.0 + (!old) as u32 + new as u32) as u32)
    }

    /// Records that a 32-bit field changed from `old` to `new`.
    #[inline(always)]
    pub const fn u32(self, old: u32, new: u32) -> Self {
        Delta(fold(self.0 + halves(!old) + halves(new)) as u32)
    }

    /// Records that 128 bits (an IPv6 address, or an IPv4 one padded with zeros) changed.
    #[inline(always)]
    pub const fn words(self, old: &[u32; 4], new: &[u32; 4]) -> Self {
        self.u32(old[0], new[0])
            .u32(old[1], new[1])
            .u32(old[2], new[2])
            .u32(old[3], new[3])
    }

    /// Both deltas' changes together.
    #[inline(always)]
    pub const fn add(self, other: Delta) -> Self {
        Delta(fold(self.0 + other.0) as u32)
    }

    /// The checksum `check` updated for every recorded change.
    #[inline(always)]
    pub const fn apply(self, check: u16) -> u16 {
        !fold((!check) as u32 + self.0)
    }

    /// Like [`Delta::apply`] for a UDP checksum: zero means "no checksum" (IPv4) and stays
    /// zero, and a computed zero is sent as all ones (RFC 768).
    #[inline(always)]
    pub const fn apply_udp(self, check: u16) -> u16 {
        if check == 0 {
            return 0;
        }
        match self.apply(check) {
            0 => 0xffff,
            c => c,
        }
    }
}

/// The full Internet checksum of `data` (odd lengths padded with a zero byte), folded and
/// complemented, as a native-endian value ready for `to_ne_bytes`. Host-side reference.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum_bytes(data, 0))
}

/// One's complement sum of `data` onto `sum` (not folded past 32 bits' safety margin).
pub fn sum_bytes(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = fold(sum + u16::from_ne_bytes([c[0], c[1]]) as u32) as u32;
    }
    if let [last] = chunks.remainder() {
        sum = fold(sum + u16::from_ne_bytes([*last, 0]) as u32) as u32;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_header(src: [u8; 4], dst: [u8; 4], ttl: u8) -> [u8; 20] {
        let mut h = [
            0x45, 0, 0, 60, 0x1c, 0x46, 0x40, 0, ttl, 6, 0, 0, src[0], src[1], src[2], src[3],
            dst[0], dst[1], dst[2], dst[3],
        ];
        let c = checksum(&h).to_ne_bytes();
        h[10] = c[0];
        h[11] = c[1];
        h
    }

    #[test]
    fn full_checksum_of_a_valid_header_verifies_to_zero() {
        let h = ipv4_header([198, 18, 0, 2], [198, 18, 0, 10], 64);
        assert_eq!(checksum(&h), 0);
        // The RFC 1071 example: sum of 0001 f203 f4f5 f6f7 is ddf2 (before complement).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(u16::from_be(!checksum(&data)), 0xddf2);
    }

    #[test]
    fn incremental_update_matches_recompute_for_many_rewrites() {
        // Deterministic pseudo-random addresses and TTLs, each rewrite checked against a
        // checksum computed from scratch over the rewritten header.
        let mut x: u32 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..10_000 {
            let src = next().to_ne_bytes();
            let old_dst = next().to_ne_bytes();
            let new_dst = next().to_ne_bytes();
            let ttl = (next() % 254) as u8 + 2;
            let h = ipv4_header(src, old_dst, ttl);
            let check = u16::from_ne_bytes([h[10], h[11]]);
            let d = Delta::new()
                .u32(u32::from_ne_bytes(old_dst), u32::from_ne_bytes(new_dst))
                .u16(
                    u16::from_ne_bytes([ttl, 6]),
                    u16::from_ne_bytes([ttl - 1, 6]),
                );
            let mut want = ipv4_header(src, new_dst, ttl - 1);
            assert_eq!(d.apply(check).to_ne_bytes(), [want[10], want[11]]);
            // And the updated header verifies.
            let c = d.apply(check).to_ne_bytes();
            want[10] = c[0];
            want[11] = c[1];
            assert_eq!(checksum(&want), 0);
        }
    }

    #[test]
    fn words_delta_equals_four_u32_deltas_and_is_identity_when_unchanged() {
        let a = [1u32, 2, 3, 4];
        let b = [5u32, 6, 7, 8];
        let d1 = Delta::new().words(&a, &b);
        let d2 = Delta::new().u32(1, 5).u32(2, 6).u32(3, 7).u32(4, 8);
        assert_eq!(d1.apply(0x1234), d2.apply(0x1234));
        assert_eq!(Delta::new().words(&a, &a).apply(0xbeef), 0xbeef);
        let split = Delta::new()
            .u32(1, 5)
            .u32(2, 6)
            .add(Delta::new().u32(3, 7).u32(4, 8));
        assert_eq!(split.apply(0x1234), d2.apply(0x1234));
    }

    #[test]
    fn udp_zero_checksum_rules() {
        // No checksum stays no checksum.
        assert_eq!(Delta::new().u16(1, 2).apply_udp(0), 0);
        // A change that would produce 0 yields 0xffff instead.
        let check = 0x0001u16;
        // ~0x0001 = 0xfffe, and the field change 1 -> 2 adds 1: the sum is 0xffff, so 0.
        let d = Delta::new().u16(1, 2);
        assert_eq!(d.apply(check), 0);
        assert_eq!(d.apply_udp(check), 0xffff);
    }
}
