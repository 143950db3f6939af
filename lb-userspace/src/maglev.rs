//! Weighted Maglev tables (Eisenbud et al., NSDI 2016), a pure function of the backend set.
//!
//! Each backend has a permutation of the table's slots derived from its identity (two
//! hashes give an offset and a skip; with a prime table size every skip visits every
//! slot). Backends take turns claiming their next preferred free slot until the table
//! is full. Weights: on every turn a backend earns its weight in credit and claims a slot
//! each time its credit reaches the largest weight, so slot counts follow the weights and
//! a backend of weight 0 gets none. The result depends only on the set of (identity,
//! weight) pairs, never on the order they were given in: nodes with the same config agree.

/// One backend as the table builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Stable identity (the backend's address and port as bytes, IPv4 padded to 16).
    pub id: [u8; 18],
    pub weight: u32,
}

/// Builds a table of `size` slots (a prime) over `members`. Each slot holds an index into
/// `members`; `None` when no member has a positive weight.
pub fn build(members: &[Member], size: u32) -> Vec<Option<usize>> {
    let m = size as u64;
    let mut table = vec![None; size as usize];
    // Claim order follows the identities, not the caller's order.
    let mut order: Vec<usize> = (0..members.len())
        .filter(|&i| members[i].weight > 0)
        .collect();
    order.sort_by_key(|&i| members[i].id);
    order.dedup_by_key(|i| members[*i].id);
    let Some(max_weight) = order.iter().map(|&i| members[i].weight as u64).max() else {
        return table;
    };
    if m == 0 {
        return table;
    }
    let perms: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let id = &members[i].id;
            let offset = hash64(id, 0x6d61_676c_6576_3031) % m;
            let skip = if m > 1 {
                hash64(id, 0x6d61_676c_6576_3032) % (m - 1) + 1
            } else {
                1
            };
            (offset, skip)
        })
        .collect();
    // Each member's next preferred slot, `(offset + n * skip) % m` for its n-th probe,
    // kept by adding `skip` (< m) and subtracting m on overflow: no division per probe.
    let mut pos: Vec<u64> = perms.iter().map(|p| p.0).collect();
    // Which slots are claimed, one bit each: 8 KiB for 65537 slots, so the probes, most of
    // which hit claimed slots, stay in L1 instead of walking the 1 MiB table.
    let mut claimed = vec![0u64; (size as usize).div_ceil(64)];
    let mut credit = vec![0u64; order.len()];
    let mut filled = 0u64;
    while filled < m {
        for (k, &i) in order.iter().enumerate() {
            credit[k] += members[i].weight as u64;
            if credit[k] < max_weight {
                continue;
            }
            credit[k] -= max_weight;
            let skip = perms[k].1;
            loop {
                let slot = pos[k] as usize;
                pos[k] += skip;
                if pos[k] >= m {
                    pos[k] -= m;
                }
                let (word, bit) = (slot / 64, 1u64 << (slot % 64));
                if claimed[word] & bit == 0 {
                    claimed[word] |= bit;
                    table[slot] = Some(i);
                    break;
                }
            }
            filled += 1;
            if filled == m {
                break;
            }
        }
    }
    table
}

/// FNV-1a over `bytes` from `seed`, then the splitmix64 finaliser: a stable 64-bit hash
/// (unlike std's hasher, whose algorithm may change between Rust releases).
fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The identity owning each slot of a table built over `members`.
pub fn owners(table: &[Option<usize>], members: &[Member]) -> Vec<Option<[u8; 18]>> {
    table.iter().map(|s| s.map(|i| members[i].id)).collect()
}

/// The share (percent) of slots whose owner changed between two tables, among the slots
/// that `removed` did not own before: the flows a change moves needlessly.
pub fn unrelated_moved_pct(
    before: &[Option<[u8; 18]>],
    after: &[Option<[u8; 18]>],
    removed: &[u8; 18],
) -> f64 {
    let (mut unrelated, mut moved) = (0u64, 0u64);
    for (b, a) in before.iter().zip(after) {
        if b.as_ref() == Some(removed) {
            continue;
        }
        unrelated += 1;
        moved += u64::from(b != a);
    }
    100.0 * moved as f64 / unrelated.max(1) as f64
}

