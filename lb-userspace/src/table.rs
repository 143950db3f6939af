//! The backend table of a service: `size` slots, each a backend index (or `NO_BACKEND`),
//! that the data path indexes with a flow's hash.
//!
//! This builder gives each backend a share of the slots proportional to its weight
//! (largest-remainder rounding, so within one slot of the exact share) and spreads each
//! backend's slots evenly over the table rather than in runs. The result depends only on
//! the set of backends, not on the order they were added: they are sorted by address first.
//! A later builder (Maglev) replaces [`build_table`] behind the same signature.

use lb_common::NO_BACKEND;

use crate::addr::BackendAddr;

/// One backend as the builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableEntry {
    /// Sort key: makes the table independent of insertion order.
    pub addr: BackendAddr,
    /// What the slots hold: the backend's index in `BACKENDS`.
    pub index: u32,
    /// Relative share; 0 gets no slots (drain).
    pub weight: u32,
}

/// Builds a table of `size` slots for `backends`. All slots are `NO_BACKEND` when there is
/// no backend with a weight above 0.
pub fn build_table(backends: &[TableEntry], size: u32) -> Vec<u32> {
    let mut live: Vec<TableEntry> = backends.iter().copied().filter(|b| b.weight > 0).collect();
    live.sort_by_key(|b| b.addr);
    let quotas = quotas(&live, size);

    // Backend i's k-th slot (of q) ideally sits at position (k + 1/2) / q of the table.
    // Sorting every slot by that position interleaves the backends; ties go to the
    // backend that sorts first, so the order is fully determined.
    let mut slots: Vec<(u64, u64, usize)> = Vec::with_capacity(size as usize);
    for (i, &q) in quotas.iter().enumerate() {
        for k in 0..q {
            slots.push((2 * k + 1, 2 * q, i));
        }
    }
    let position = |a: &(u64, u64, usize), b: &(u64, u64, usize)| {
        (u128::from(a.0) * u128::from(b.1)).cmp(&(u128::from(b.0) * u128::from(a.1)))
    };
    slots.sort_by(|a, b| position(a, b).then(a.2.cmp(&b.2)));
    let mut table: Vec<u32> = slots.iter().map(|&(_, _, i)| live[i].index).collect();
    table.resize(size as usize, NO_BACKEND);
    table
}

/// Slots per backend: `size * weight / total`, rounded by largest remainder (ties to the
/// backend that sorts first), so the quotas add up to `size` exactly.
fn quotas(backends: &[TableEntry], size: u32) -> Vec<u64> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return Vec::new();
    }
    let size = u64::from(size);
    let mut quotas: Vec<u64> = backends
        .iter()
        .map(|b| size * u64::from(b.weight) / total)
        .collect();
    let mut by_remainder: Vec<usize> = (0..backends.len()).collect();
    by_remainder.sort_by_key(|&i| {
        let rem = size * u64::from(backends[i].weight) % total;
        (std::cmp::Reverse(rem), i)
    });
    let short = size - quotas.iter().sum::<u64>();
    for &i in by_remainder.iter().take(short as usize) {
        quotas[i] += 1;
    }
    quotas
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
    fn shares_are_within_one_slot_of_exact() {
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
                        (got - exact).abs() < 1.0,
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
    fn slots_are_interleaved_not_runs() {
        let backends = [entry("198.19.0.1:80", 0, 1), entry("198.19.0.2:80", 1, 1)];
        let table = build_table(&backends, 11);
        assert_eq!(table, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]);

        let three: Vec<_> = (0..3)
            .map(|i| entry(&format!("198.19.0.{}:80", i + 1), i, 100))
            .collect();
        let table = build_table(&three, 65537);
        let longest_run = table
            .chunk_by(|a, b| a == b)
            .map(|run| run.len())
            .max()
            .unwrap();
        assert_eq!(longest_run, 1);
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
        // Ties in remainder go to the backends that sort first.
        assert_eq!(table.len(), 7);
        let mut seen: Vec<u32> = table.clone();
        seen.sort();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5, 6]);
    }
}
