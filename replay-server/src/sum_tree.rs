//! A sum tree over item priorities: set one priority and find the item at a
//! cumulative priority, both in O(log n). Proportional prioritized replay
//! (Schaul et al. 2016) samples with it.

/// Leaves hold priorities (already raised to alpha); each inner node holds
/// the sum of its children. Sums are f64 so two million small priorities
/// add up without losing the small ones.
#[derive(Debug, Clone)]
pub struct SumTree {
    /// Leaves start at `leaves`; node i has children 2i and 2i+1; node 1 is the root.
    nodes: Vec<f64>,
    leaves: usize,
    capacity: usize,
}

impl SumTree {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "a sum tree needs at least one leaf");
        let leaves = capacity.next_power_of_two();
        SumTree {
            nodes: vec![0.0; 2 * leaves],
            leaves,
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn total(&self) -> f64 {
        self.nodes[1]
    }

    pub fn get(&self, index: usize) -> f64 {
        self.nodes[self.leaves + index]
    }

    /// Sets leaf `index` to `value` (>= 0) and updates its ancestors.
    pub fn set(&mut self, index: usize, value: f64) {
        assert!(
            index < self.capacity,
            "leaf {index} beyond capacity {}",
            self.capacity
        );
        debug_assert!(value >= 0.0 && value.is_finite());
        let mut node = self.leaves + index;
        self.nodes[node] = value;
        while node > 1 {
            node /= 2;
            self.nodes[node] = self.nodes[2 * node] + self.nodes[2 * node + 1];
        }
    }

    /// The leaf whose cumulative range holds `mass` (0 <= mass < total):
    /// leaf i is found for mass in [sum of leaves before i, that + leaf i).
    pub fn find(&self, mut mass: f64) -> usize {
        let mut node = 1;
        while node < self.leaves {
            let left = self.nodes[2 * node];
            if mass < left {
                node *= 2;
            } else {
                mass -= left;
                node = 2 * node + 1;
            }
        }
        // Rounding can walk past the last non-empty leaf; step back to one.
        let mut index = node - self.leaves;
        while index > 0 && self.nodes[self.leaves + index] == 0.0 {
            index -= 1;
        }
        index
    }
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
    fn mass_past_the_end_lands_on_the_last_non_empty_leaf() {
        let mut t = SumTree::new(8);
        t.set(2, 1.0);
        assert_eq!(t.find(1.0), 2);
        assert_eq!(t.find(5.0), 2);
    }
}
