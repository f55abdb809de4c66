//! One shard of the replay: a FIFO ring of items with a sum tree over their
//! priorities. Items get increasing sequence numbers and live in ring slot
//! `seq % capacity`, which is also their sum-tree leaf, so a priority update
//! for an item evicted in between is recognised and skipped. The store
//! spreads inserts over shards, each behind its own lock.

use crate::frame::Frame;
use crate::sum_tree::SumTree;

/// A stored transition: `frames` holds the observation's channels, then the
/// next observation's, oldest first.
#[derive(Debug, Clone)]
pub struct Item {
    pub frames: Box<[Frame]>,
    pub action: u32,
    pub reward: f32,
    pub discount: f32,
}

impl PartialEq for Item {
    /// Same frame contents, not the same allocations (a restored item
    /// equals the one checkpointed).
    fn eq(&self, other: &Self) -> bool {
        self.action == other.action
            && self.reward == other.reward
            && self.discount == other.discount
            && self.frames.len() == other.frames.len()
            && self
                .frames
                .iter()
                .zip(other.frames.iter())
                .all(|(a, b)| a.bytes() == b.bytes())
    }
}

/// Bytes one held item costs beyond its frames: its slot, its frame handles
/// (with an allocator header) and its sum-tree leaf with its share of the
/// inner nodes.
pub fn item_overhead(frames_per_item: usize) -> usize {
    std::mem::size_of::<Option<Item>>() + frames_per_item * std::mem::size_of::<Frame>() + 16 + 9
}

pub struct Shard {
    capacity: usize,
    slots: Vec<Option<Item>>,
    tree: SumTree,
    /// Sequence numbers held: first..next.
    first: u64,
    next: u64,
}

/// A shard's contents, oldest first, with each item's sampling weight.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardContents {
    pub first: u64,
    pub next: u64,
    pub items: Vec<(Item, f64)>,
}

