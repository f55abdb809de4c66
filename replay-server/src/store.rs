//! The replay's contents: shards, each a FIFO ring with its own sum tree
//! behind its own lock. Inserts go to the next shard in turn (skipping busy
//! ones), so many actor streams insert at once; a sample draws from one
//! stratified pass over all shards' masses and holds each shard's lock only
//! for its own draws. Item ids carry their shard in the top 16 bits.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use apex_proto::v1::Codec;
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::frame::Ledger;
use crate::shard::{item_overhead, Item, Shard, ShardContents};

/// Largest batch served (draws are with replacement, so it may exceed the size held).
pub const MAX_BATCH: usize = 65_536;

/// Priorities are kept at least this large so every item stays sampleable.
const MIN_PRIORITY: f32 = 1e-6;

const SEQ_BITS: u32 = 48;

#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Transitions held in all; each shard holds an equal share.
    pub capacity: usize,
    pub shards: usize,
    /// Priority exponent: items are drawn with probability p^alpha / sum p^alpha; 0 is uniform.
    pub alpha: f64,
    pub seed: u64,
}

/// What every transition of one replay shares: its observation shape
/// (channels first), how its frames are encoded, and how many actions the
/// game has (every stored action is below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub shape: Vec<usize>,
    pub codec: Codec,
    pub num_actions: u32,
}

impl Layout {
    pub fn channels(&self) -> usize {
        self.shape[0]
    }

    /// Bytes of one decoded frame.
    pub fn frame_size(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

/// A transition on its way in, with the actor's priority (0: the largest seen).
#[derive(Debug)]
pub struct NewItem {
    pub item: Item,
    pub priority: f32,
}

/// A sampled batch with importance-sampling weights normalized by the batch's largest.
#[derive(Debug, Clone)]
pub struct Sample {
    pub ids: Vec<u64>,
    pub items: Vec<Item>,
    pub weights: Vec<f32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("observations of shape {:?} ({:?} frames, {} actions) differ from the {:?} ({:?}, {} actions) this replay holds: start a new replay server for another environment or codec", got.shape, got.codec, got.num_actions, expected.shape, expected.codec, expected.num_actions)]
    LayoutMismatch { expected: Layout, got: Layout },
    #[error("batch size must be between 1 and {max}, got {got}")]
    BadBatchSize { got: usize, max: usize },
    #[error("the replay is empty: wait for the actors")]
    Empty,
}

/// Counters that survive a restart with the contents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counters {
    pub inserted_total: u64,
    pub sampled_total: u64,
    pub max_priority: f32,
}

/// Everything a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Contents {
    pub layout: Option<Layout>,
    pub alpha: f64,
    pub counters: Counters,
    pub shards: Vec<ShardContents>,
    /// Each insert stream's last stored batch and transitions, so batches
    /// resent after a restart are stored once.
    pub streams: Vec<crate::sequences::StreamRecord>,
}

/// The replay at one moment: where each shard's items end, and the counters.
/// Taken while no insert is under way, it matches the streams' sequences.
#[derive(Debug, Clone)]
pub struct Cut {
    ends: Vec<u64>,
    counters: Counters,
}

pub struct Store {
    config: StoreConfig,
    shards: Vec<Mutex<Shard>>,
    /// Each shard's total weight (f64 bits) and size, readable without its lock.
    totals: Vec<AtomicU64>,
    sizes: Vec<AtomicUsize>,
    next_shard: AtomicUsize,
    /// The largest priority seen (f32 bits), given to items that come without one.
    max_priority: AtomicU32,
    inserted_total: AtomicU64,
    sampled_total: AtomicU64,
    samples: AtomicU64,
    layout: OnceLock<Layout>,
    ledger: Arc<Ledger>,
}

impl Store {
    /// A store whose layout is fixed from the start (the server's
    /// configuration), rather than by the first insert.
    pub fn with_layout(config: StoreConfig, layout: Option<Layout>) -> Self {
        let store = Store::new(config);
        if let Some(l) = layout {
            store.layout.set(l).expect("a new store has no layout");
        }
        store
    }

    pub fn new(config: StoreConfig) -> Self {
        assert!(config.capacity > 0, "capacity must be positive");
        assert!(config.shards > 0, "at least one shard");
        assert!(config.alpha >= 0.0, "alpha must be non-negative");
        let per_shard = config.capacity.div_ceil(config.shards);
        let shards = config.shards;
        Store {
            shards: (0..shards)
                .map(|_| Mutex::new(Shard::new(per_shard)))
                .collect(),
            totals: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            sizes: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            next_shard: AtomicUsize::new(0),
            max_priority: AtomicU32::new(1f32.to_bits()),
            inserted_total: AtomicU64::new(0),
            sampled_total: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            layout: OnceLock::new(),
            ledger: Arc::new(Ledger::default()),
            config,
        }
    }

