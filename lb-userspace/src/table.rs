//! The backend table of a service: `size` slots (a prime), each a backend index (or
//! `NO_BACKEND`), that the data path indexes with a flow's hash. Built with weighted
//! Maglev ([`crate::maglev`]): even shares by weight, a change moves few unrelated slots,
//! and the same backend set gives the same table whatever order it was added in.

use lb_common::NO_BACKEND;

use crate::addr::BackendAddr;
use crate::maglev::{Member, build};

/// One backend as the builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableEntry {
    /// The backend's identity: what its Maglev permutation is derived from.
    pub addr: BackendAddr,
    /// What the slots hold: the backend's index in `BACKENDS`.
    pub index: u32,
    /// Relative share; 0 gets no slots (drain).
    pub weight: u32,
}

/// A backend's Maglev identity: its address (16 bytes, IPv4 first and zero-padded) and
/// port, as they are on the wire.
pub fn identity(addr: &BackendAddr) -> [u8; 18] {
    let mut id = [0u8; 18];
    match addr.ip() {
        std::net::IpAddr::V4(v4) => id[..4].copy_from_slice(&v4.octets()),
        std::net::IpAddr::V6(v6) => id[..16].copy_from_slice(&v6.octets()),
    }
    id[16..].copy_from_slice(&addr.0.port().to_be_bytes());
    id
}

/// Builds a table of `size` slots for `backends`. All slots are `NO_BACKEND` when there is
/// no backend with a weight above 0.
pub fn build_table(backends: &[TableEntry], size: u32) -> Vec<u32> {
    let members: Vec<Member> = backends
        .iter()
        .map(|b| Member {
            id: identity(&b.addr),
            weight: b.weight,
        })
        .collect();
    build(&members, size)
        .into_iter()
        .map(|slot| slot.map_or(NO_BACKEND, |i| backends[i].index))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(addr: &str, index: u32, weight: u32) -> TableEntry {
        TableEntry {
            addr: addr.parse().unwrap(),
            index,
            weight,
        }
    }

    fn count(table: &[u32], index: u32) -> u64 {
        table.iter().filter(|&&s| s == index).count() as u64
    }

    #[test]
    fn shares_follow_weights_within_one_slot_or_half_a_percent() {
        let cases: &[&[u32]] = &[
            &[100],
            &[100, 100, 100],
            &[1, 2, 3, 4],
            &[100, 50, 0, 7],
            &[65535, 1],
        ];
        for &weights in cases {
            for size in [7u32, 251, 65537] {
                let backends: Vec<_> = weights
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| entry(&format!("198.19.0.{}:80", i + 1), i as u32, w))
                    .collect();
                let table = build_table(&backends, size);
                assert_eq!(table.len(), size as usize);
                assert!(!table.contains(&NO_BACKEND));
                let total: u32 = weights.iter().sum();
                for b in &backends {
                    let exact = f64::from(size) * f64::from(b.weight) / f64::from(total);
                    let got = count(&table, b.index) as f64;
                    assert!(
                        (got - exact).abs() <= 1.0_f64.max(exact * 0.005),
                        "weights {weights:?} size {size}: backend {} got {got}, exact {exact}",
                        b.index
                    );
                }
            }
        }
    }

    #[test]
    fn order_of_backends_does_not_matter() {
        let a = [
            entry("198.19.0.3:80", 7, 30),
            entry("198.19.0.1:80", 2, 100),
            entry("198.19.0.2:80", 9, 55),
        ];
        let mut b = a;
        b.reverse();
        let mut c = a;
        c.swap(0, 1);
        let t = build_table(&a, 65537);
        assert_eq!(t, build_table(&b, 65537));
        assert_eq!(t, build_table(&c, 65537));
    }

    #[test]
    fn weight_zero_gets_no_slots() {
        let backends = [entry("198.19.0.1:80", 0, 0), entry("198.19.0.2:80", 1, 100)];
        let table = build_table(&backends, 251);
        assert_eq!(count(&table, 0), 0);
        assert_eq!(count(&table, 1), 251);
    }

    #[test]
    fn no_live_backend_means_empty_table() {
        assert_eq!(build_table(&[], 7), vec![NO_BACKEND; 7]);
        let drained = [entry("198.19.0.1:80", 0, 0), entry("198.19.0.2:80", 1, 0)];
        assert_eq!(build_table(&drained, 7), vec![NO_BACKEND; 7]);
    }

    #[test]
    fn more_backends_than_slots() {
        let many: Vec<_> = (0..10)
            .map(|i| entry(&format!("198.19.0.{}:80", i + 1), i, 1))
            .collect();
        let table = build_table(&many, 7);
        // Each backend claims one slot per turn, in address order, until the table is full.
        assert_eq!(table.len(), 7);
        let mut seen: Vec<u32> = table.clone();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6]);
    }
}
