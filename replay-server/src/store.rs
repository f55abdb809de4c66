//! A bounded FIFO of transitions with proportional prioritized sampling
//! (alpha = 0 is uniform). Items get increasing ids and live in the ring slot
//! `id % capacity`, which is also their sum-tree leaf, so a priority update
//! for an item evicted in between is recognised and skipped.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sum_tree::SumTree;

/// Largest batch served (draws are with replacement, so it may exceed the size held).
pub const MAX_BATCH: usize = 65_536;

/// Priorities are kept at least this large so every item stays sampleable.
const MIN_PRIORITY: f32 = 1e-6;

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub obs: Bytes,
    pub action: u32,
    pub reward: f32,
    pub discount: f32,
    pub next_obs: Bytes,
    /// The priority the item entered with; later updates live in the sum tree.
    pub priority: f32,
}

/// A sampled batch: ids with their items (cheap clones of shared bytes) and
/// importance-sampling weights normalized by the batch's largest.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ids: Vec<u64>,
    pub items: Vec<Item>,
    pub weights: Vec<f32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("observation shape {got:?} differs from the {expected:?} this replay holds: start a new replay server for another environment")]
    ShapeMismatch {
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error(
        "transition {index}: {field} holds {got} bytes but the shape {shape:?} needs {expected}"
    )]
    WrongLength {
        index: usize,
        field: &'static str,
        got: usize,
        expected: usize,
        shape: Vec<usize>,
    },
    #[error("observation shape {0:?} is empty: give every dimension")]
    EmptyShape(Vec<usize>),
    #[error(
        "the replay holds {size} transitions and sampling starts at {needed}: wait for the actors"
    )]
    NotEnough { size: usize, needed: usize },
    #[error("batch size must be between 1 and {max}, got {got}")]
    BadBatchSize { got: usize, max: usize },
}

pub struct Store {
    capacity: usize,
    min_size: usize,
    alpha: f64,
    obs_shape: Option<Vec<usize>>,
    slots: Vec<Option<Item>>,
    tree: SumTree,
    /// Ids held: first_id..next_id.
    first_id: u64,
    next_id: u64,
    /// New items without a priority of their own get the largest seen.
    max_priority: f32,
    inserted_total: u64,
    sampled_total: u64,
    rng: ChaCha8Rng,
}