    /// A store holding `contents` (a checkpoint, read against `ledger`),
    /// laid out as `config` says.
    pub fn restore(config: StoreConfig, contents: Contents, ledger: Arc<Ledger>) -> Self {
        let mut store = Store::new(config);
        store.ledger = ledger;
        if let Some(layout) = contents.layout {
            store.layout.set(layout).expect("a new store has no layout");
        }
        let per_shard = store.config.capacity.div_ceil(store.config.shards);
        for (k, c) in contents.shards.into_iter().enumerate() {
            let shard = Shard::restore(per_shard, c);
            store.publish(k, &shard);
            *store.shards[k].lock() = shard;
        }
        store
            .inserted_total
            .store(contents.counters.inserted_total, Ordering::Relaxed);
        store
            .sampled_total
            .store(contents.counters.sampled_total, Ordering::Relaxed);
        store
            .max_priority
            .store(contents.counters.max_priority.to_bits(), Ordering::Relaxed);
        store
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Frames are created against this ledger so their bytes are counted.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn layout(&self) -> Option<&Layout> {
        self.layout.get()
    }

    /// Fixes the layout on first use; later batches must match it.
    pub fn check_layout(&self, layout: &Layout) -> Result<(), StoreError> {
        let held = self.layout.get_or_init(|| layout.clone());
        // 0: restored from a checkpoint written before counts were declared.
        let actions_match = held.num_actions == 0 || held.num_actions == layout.num_actions;
        if held.shape != layout.shape || held.codec != layout.codec || !actions_match {
            return Err(StoreError::LayoutMismatch {
                expected: held.clone(),
                got: layout.clone(),
            });
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.sizes.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    pub fn counters(&self) -> Counters {
        Counters {
            inserted_total: self.inserted_total.load(Ordering::Relaxed),
            sampled_total: self.sampled_total.load(Ordering::Relaxed),
            max_priority: f32::from_bits(self.max_priority.load(Ordering::Relaxed)),
        }
    }

    /// Bytes the held items and their distinct frames take.
    pub fn stored_bytes(&self) -> usize {
        let per_item = self.layout().map_or(0, |l| item_overhead(2 * l.channels()));
        self.ledger.bytes() + self.len() * per_item
    }

    fn weight_of(&self, priority: f32) -> f64 {
        // f32 powf: half the cost of f64, and priorities carry no more precision.
        priority.max(MIN_PRIORITY).powf(self.config.alpha as f32) as f64
    }

    fn raise_max_priority(&self, p: f32) {
        self.max_priority.fetch_max(p.to_bits(), Ordering::Relaxed); // positive f32s order as their bits
    }

    fn publish(&self, k: usize, shard: &Shard) {
        self.totals[k].store(shard.total().to_bits(), Ordering::Relaxed);
        self.sizes[k].store(shard.len(), Ordering::Relaxed);
    }

    /// The next shard in turn whose lock is free, or the next one if all are busy.
    fn insert_shard(&self) -> (usize, parking_lot::MutexGuard<'_, Shard>) {
        let n = self.shards.len();
        let start = self.next_shard.fetch_add(1, Ordering::Relaxed) % n;
        for k in (start..n).chain(0..start) {
            if let Some(guard) = self.shards[k].try_lock() {
                return (k, guard);
            }
        }
        (start, self.shards[start].lock())
    }

    /// Appends a batch to one shard, evicting its oldest items beyond its share.
    pub fn insert(&self, items: Vec<NewItem>) -> usize {
        let n = items.len();
        for it in &items {
            if it.priority > 0.0 {
                self.raise_max_priority(it.priority);
            }
        }
        let fallback = f32::from_bits(self.max_priority.load(Ordering::Relaxed));
        let weighted: Vec<(Item, f64)> = items
            .into_iter()
            .map(|it| {
                let p = if it.priority > 0.0 {
                    it.priority
                } else {
                    fallback
                };
                (it.item, self.weight_of(p))
            })
            .collect();
        let (k, mut shard) = self.insert_shard();
        shard.insert(weighted);
        self.publish(k, &shard);
        drop(shard);
        self.inserted_total.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Draws `n` items with probability priority^alpha / total, one from
    /// each of `n` equal slices of the total mass across all shards;
    /// importance weights use exponent `beta` and are divided by the
    /// batch's largest.
    pub fn sample(&self, n: usize, beta: f64) -> Result<Sample, StoreError> {
        if n == 0 || n > MAX_BATCH {
            return Err(StoreError::BadBatchSize {
                got: n,
                max: MAX_BATCH,
            });
        }
        let totals: Vec<f64> = self
            .totals
            .iter()
            .map(|t| f64::from_bits(t.load(Ordering::Relaxed)))
            .collect();
        let total: f64 = totals.iter().sum();
        let held = self.len() as f64;
        if total <= 0.0 || held == 0.0 {
            return Err(StoreError::Empty);
        }
        let seed = self.config.seed ^ self.samples.fetch_add(1, Ordering::Relaxed).rotate_left(17);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let slice = total / n as f64;
        // Ascending, so each shard's draws are one run of them.
        let masses: Vec<f64> = (0..n)
            .map(|j| (j as f64 + rng.gen::<f64>()) * slice)
            .collect();
        let mut drawn: Vec<(u64, Item, f64)> = Vec::with_capacity(n);
        let mut missed = 0;
        let (mut j, mut below) = (0, 0.0);
        let last = totals.len() - 1;
        for (k, &shard_total) in totals.iter().enumerate() {
            let start = j;
            while j < n && (k == last || masses[j] < below + shard_total) {
                j += 1;
            }
            if j > start {
                let shard = self.shards[k].lock();
                for &m in &masses[start..j] {
                    match shard.find((m - below).max(0.0)) {
                        Some((seq, item, w)) => {
                            drawn.push(((k as u64) << SEQ_BITS | seq, item.clone(), w))
                        }
                        None => missed += 1,
                    }
                }
            }
            below += shard_total;
        }
        // A shard emptied between reading its total and locking it: draw
        // those again from the shards as they are now.
        while missed > 0 {
            let k = rng.gen_range(0..self.shards.len());
            let shard = self.shards[k].lock();
            if let Some((seq, item, w)) = shard.find(rng.gen::<f64>() * shard.total()) {
                drawn.push(((k as u64) << SEQ_BITS | seq, item.clone(), w));
                missed -= 1;
            }
        }
        let mut sample = Sample {
            ids: Vec::with_capacity(n),
            items: Vec::with_capacity(n),
            weights: Vec::with_capacity(n),
        };
        for (id, item, w) in drawn {
            sample.ids.push(id);
            sample.items.push(item);
            sample.weights.push((held * w / total).powf(-beta) as f32);
        }
        let largest = sample.weights.iter().copied().fold(0.0f32, f32::max);
        for w in &mut sample.weights {
            *w /= largest;
        }
        self.sampled_total.fetch_add(n as u64, Ordering::Relaxed);
        Ok(sample)
    }

    /// Sets priorities by id; returns (updated, missing) counts. Ids of
    /// evicted items, or that never existed, count as missing.
    pub fn update_priorities(&self, ids: &[u64], priorities: &[f32]) -> (usize, usize) {
        let mut by_shard: Vec<Vec<(u64, f64)>> = vec![Vec::new(); self.shards.len()];
        for (&id, &p) in ids.iter().zip(priorities) {
            let k = (id >> SEQ_BITS) as usize;
            if let Some(updates) = by_shard.get_mut(k) {
                self.raise_max_priority(p.max(MIN_PRIORITY));
                updates.push((id & ((1 << SEQ_BITS) - 1), self.weight_of(p)));
            }
        }
        let mut updated = 0;
        for (k, updates) in by_shard.into_iter().enumerate() {
            if updates.is_empty() {
                continue;
            }
            let mut shard = self.shards[k].lock();
            updated += shard.set_weights(updates);
            self.publish(k, &shard);
        }
        (updated, ids.len() - updated)
    }

    /// The item with `id` and its sampling weight, if still held.
    pub fn get(&self, id: u64) -> Option<(Item, f64)> {
        let shard = self.shards.get((id >> SEQ_BITS) as usize)?.lock();
        shard
            .get(id & ((1 << SEQ_BITS) - 1))
            .map(|(item, w)| (item.clone(), w))
    }

    /// A copy of everything, shard by shard and slice by slice: a lock is
    /// held only while one slice of item handles is copied (each copy touches
    /// a frame's reference count, a cache miss apiece, so a whole shard at
    /// once would hold inserts back for a noticeable time), never while frames
    /// are written out. Items evicted while a shard is being copied are left
    /// out, as are items inserted after the cut.
    pub fn contents(&self) -> Contents {
        self.contents_at(self.cut())
    }

    /// Where every shard ends now: cheap (one short lock per shard).
    pub fn cut(&self) -> Cut {
        Cut {
            ends: self.shards.iter().map(|s| s.lock().span().1).collect(),
            counters: self.counters(),
        }
    }

    /// A copy of the items that were held at `cut` and are still held.
    pub fn contents_at(&self, cut: Cut) -> Contents {
        let shards = self
            .shards
            .iter()
            .zip(cut.ends)
            .map(|(s, end)| copy_shard(s, end))
            .collect();
        Contents {
            layout: self.layout().cloned(),
            alpha: self.config.alpha,
            counters: cut.counters,
            shards,
            streams: Vec::new(),
        }
    }
}

/// Items copied per lock while checkpointing.
const COPY_SLICE: usize = 8_192;

fn copy_shard(shard: &Mutex<Shard>, end: u64) -> ShardContents {
    let (mut first, _) = shard.lock().span();
    first = first.min(end);
    let mut items: Vec<(Item, f64)> = Vec::new();
    loop {
        let from = first + items.len() as u64;
        if from >= end {
            break;
        }
        let guard = shard.lock();
        let (held_from, _) = guard.span();
        if held_from > from {
            // Evicted since the last slice: what came before is gone too.
            items.clear();
            first = held_from.min(end);
        }
        let want = ((end - first) as usize - items.len()).min(COPY_SLICE);
        items.extend(guard.copy(first + items.len() as u64, want));
    }
    ShardContents {
        first,
        next: first + items.len() as u64,
        items,
    }
}

#[cfg(test)]
mod tests;
