//! A bounded FIFO of transitions with uniform sampling. Items get
//! increasing ids, so a priority update for an item evicted in between is
//! recognised and skipped.

use std::collections::VecDeque;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub obs: Bytes,
    pub action: u32,
    pub reward: f32,
    pub discount: f32,
    pub next_obs: Bytes,
    pub priority: f32,
}

/// A sampled batch: ids with their items (cheap clones of shared bytes).
#[derive(Debug, Clone)]
pub struct Sample {
    pub ids: Vec<u64>,
    pub items: Vec<Item>,
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
    obs_shape: Option<Vec<usize>>,
    items: VecDeque<Item>,
    /// Id of `items[0]`.
    first_id: u64,
    inserted_total: u64,
    sampled_total: u64,
    rng: ChaCha8Rng,
}

impl Store {
    /// Sampling is refused until `min_size` transitions are held.
    pub fn new(capacity: usize, min_size: usize, seed: u64) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        Store {
            capacity,
            min_size: min_size.max(1),
            obs_shape: None,
            items: VecDeque::new(),
            first_id: 0,
            inserted_total: 0,
            sampled_total: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
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

    /// Appends a batch, evicting the oldest items beyond capacity.
    pub fn insert(&mut self, shape: &[usize], items: Vec<Item>) -> Result<usize, StoreError> {
        self.validate(shape, &items)?;
        self.obs_shape.get_or_insert_with(|| shape.to_vec());
        let n = items.len();
        for item in items {
            if self.items.len() == self.capacity {
                self.items.pop_front();
                self.first_id += 1;
            }
            self.items.push_back(item);
        }
        self.inserted_total += n as u64;
        Ok(n)
    }

    /// Draws `n` items uniformly, with replacement.
    pub fn sample(&mut self, n: usize) -> Result<Sample, StoreError> {
        if self.items.len() < self.min_size {
            return Err(StoreError::NotEnough {
                size: self.items.len(),
                needed: self.min_size,
            });
        }
        let max = self.capacity;
        if n == 0 || n > max {
            return Err(StoreError::BadBatchSize { got: n, max });
        }
        let len = self.items.len();
        let mut sample = Sample {
            ids: Vec::with_capacity(n),
            items: Vec::with_capacity(n),
        };
        for _ in 0..n {
            let i = self.rng.gen_range(0..len);
            sample.ids.push(self.first_id + i as u64);
            sample.items.push(self.items[i].clone());
        }
        self.sampled_total += n as u64;
        Ok(sample)
    }

    /// Sets priorities by id; returns (updated, missing) counts.
    pub fn update_priorities(&mut self, ids: &[u64], priorities: &[f32]) -> (usize, usize) {
        let mut updated = 0;
        for (&id, &p) in ids.iter().zip(priorities) {
            if let Some(item) = id
                .checked_sub(self.first_id)
                .and_then(|i| self.items.get_mut(i as usize))
            {
                item.priority = p;
                updated += 1;
            }
        }
        (updated, ids.len() - updated)
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

    #[test]
    fn fifo_eviction_keeps_the_newest() {
        let mut s = Store::new(3, 1, 0);
        s.insert(&[1, 2, 3], (0..5).map(item).collect()).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.inserted_total(), 5);
        let tags: Vec<u32> = s.items.iter().map(|i| i.action).collect();
        assert_eq!(tags, vec![2, 3, 4]);
        let sample = s.sample(50).unwrap_err();
        assert!(matches!(sample, StoreError::BadBatchSize { .. }));
        let sample = s.sample(3).unwrap();
        for (id, it) in sample.ids.iter().zip(&sample.items) {
            assert_eq!(*id, it.action as u64, "ids follow insertion order");
        }
    }

    #[test]
    fn uniform_sampling_covers_everything_evenly() {
        let mut s = Store::new(10, 1, 1);
        s.insert(&[6], (0..10).map(item).collect()).unwrap();
        let mut counts = [0usize; 10];
        for _ in 0..2000 {
            for it in s.sample(10).unwrap().items {
                counts[it.action as usize] += 1;
            }
        }
        // 2000 draws per item expected; 5 standard deviations is about 212.
        assert!(
            counts.iter().all(|&c| (1788..=2212).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(s.sampled_total(), 20_000);
    }

    #[test]
    fn bad_batches_are_refused_whole() {
        let mut s = Store::new(10, 1, 0);
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
        let mut s = Store::new(10, 4, 0);
        s.insert(&[6], (0..3).map(item).collect()).unwrap();
        assert_eq!(
            s.sample(1).unwrap_err(),
            StoreError::NotEnough { size: 3, needed: 4 }
        );
        s.insert(&[6], vec![item(3)]).unwrap();
        assert!(s.sample(1).is_ok());
    }

    #[test]
    fn priority_updates_skip_evicted_ids() {
        let mut s = Store::new(2, 1, 0);
        s.insert(&[6], (0..4).map(item).collect()).unwrap(); // ids 2 and 3 remain
        assert_eq!(
            s.update_priorities(&[0, 2, 3, 9], &[5.0, 6.0, 7.0, 8.0]),
            (2, 2)
        );
        assert_eq!(s.items[0].priority, 6.0);
        assert_eq!(s.items[1].priority, 7.0);
    }
}