/// Largest slot count over smallest, among members with a positive weight.
pub fn imbalance(table: &[Option<usize>], members: &[Member]) -> f64 {
    let mut counts = vec![0u64; members.len()];
    for i in table.iter().flatten() {
        counts[*i] += 1;
    }
    let live = (0..members.len()).filter(|&i| members[i].weight > 0);
    let max = live.clone().map(|i| counts[i]).max().unwrap_or(0);
    let min = live.map(|i| counts[i]).min().unwrap_or(0);
    max as f64 / min.max(1) as f64
}

/// A member whose identity is IPv4 198.19.a.b:8080 (for tests and benchmarks).
pub fn test_member(n: u32, weight: u32) -> Member {
    let mut id = [0u8; 18];
    id[..4].copy_from_slice(&[198, 19, (n >> 8) as u8, n as u8]);
    id[16..].copy_from_slice(&8080u16.to_be_bytes());
    Member { id, weight }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 65537;

    fn members(n: u32) -> Vec<Member> {
        (0..n).map(|i| test_member(i, 100)).collect()
    }

    fn counts(table: &[Option<usize>], n: usize) -> Vec<u64> {
        let mut c = vec![0u64; n];
        for i in table.iter().flatten() {
            c[*i] += 1;
        }
        c
    }

    #[test]
    fn fills_every_slot_and_balances_1000_backends_within_2_percent() {
        let ms = members(1000);
        let t = build(&ms, M);
        assert!(t.iter().all(Option::is_some));
        let r = imbalance(&t, &ms);
        assert!(r <= 1.02, "max/min = {r}");
    }

    #[test]
    fn weights_give_proportional_shares_and_zero_gets_none() {
        let ms = vec![
            test_member(1, 1),
            test_member(2, 2),
            test_member(3, 0),
            test_member(4, 1),
        ];
        let t = build(&ms, M);
        let c = counts(&t, ms.len());
        assert_eq!(c[2], 0, "weight 0 got slots");
        assert_eq!(c.iter().sum::<u64>(), M as u64);
        // Weight 2 gets twice weight 1, within 1%.
        let ratio = c[1] as f64 / c[0] as f64;
        assert!((ratio - 2.0).abs() < 0.02, "ratio {ratio}, counts {c:?}");
        assert!((c[0] as i64 - c[3] as i64).abs() <= 1, "{c:?}");
    }

    #[test]
    fn same_set_in_any_order_gives_the_same_table() {
        let ms = members(50);
        let t1: Vec<_> = build(&ms, 251)
            .into_iter()
            .map(|s| s.map(|i| ms[i].id))
            .collect();
        let mut rev = ms.clone();
        rev.reverse();
        rev.swap(3, 17);
        let t2: Vec<_> = build(&rev, 251)
            .into_iter()
            .map(|s| s.map(|i| rev[i].id))
            .collect();
        assert_eq!(t1, t2);
    }

    #[test]
    fn removing_one_of_100_moves_at_most_1_percent_of_unrelated_slots() {
        let before = members(100);
        let mut after = before.clone();
        let removed = after.remove(37);
        let pct = unrelated_moved_pct(
            &owners(&build(&before, M), &before),
            &owners(&build(&after, M), &after),
            &removed.id,
        );
        assert!(pct <= 1.0, "moved {pct}%");
    }

    #[test]
    fn no_positive_weight_leaves_the_table_empty() {
        assert!(build(&[], 7).iter().all(Option::is_none));
        assert!(build(&[test_member(1, 0)], 7).iter().all(Option::is_none));
    }

    /// FNV-1a over the slots: a fingerprint of a whole table.
    fn fingerprint(table: &[Option<usize>]) -> u64 {
        table.iter().fold(0xcbf2_9ce4_8422_2325, |h, s| {
            let v = s.map_or(u64::MAX, |i| i as u64);
            (h ^ v).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// Nodes with the same config must build the same tables, also while they run
    /// different versions (an upgrade, one node at a time): these are the tables of the
    /// first release.
    #[test]
    fn tables_are_those_of_earlier_versions() {
        let ms: Vec<Member> = (0..100).map(|i| test_member(i, 1 + i % 7)).collect();
        let got: Vec<u64> = [7u32, 251, 65537]
            .iter()
            .map(|&size| fingerprint(&build(&ms, size)))
            .collect();
        assert_eq!(
            got,
            [
                0xc531_fce3_ca5c_c076,
                0x363a_3023_5f56_f327,
                0x00bd_3d4c_4b14_181e
            ]
        );
    }
}
