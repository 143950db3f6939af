//! Mutations of a valid frame: flipped bytes, a cut end, wrong length fields (IPv4 total
//! length and IHL, IPv6 payload length, UDP length, TCP data offset), a wrong IP version,
//! extra bytes at the end; and a repair step that recomputes the checksums of whatever
//! still parses, so that odd but correctly summed packets are common too.

use etherparse::SlicedPacket;

use super::rng::Rng;

/// Offset of the IP header: after Ethernet and any VLAN tags.
fn ip_offset(f: &[u8]) -> usize {
    let mut off = 14;
    while f.len() >= off && matches!(f.get(off - 2..off), Some([0x81, 0] | [0x88, 0xa8])) {
        off += 4;
    }
    off
}

/// Applies one random mutation; returns its name.
pub fn mutate(r: &mut Rng, f: &mut Vec<u8>) -> &'static str {
    let ip = ip_offset(f);
    let v6 = f.get(ip).is_some_and(|b| b >> 4 == 6);
    let l4 = ip
        + if v6 {
            40
        } else {
            4 * usize::from(f.get(ip).map_or(5, |b| b & 15))
        };
    let set = |f: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        if at + bytes.len() <= f.len() {
            f[at..at + bytes.len()].copy_from_slice(bytes);
        }
    };
    match r.below(9) {
        0 | 1 => {
            // Flip 1-4 bytes, mostly in the headers.
            for _ in 0..1 + r.below(4) {
                let span = if r.chance(3, 4) {
                    f.len().min(80)
                } else {
                    f.len()
                };
                let at = r.below(span.max(1));
                if at < f.len() {
                    f[at] ^= 1 + r.below(255) as u8;
                }
            }
            "flip"
        }
        2 => {
            let keep = 14 + r.below(f.len().saturating_sub(14).max(1));
            f.truncate(keep.max(14));
            "cut"
        }
        3 => {
            let n = 1 + r.below(40);
            f.extend(r.bytes(n));
            "extend"
        }
        4 => {
            let v = r.next_u64() as u16;
            let avail = f.len().saturating_sub(ip) as u16;
            let len = match r.below(4) {
                0 => v,
                1 => avail + 1 + (v & 7),
                2 => avail.saturating_sub(1 + (v & 7)),
                _ => v & 0x3f,
            };
            set(f, ip + if v6 { 4 } else { 2 }, &len.to_be_bytes());
            "ip-length"
        }
        5 => {
            if v6 {
                set(f, ip, &[(r.byte() & 0xf0) | (f[ip] & 15)]);
                "ip-version"
            } else {
                let b = f.get(ip).copied().unwrap_or(0x45);
                set(f, ip, &[(b & 0xf0) | (r.byte() & 15)]);
                "ihl"
            }
        }
        6 => {
            // UDP length or TCP data offset, wherever the L4 header would be.
            let v = r.next_u64() as u16;
            set(f, l4 + 4, &v.to_be_bytes());
            set(f, l4 + 12, &[r.byte() & 0xf0]);
            "l4-length"
        }
        7 => {
            set(f, ip, &[(r.byte() & 0xf0) | 5]);
            "ip-version"
        }
        _ => {
            // TTL / hop limit.
            set(f, ip + if v6 { 7 } else { 8 }, &[r.below(3) as u8]);
            "ttl"
        }
    }
}

/// Recomputes the IPv4 header checksum and the TCP/UDP/ICMP checksum of a frame that
/// etherparse parses (not fragments' L4 checksums, nor quoted packets'): the checksums
/// [`crate::validate::sums`] lists, set to their right values.
pub fn repair(f: &mut [u8]) {
    let writes: Vec<(usize, u16)> = match SlicedPacket::from_ethernet(f) {
        Ok(p) => crate::validate::sums(&p, f.as_ptr() as usize)
            .into_iter()
            .filter_map(|s| s.want.ok().map(|w| (s.at, w)))
            .collect(),
        Err(_) => return,
    };
    for (at, v) in writes {
        f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
}