impl Store {
    /// Sampling is refused until `min_size` transitions are held; items are
    /// drawn with probability proportional to priority^alpha.
    pub fn new(capacity: usize, min_size: usize, alpha: f64, seed: u64) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        assert!(alpha >= 0.0, "alpha must be non-negative");
        Store {
            capacity,
            min_size: min_size.max(1),
            alpha,
            obs_shape: None,
            slots: vec![None; capacity],
            tree: SumTree::new(capacity),
            first_id: 0,
            next_id: 0,
            max_priority: 1.0,
            inserted_total: 0,
            sampled_total: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn slot(&self, id: u64) -> usize {
        (id % self.capacity as u64) as usize
    }

    fn holds(&self, id: u64) -> bool {
        (self.first_id..self.next_id).contains(&id)
    }

    fn set_priority(&mut self, id: u64, priority: f32) {
        let p = priority.max(MIN_PRIORITY);
        self.max_priority = self.max_priority.max(p);
        // Only the tree holds current priorities: touching the item too
        // would cost a cache miss per update.
        let slot = self.slot(id);
        self.tree.set(slot, self.weight_of(p));
    }

    /// priority^alpha, in f32: half the cost of f64 `powf`, and priorities
    /// carry no more precision than that.
    fn weight_of(&self, priority: f32) -> f64 {
        priority.powf(self.alpha as f32) as f64
    }

    /// The sampling weight (priority^alpha) of `id`, if still held.
    pub fn weight(&self, id: u64) -> Option<f64> {
        self.holds(id).then(|| self.tree.get(self.slot(id)))
    }

    pub fn len(&self) -> usize {
        (self.next_id - self.first_id) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn inserted_total(&self) -> u64 {
        self.inserted_total
    }

    pub fn sampled_total(&self) -> u64 {
        self.sampled_total
    }

    pub fn obs_shape(&self) -> Option<&[usize]> {
        self.obs_shape.as_deref()
    }

    /// Checks a batch without storing it: all or nothing.
    pub fn validate(&self, shape: &[usize], items: &[Item]) -> Result<(), StoreError> {
        if shape.is_empty() || shape.contains(&0) {
            return Err(StoreError::EmptyShape(shape.to_vec()));
        }
        if let Some(expected) = &self.obs_shape {
            if expected != shape {
                return Err(StoreError::ShapeMismatch {
                    expected: expected.clone(),
                    got: shape.to_vec(),
                });
            }
        }
        let expected: usize = shape.iter().product();
        for (index, item) in items.iter().enumerate() {
            for (field, got) in [("obs", item.obs.len()), ("next_obs", item.next_obs.len())] {
                if got != expected {
                    return Err(StoreError::WrongLength {
                        index,
                        field,
                        got,
                        expected,
                        shape: shape.to_vec(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Appends a batch, evicting the oldest items beyond capacity. An item
    /// whose priority is not positive gets the largest priority seen.
    pub fn insert(&mut self, shape: &[usize], items: Vec<Item>) -> Result<usize, StoreError> {
        self.validate(shape, &items)?;
        self.obs_shape.get_or_insert_with(|| shape.to_vec());
        let n = items.len();
        for mut item in items {
            if self.len() == self.capacity {
                let oldest = self.slot(self.first_id);
                self.tree.set(oldest, 0.0);
                self.slots[oldest] = None;
                self.first_id += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            let priority = if item.priority > 0.0 {
                item.priority
            } else {
                self.max_priority
            };
            item.priority = priority;
            let slot = self.slot(id);
            self.slots[slot] = Some(item);
            self.set_priority(id, priority);
        }
        self.inserted_total += n as u64;
        Ok(n)
    }

    /// Draws `n` items with probability priority^alpha / total, one from
    /// each of `n` equal slices of the total mass; importance weights use
    /// exponent `beta` and are divided by the batch's largest.
    pub fn sample(&mut self, n: usize, beta: f64) -> Result<Sample, StoreError> {
        if self.len() < self.min_size {
            return Err(StoreError::NotEnough {
                size: self.len(),
                needed: self.min_size,
            });
        }
        if n == 0 || n > MAX_BATCH {
            return Err(StoreError::BadBatchSize {
                got: n,
                max: MAX_BATCH,
            });
        }
        let total = self.tree.total();
        let slice = total / n as f64;
        let held = self.len() as f64;
        let mut sample = Sample {
            ids: Vec::with_capacity(n),
            items: Vec::with_capacity(n),
            weights: Vec::with_capacity(n),
        };
        let first_slot = self.slot(self.first_id);
        for j in 0..n {
            let mass = (j as f64 + self.rng.gen::<f64>()) * slice;
            let slot = self.tree.find(mass.min(total));
            // The id living in this slot: the one at this ring offset from the oldest.
            let offset = (slot + self.capacity - first_slot) % self.capacity;
            sample.ids.push(self.first_id + offset as u64);
            sample.items.push(
                self.slots[slot]
                    .clone()
                    .expect("a leaf with mass holds an item"),
            );
            let probability = self.tree.get(slot) / total;
            sample.weights.push((held * probability).powf(-beta) as f32);
        }
        let largest = sample.weights.iter().copied().fold(0.0f32, f32::max);
        for w in &mut sample.weights {
            *w /= largest;
        }
        self.sampled_total += n as u64;
        Ok(sample)
    }

    /// Sets priorities by id; returns (updated, missing) counts.
    pub fn update_priorities(&mut self, ids: &[u64], priorities: &[f32]) -> (usize, usize) {
        let mut updated = 0;
        let mut leaves = Vec::with_capacity(ids.len());
        for (&id, &p) in ids.iter().zip(priorities) {
            if self.holds(id) {
                let p = p.max(MIN_PRIORITY);
                self.max_priority = self.max_priority.max(p);
                leaves.push((self.slot(id), self.weight_of(p)));
                updated += 1;
            }
        }
        self.tree.set_many(leaves);
        (updated, ids.len() - updated)
    }

    /// The item with `id`, if still held.
    pub fn get(&self, id: u64) -> Option<&Item> {
        self.holds(id)
            .then(|| self.slots[self.slot(id)].as_ref())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(tag: u8) -> Item {
        Item {
            obs: Bytes::from(vec![tag; 6]),
            action: tag as u32,
            reward: tag as f32,
            discount: 0.99,
            next_obs: Bytes::from(vec![tag + 1; 6]),
            priority: 1.0,
        }
    }

    fn with_priority(tag: u8, priority: f32) -> Item {
        Item {
            priority,
            ..item(tag)
        }
    }

    #[test]
    fn fifo_eviction_keeps_the_newest() {
        let mut s = Store::new(3, 1, 0.6, 0);
        s.insert(&[6], (0..5).map(item).collect()).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.inserted_total(), 5);
        assert!(s.get(1).is_none());
        let tags: Vec<u32> = (2..5).map(|id| s.get(id).unwrap().action).collect();
        assert_eq!(tags, vec![2, 3, 4]);
        assert!(matches!(
            s.sample(MAX_BATCH + 1, 0.4),
            Err(StoreError::BadBatchSize { .. })
        ));
        let sample = s.sample(3, 0.4).unwrap();
        for (id, it) in sample.ids.iter().zip(&sample.items) {
            assert_eq!(*id, it.action as u64, "ids follow insertion order");
        }
    }

    /// Draws `draws` items from priorities `p` and checks each item's count
    /// against p_i^alpha / sum p^alpha within 5 standard deviations of a
    /// binomial count (a false alarm about once in 1.7 million per item).
    fn check_frequencies(priorities: &[f32], alpha: f64, draws: usize) {
        let mut s = Store::new(priorities.len(), 1, alpha, 7);
        let items = priorities
            .iter()
            .enumerate()
            .map(|(i, &p)| with_priority(i as u8, p))
            .collect();
        s.insert(&[6], items).unwrap();
        let mut counts = vec![0usize; priorities.len()];
        for _ in 0..draws / 500 {
            for it in s.sample(500, 0.4).unwrap().items {
                counts[it.action as usize] += 1;
            }
        }
        let total: f64 = priorities.iter().map(|&p| (p as f64).powf(alpha)).sum();
        for (i, &p) in priorities.iter().enumerate() {
            let f = (p as f64).powf(alpha) / total;
            let expected = draws as f64 * f;
            let sd = (draws as f64 * f * (1.0 - f)).sqrt();
            let got = counts[i] as f64;
            assert!(
                (got - expected).abs() <= 5.0 * sd,
                "item {i}: {got} draws, expected {expected:.0} +- {:.0}",
                5.0 * sd
            );
        }
    }

    #[test]
    fn sampling_frequencies_follow_priority_to_the_alpha() {
        let priorities: Vec<f32> = (1..=20).map(|i| (i * i) as f32 / 10.0).collect();
        check_frequencies(&priorities, 0.6, 200_000);
        check_frequencies(&priorities, 1.0, 200_000);
    }

    #[test]
    fn alpha_zero_is_uniform() {
        check_frequencies(&[0.01, 5.0, 100.0, 1.0, 3.0, 7.0, 0.5, 2.0], 0.0, 100_000);
    }

    #[test]
    fn importance_weights_follow_the_formula_and_are_max_normalized() {
        let priorities = [1.0f32, 2.0, 4.0, 8.0];
        let (alpha, beta) = (0.6, 0.4);
        let mut s = Store::new(4, 1, alpha, 3);
        s.insert(
            &[6],
            priorities
                .iter()
                .enumerate()
                .map(|(i, &p)| with_priority(i as u8, p))
                .collect(),
        )
        .unwrap();
        let total: f64 = priorities.iter().map(|&p| (p as f64).powf(alpha)).sum();
        let raw = |i: usize| (4.0 * (priorities[i] as f64).powf(alpha) / total).powf(-beta);
        let sample = s.sample(64, beta).unwrap();
        let largest = sample
            .items
            .iter()
            .map(|it| raw(it.action as usize))
            .fold(0.0, f64::max);
        for (it, &w) in sample.items.iter().zip(&sample.weights) {
            let want = raw(it.action as usize) / largest;
            assert!(
                (w as f64 - want).abs() < 1e-5,
                "item {}: {w} vs {want}",
                it.action
            );
        }
        assert!(sample.weights.contains(&1.0));
        // beta 0: no correction.
        assert!(s.sample(16, 0.0).unwrap().weights.iter().all(|&w| w == 1.0));
    }

    #[test]
    fn new_items_without_priority_get_the_largest_seen() {
        let mut s = Store::new(10, 1, 1.0, 0);
        s.insert(&[6], vec![with_priority(0, 3.0), with_priority(1, 0.0)])
            .unwrap();
        assert_eq!(s.get(1).unwrap().priority, 3.0);
        s.update_priorities(&[0], &[9.0]);
        s.insert(&[6], vec![with_priority(2, 0.0)]).unwrap();
        assert_eq!(s.get(2).unwrap().priority, 9.0);
        assert_eq!(s.weight(2), Some(9.0));
    }

    #[test]
    fn bad_batches_are_refused_whole() {
        let mut s = Store::new(10, 1, 0.6, 0);
        s.insert(&[2, 3], vec![item(1)]).unwrap();
        let err = s.insert(&[3, 2], vec![item(2)]).unwrap_err();
        assert!(matches!(err, StoreError::ShapeMismatch { .. }));
        let mut short = item(3);
        short.next_obs = Bytes::from_static(&[1, 2]);
        let err = s.insert(&[2, 3], vec![item(4), short]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "transition 1: next_obs holds 2 bytes but the shape [2, 3] needs 6"
        );
        assert_eq!(s.len(), 1, "nothing of a refused batch is stored");
        assert!(matches!(
            s.insert(&[], vec![]),
            Err(StoreError::EmptyShape(_))
        ));
    }

    #[test]
    fn sampling_waits_for_the_minimum_size() {
        let mut s = Store::new(10, 4, 0.6, 0);
        s.insert(&[6], (0..3).map(item).collect()).unwrap();
        assert_eq!(
            s.sample(1, 0.4).unwrap_err(),
            StoreError::NotEnough { size: 3, needed: 4 }
        );
        s.insert(&[6], vec![item(3)]).unwrap();
        assert!(s.sample(1, 0.4).is_ok());
    }

    #[test]
    fn priority_updates_skip_evicted_ids_and_change_sampling() {
        let mut s = Store::new(2, 1, 1.0, 0);
        s.insert(&[6], (0..4).map(item).collect()).unwrap(); // ids 2 and 3 remain
        assert_eq!(
            s.update_priorities(&[0, 2, 3, 9], &[5.0, 1e-3, 7.0, 8.0]),
            (2, 2)
        );
        assert!(
            (s.weight(2).unwrap() - 1e-3).abs() < 1e-9,
            "alpha 1: the weight is the priority"
        );
        let drawn = s.sample(200, 0.4).unwrap();
        let low = drawn.ids.iter().filter(|&&id| id == 2).count();
        assert!(
            low < 5,
            "an item with 1/7000 of the mass was drawn {low} times of 200"
        );
    }
}