impl Shard {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a shard needs room for one item");
        Shard {
            capacity,
            slots: vec![None; capacity],
            tree: SumTree::new(capacity),
            first: 0,
            next: 0,
        }
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.capacity as u64) as usize
    }

    pub fn holds(&self, seq: u64) -> bool {
        (self.first..self.next).contains(&seq)
    }

    pub fn len(&self) -> usize {
        (self.next - self.first) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sum of the sampling weights held.
    pub fn total(&self) -> f64 {
        self.tree.total()
    }

    /// Appends items with their sampling weights (priority^alpha), evicting
    /// the oldest beyond capacity; returns how many were evicted.
    pub fn insert(&mut self, items: impl IntoIterator<Item = (Item, f64)>) -> usize {
        let mut evicted = 0;
        let mut leaves = Vec::new();
        for (item, weight) in items {
            if self.len() == self.capacity {
                let oldest = self.slot(self.first);
                leaves.push((oldest, 0.0));
                self.slots[oldest] = None;
                self.first += 1;
                evicted += 1;
            }
            let slot = self.slot(self.next);
            self.next += 1;
            self.slots[slot] = Some(item);
            leaves.push((slot, weight));
        }
        self.tree.set_many(leaves);
        evicted
    }

    /// The item at cumulative weight `mass` (clamped to the total), with its
    /// sequence number and weight; `None` when the shard is empty.
    pub fn find(&self, mass: f64) -> Option<(u64, &Item, f64)> {
        if self.is_empty() || self.total() <= 0.0 {
            return None;
        }
        let slot = self.tree.find(mass.min(self.total()));
        let first_slot = self.slot(self.first);
        // The sequence number living in this slot: its ring offset from the oldest.
        let offset = (slot + self.capacity - first_slot) % self.capacity;
        let item = self.slots[slot]
            .as_ref()
            .expect("a leaf with mass holds an item");
        Some((self.first + offset as u64, item, self.tree.get(slot)))
    }

    /// Sets sampling weights by sequence number, skipping evicted ones;
    /// returns how many were set.
    pub fn set_weights(&mut self, updates: impl IntoIterator<Item = (u64, f64)>) -> usize {
        let mut leaves = Vec::new();
        for (seq, weight) in updates {
            if self.holds(seq) {
                leaves.push((self.slot(seq), weight));
            }
        }
        let n = leaves.len();
        self.tree.set_many(leaves);
        n
    }

    pub fn get(&self, seq: u64) -> Option<(&Item, f64)> {
        self.holds(seq).then(|| {
            let slot = self.slot(seq);
            (
                self.slots[slot].as_ref().expect("a held slot has an item"),
                self.tree.get(slot),
            )
        })
    }

    /// A copy of the contents: handles to the frames, not the frames.
    pub fn contents(&self) -> ShardContents {
        ShardContents {
            first: self.first,
            next: self.next,
            items: self.copy(self.first, self.len()),
        }
    }

    /// Sequence numbers held: first..next.
    pub fn span(&self) -> (u64, u64) {
        (self.first, self.next)
    }

    /// Up to `max` items (with weights) from sequence number `from` on.
    pub fn copy(&self, from: u64, max: usize) -> Vec<(Item, f64)> {
        (from.max(self.first)..self.next)
            .take(max)
            .map(|seq| {
                let (item, w) = self.get(seq).expect("held");
                (item.clone(), w)
            })
            .collect()
    }

    /// A shard holding `contents` (the newest `capacity` items if more).
    pub fn restore(capacity: usize, contents: ShardContents) -> Self {
        let mut shard = Shard::new(capacity);
        let skip = contents.items.len().saturating_sub(capacity);
        let start = contents.next - (contents.items.len() - skip) as u64;
        shard.first = start;
        shard.next = start;
        shard.insert(contents.items.into_iter().skip(skip));
        shard
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::frame::{new_frame, Ledger};

    fn item(tag: u8) -> Item {
        let ledger = Arc::new(Ledger::default());
        Item {
            frames: vec![new_frame(&[tag], &ledger), new_frame(&[tag + 1], &ledger)].into(),
            action: tag as u32,
            reward: tag as f32,
            discount: 0.99,
        }
    }

    #[test]
    fn fifo_eviction_keeps_the_newest() {
        let mut s = Shard::new(3);
        assert_eq!(s.insert((0..5).map(|t| (item(t), 1.0))), 2);
        assert_eq!(s.len(), 3);
        assert!(s.get(1).is_none());
        let tags: Vec<u32> = (2..5).map(|seq| s.get(seq).unwrap().0.action).collect();
        assert_eq!(tags, vec![2, 3, 4]);
        assert_eq!(s.total(), 3.0);
        for mass in [0.0, 1.5, 2.9, 99.0] {
            let (seq, it, _) = s.find(mass).unwrap();
            assert_eq!(
                seq, it.action as u64,
                "sequence numbers follow insertion order"
            );
        }
    }

    #[test]
    fn weight_updates_skip_evicted_items() {
        let mut s = Shard::new(2);
        s.insert((0..4).map(|t| (item(t), 1.0)));
        assert_eq!(s.set_weights([(0, 5.0), (2, 0.5), (3, 7.0), (9, 1.0)]), 2);
        assert_eq!(s.get(2).unwrap().1, 0.5);
        assert_eq!(s.total(), 7.5);
    }

    #[test]
    fn contents_restore_into_an_equal_shard() {
        let mut s = Shard::new(4);
        s.insert((0..6).map(|t| (item(t), t as f64 + 0.5)));
        let c = s.contents();
        let r = Shard::restore(4, c.clone());
        assert_eq!(r.contents(), c);
        assert_eq!(r.total(), s.total());
        let smaller = Shard::restore(2, c);
        assert_eq!(smaller.len(), 2);
        assert_eq!(smaller.get(5).unwrap().0.action, 5);
    }
}
