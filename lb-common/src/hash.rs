//! Flow hashing: the 5-tuple of a packet to a 32-bit value that picks a table slot.
//!
//! MurmurHash3's 32-bit mixing over the key's words: a handful of multiplies and
//! rotates, no loops the verifier has to follow, the same result on both sides.

use crate::FlowKey;

/// The seed every xlb node uses, so nodes with the same tables pick the same backends.
pub const FLOW_HASH_SEED: u32 = 0x786c_6221;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of a flow's 5-tuple (addresses, ports, protocol) with `seed`.
#[inline(always)]
pub const fn flow_hash(k: &FlowKey, seed: u32) -> u32 {
    let s = &k.src.words;
    let d = &k.dst.words;
    let mut h = seed;
    h = mix(h, s[0]);
    h = mix(h, s[1]);
    h = mix(h, s[2]);
    h = mix(h, s[3]);
    h = mix(h, d[0]);
    h = mix(h, d[1]);
    h = mix(h, d[2]);
    h = mix(h, d[3]);
    h = mix(h, (k.src_port_be as u32) << 16 | k.dst_port_be as u32);
    h = mix(h, k.proto as u32);
    finish(h, 40)
}

/// The slot of a table of `size` slots that a flow with hash `h` takes.
#[inline(always)]
pub const fn slot(h: u32, size: u32) -> u32 {
    if size == 0 { 0 } else { h % size }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Addr, FlowKey, PROTO_TCP};

    fn key(client: u8, port: u16) -> FlowKey {
        FlowKey {
            src: Addr::from_v4_octets([198, 18, 0, client]),
            dst: Addr::from_v4_octets([198, 18, 0, 10]),
            src_port_be: port.to_be(),
            dst_port_be: 80u16.to_be(),
            proto: PROTO_TCP,
            family: 4,
            _pad: [0; 2],
        }
    }

    #[test]
    fn murmur_mixing_matches_reference_vector() {
        // MurmurHash3_x86_32 of the 4 bytes 0x00000000 with seed 0 is 0x2362f9de.
        assert_eq!(finish(mix(0, 0), 4), 0x2362_f9de);
    }

    #[test]
    fn deterministic_and_sensitive_to_every_field() {
        let k = key(2, 40000);
        assert_eq!(flow_hash(&k, 7), flow_hash(&k, 7));
        assert_ne!(flow_hash(&k, 7), flow_hash(&k, 8));
        let mut other = k;
        other.src_port_be = 40001u16.to_be();
        assert_ne!(flow_hash(&k, 7), flow_hash(&other, 7));
        let mut other = k;
        other.proto = crate::PROTO_UDP;
        assert_ne!(flow_hash(&k, 7), flow_hash(&other, 7));
        let mut other = k;
        other.dst.words[3] = 1;
        assert_ne!(flow_hash(&k, 7), flow_hash(&other, 7));
    }

    #[test]
    fn spreads_sequential_ports_evenly_over_slots() {
        // 30,000 flows from 3 clients over 3 slots: each slot within 5% of a third.
        let mut counts = [0u32; 3];
        for client in 2..5u8 {
            for port in 30000..40000u16 {
                counts[slot(flow_hash(&key(client, port), 0), 3) as usize] += 1;
            }
        }
        for c in counts {
            assert!((9500..=10500).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn slot_is_in_range_and_empty_table_is_safe() {
        assert_eq!(slot(12345, 0), 0);
        for h in [0, 1, u32::MAX, 65536, 65537] {
            assert!(slot(h, 65537) < 65537);
        }
    }
}
