//! A sum tree over item priorities: set one priority and find the item at a
//! cumulative priority, both in O(log n). Proportional prioritized replay
//! (Schaul et al. 2016) samples with it.

/// A node's children: 16 f64 sums fill two cache lines, so a 2M-item tree
/// is 6 levels deep instead of 21 and a walk touches few lines.
const FANOUT: usize = 16;

/// Leaves hold priorities (already raised to alpha); each inner node holds
/// the sum of its children. Sums are f64 so two million small priorities
/// add up without losing the small ones.
#[derive(Debug, Clone)]
pub struct SumTree {
    /// `levels[0]` are the leaves; the last level is the root alone.
    levels: Vec<Vec<f64>>,
    capacity: usize,
    /// Reused by `set_many`.
    scratch: Vec<usize>,
}

impl SumTree {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a sum tree needs at least one leaf");
        let mut levels = vec![vec![0.0; capacity]];
        while levels.last().expect("a level").len() > 1 {
            let below = levels.last().expect("a level").len();
            levels.push(vec![0.0; below.div_ceil(FANOUT)]);
        }
        SumTree {
            levels,
            capacity,
            scratch: Vec::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn total(&self) -> f64 {
        self.levels.last().expect("a root")[0]
    }

    pub fn get(&self, index: usize) -> f64 {
        self.levels[0][index]
    }

    /// Sets leaf `index` to `value` (>= 0) and recomputes its ancestors.
    pub fn set(&mut self, index: usize, value: f64) {
        self.set_many([(index, value)]);
    }

    /// Sets many leaves, then recomputes each touched ancestor once, level
    /// by level, from its children (no running deltas, so rounding never
    /// accumulates): the updates of a batch overlap their cache misses
    /// instead of walking to the root one after another.
    pub fn set_many(&mut self, updates: impl IntoIterator<Item = (usize, f64)>) {
        let mut nodes = std::mem::take(&mut self.scratch);
        nodes.clear();
        for (index, value) in updates {
            assert!(
                index < self.capacity,
                "leaf {index} beyond capacity {}",
                self.capacity
            );
            debug_assert!(value >= 0.0 && value.is_finite());
            self.levels[0][index] = value;
            nodes.push(index);
        }
        // Sorted once: parents of sorted nodes come out sorted, so each
        // level needs only a dedup.
        nodes.sort_unstable();
        for k in 1..self.levels.len() {
            for n in nodes.iter_mut() {
                *n /= FANOUT;
            }
            nodes.dedup();
            let (below, above) = self.levels.split_at_mut(k);
            let children = &below[k - 1];
            for &node in &nodes {
                let end = ((node + 1) * FANOUT).min(children.len());
                above[0][node] = sum(&children[node * FANOUT..end]);
            }
        }
        self.scratch = nodes;
    }

    /// The leaf whose cumulative range holds `mass` (0 <= mass < total):
    /// leaf i is found for mass in [sum of leaves before i, that + leaf i).
    /// Leaves of zero are never returned while the total is positive.
    pub fn find(&self, mut mass: f64) -> usize {
        let mut node = 0;
        for k in (0..self.levels.len() - 1).rev() {
            let level = &self.levels[k];
            let start = node * FANOUT;
            let end = (start + FANOUT).min(level.len());
            let mut chosen = None;
            for (j, &c) in level[start..end].iter().enumerate() {
                if c > 0.0 {
                    // Rounding can leave mass past the last child: keep the last non-empty one.
                    chosen = Some(start + j);
                    if mass < c {
                        break;
                    }
                    mass -= c;
                }
            }
            node = chosen.unwrap_or(start);
        }
        node
    }
}

/// Sums up to FANOUT values in four independent chains: a quarter of the
/// dependent additions of a plain loop, in a fixed order, so a node is always
/// the same function of its children and no rounding accumulates.
#[inline]
fn sum(values: &[f64]) -> f64 {
    let mut lanes = [0.0f64; 4];
    for chunk in values.chunks(4) {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_finds() {
        let mut t = SumTree::new(5);
        for (i, v) in [1.0, 0.0, 2.0, 3.0, 4.0].into_iter().enumerate() {
            t.set(i, v);
        }
        assert_eq!(t.total(), 10.0);
        assert_eq!(t.find(0.0), 0);
        assert_eq!(t.find(0.999), 0);
        assert_eq!(t.find(1.0), 2, "an empty leaf is never found");
        assert_eq!(t.find(2.999), 2);
        assert_eq!(t.find(3.0), 3);
        assert_eq!(t.find(9.999), 4);
        t.set(4, 0.5);
        assert_eq!(t.total(), 6.5);
        assert_eq!(t.get(4), 0.5);
    }

    #[test]
    fn batched_updates_agree_with_a_linear_scan() {
        let mut t = SumTree::new(1000);
        let mut leaves = vec![0.0f64; 1000];
        for round in 0..3 {
            let updates: Vec<(usize, f64)> = (0..300)
                .map(|i| ((i * 37 + round * 11) % 1000, ((i + round) % 7) as f64 + 0.5))
                .collect();
            for &(i, v) in &updates {
                leaves[i] = v;
            }
            t.set_many(updates);
            let total: f64 = leaves.iter().sum();
            assert!((t.total() - total).abs() < 1e-9);
            for k in 0..50 {
                let mass = total * k as f64 / 50.0;
                let mut acc = 0.0;
                let want = leaves.iter().position(|&v| {
                    acc += v;
                    mass < acc
                });
                assert_eq!(Some(t.find(mass)), want, "mass {mass}");
            }
        }
    }

    #[test]
    fn mass_past_the_end_lands_on_the_last_non_empty_leaf() {
        let mut t = SumTree::new(8);
        t.set(2, 1.0);
        assert_eq!(t.find(1.0), 2);
        assert_eq!(t.find(5.0), 2);
    }
}
