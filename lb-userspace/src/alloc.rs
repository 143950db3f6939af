//! Allocators of the control state: ids (service ids, backend indexes) and regions of the
//! table area. Both split "which one would I get" ([`IdPool::peek`], [`Regions::find`])
//! from "take it", so a request can be validated in full before anything changes.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Which freed id comes back first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reuse {
    /// The lowest free id (service ids: small and stable).
    Lowest,
    /// Never-used ids first, then freed ones in the order they were freed. Backend indexes
    /// use this: a freed index may still be named by live flows and by the inactive table
    /// half for a moment, so it is reused as late as possible.
    Oldest,
}

/// Ids `0..limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdPool {
    reuse: Reuse,
    limit: u32,
    /// Ids `next..limit` have never been handed out.
    next: u32,
    freed_lowest: BTreeSet<u32>,
    freed_oldest: VecDeque<u32>,
}

impl IdPool {
    pub fn new(limit: u32, reuse: Reuse) -> Self {
        IdPool {
            reuse,
            limit,
            next: 0,
            freed_lowest: BTreeSet::new(),
            freed_oldest: VecDeque::new(),
        }
    }

    /// The id [`IdPool::take`] would return, or `None` when all are in use.
    pub fn peek(&self) -> Option<u32> {
        match self.reuse {
            Reuse::Lowest => {
                let freed = self.freed_lowest.first().copied();
                let fresh = (self.next < self.limit).then_some(self.next);
                freed.or(fresh)
            }
            Reuse::Oldest => (self.next < self.limit)
                .then_some(self.next)
                .or(self.freed_oldest.front().copied()),
        }
    }

    pub fn take(&mut self) -> Option<u32> {
        let id = self.peek()?;
        if id == self.next {
            self.next += 1;
        } else if self.reuse == Reuse::Lowest {
            self.freed_lowest.remove(&id);
        } else {
            self.freed_oldest.pop_front();
        }
        Some(id)
    }

    pub fn free(&mut self, id: u32) {
        match self.reuse {
            Reuse::Lowest => {
                self.freed_lowest.insert(id);
            }
            Reuse::Oldest => self.freed_oldest.push_back(id),
        }
    }
}

/// Free space in one half of the table area, as sorted, non-adjacent `(offset, len)` runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regions {
    free: Vec<(u32, u32)>,
}

impl Regions {
    pub fn new(size: u32) -> Self {
        let free = if size > 0 { vec![(0, size)] } else { vec![] };
        Regions { free }
    }

    /// Offset of the first free run that holds `len` slots.
    pub fn find(&self, len: u32) -> Option<u32> {
        self.free.iter().find(|r| r.1 >= len).map(|r| r.0)
    }

    /// The longest free run (for error messages).
    pub fn largest_free(&self) -> u32 {
        self.free.iter().map(|r| r.1).max().unwrap_or(0)
    }

    /// Total free slots.
    pub fn total_free(&self) -> u64 {
        self.free.iter().map(|r| u64::from(r.1)).sum()
    }

    /// First-fit allocation of `len` slots.
    pub fn take(&mut self, len: u32) -> Option<u32> {
        let i = self.free.iter().position(|r| r.1 >= len)?;
        let (offset, run) = self.free[i];
        if run == len {
            self.free.remove(i);
        } else {
            self.free[i] = (offset + len, run - len);
        }
        Some(offset)
    }

    /// Returns `len` slots at `offset`, merging with the free runs on either side.
    pub fn free(&mut self, offset: u32, len: u32) {
        let i = self.free.partition_point(|r| r.0 < offset);
        self.free.insert(i, (offset, len));
        if i + 1 < self.free.len() && offset + len == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == offset {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_reuse_hands_back_the_smallest_free_id() {
        let mut p = IdPool::new(3, Reuse::Lowest);
        assert_eq!([p.take(), p.take(), p.take()], [Some(0), Some(1), Some(2)]);
        assert_eq!(p.peek(), None);
        assert_eq!(p.take(), None);
        p.free(2);
        p.free(0);
        assert_eq!(p.peek(), Some(0));
        assert_eq!([p.take(), p.take(), p.take()], [Some(0), Some(2), None]);
    }

    #[test]
    fn oldest_reuse_prefers_fresh_then_first_freed() {
        let mut p = IdPool::new(4, Reuse::Oldest);
        assert_eq!([p.take(), p.take()], [Some(0), Some(1)]);
        p.free(1);
        p.free(0);
        assert_eq!([p.take(), p.take()], [Some(2), Some(3)]);
        assert_eq!(p.peek(), Some(1));
        assert_eq!([p.take(), p.take(), p.take()], [Some(1), Some(0), None]);
    }

    #[test]
    fn regions_first_fit_and_merge() {
        let mut r = Regions::new(100);
        assert_eq!(r.take(30), Some(0));
        assert_eq!(r.take(30), Some(30));
        assert_eq!(r.take(30), Some(60));
        assert_eq!(r.find(11), None);
        assert_eq!(r.largest_free(), 10);
        r.free(30, 30);
        assert_eq!(r.find(20), Some(30));
        assert_eq!(r.take(20), Some(30));
        // Free runs: [50,60) and [90,100); returning [60,90) merges all three.
        r.free(60, 30);
        assert_eq!(r.largest_free(), 50);
        assert_eq!(r.total_free(), 50);
        r.free(0, 30);
        r.free(30, 20);
        assert_eq!(r.largest_free(), 100);
        assert_eq!(r.take(100), Some(0));
        assert_eq!(r.find(1), None);
    }
}
