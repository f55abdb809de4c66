//! The store's sampling statistics, ids and sharding, on tiny items.

use super::*;
use crate::frame::new_frame;

fn store(capacity: usize, shards: usize, alpha: f64) -> Store {
    Store::new(StoreConfig {
        capacity,
        shards,
        alpha,
        seed: 7,
    })
}

/// An item whose action is `tag`, with one frame per side.
fn item(s: &Store, tag: u32, priority: f32) -> NewItem {
    NewItem {
        item: Item {
            frames: vec![
                new_frame(&tag.to_le_bytes(), s.ledger()),
                new_frame(&(tag + 1).to_le_bytes(), s.ledger()),
            ]
            .into(),
            action: tag,
            reward: tag as f32,
            discount: 0.99,
        },
        priority,
    }
}

fn fill(s: &Store, priorities: &[f32]) {
    // One batch per item, so items spread over the shards.
    for (i, &p) in priorities.iter().enumerate() {
        s.insert(vec![item(s, i as u32, p)]);
    }
}

/// Draws `draws` items from priorities `p` and checks each item's count
/// against p_i^alpha / sum p^alpha within 5 standard deviations of a
/// binomial count (a false alarm about once in 1.7 million per item).
fn check_frequencies(priorities: &[f32], alpha: f64, shards: usize, draws: usize) {
    let s = store(priorities.len() * 4, shards, alpha);
    fill(&s, priorities);
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
            "item {i} ({shards} shards): {got} draws, expected {expected:.0} +- {:.0}",
            5.0 * sd
        );
    }
}

#[test]
fn sampling_frequencies_follow_priority_to_the_alpha() {
    let priorities: Vec<f32> = (1..=20).map(|i| (i * i) as f32 / 10.0).collect();
    for shards in [1, 4] {
        check_frequencies(&priorities, 0.6, shards, 200_000);
        check_frequencies(&priorities, 1.0, shards, 200_000);
    }
}

#[test]
fn alpha_zero_is_uniform() {
    check_frequencies(
        &[0.01, 5.0, 100.0, 1.0, 3.0, 7.0, 0.5, 2.0],
        0.0,
        3,
        100_000,
    );
}

#[test]
fn importance_weights_follow_the_formula_and_are_max_normalized() {
    let priorities = [1.0f32, 2.0, 4.0, 8.0];
    let (alpha, beta) = (0.6, 0.4);
    let s = store(4, 2, alpha);
    fill(&s, &priorities);
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
fn ids_find_their_items_across_shards() {
    let s = store(100, 4, 0.6);
    fill(&s, &[1.0; 10]);
    let sample = s.sample(50, 0.4).unwrap();
    for (id, it) in sample.ids.iter().zip(&sample.items) {
        assert_eq!(&s.get(*id).unwrap().0, it);
    }
    let shards: std::collections::HashSet<u64> = sample.ids.iter().map(|id| id >> 48).collect();
    assert_eq!(shards.len(), 4, "ten batches went round four shards");
}

#[test]
fn new_items_without_priority_get_the_largest_seen() {
    let s = store(10, 1, 1.0);
    s.insert(vec![item(&s, 0, 3.0), item(&s, 1, 0.0)]);
    assert_eq!(s.get(1).unwrap().1, 3.0);
    s.update_priorities(&[0], &[9.0]);
    s.insert(vec![item(&s, 2, 0.0)]);
    assert_eq!(s.get(2).unwrap().1, 9.0);
}

#[test]
fn priority_updates_skip_evicted_and_unknown_ids_and_change_sampling() {
    let s = store(2, 1, 1.0);
    fill(&s, &[1.0; 4]); // ids 2 and 3 remain
    assert_eq!(
        s.update_priorities(&[0, 2, 3, 9, 5 << 48], &[5.0, 1e-3, 7.0, 8.0, 1.0]),
        (2, 3)
    );
    assert!((s.get(2).unwrap().1 - 1e-3).abs() < 1e-9);
    let drawn = s.sample(200, 0.4).unwrap();
    let low = drawn.ids.iter().filter(|&&id| id == 2).count();
    assert!(
        low < 5,
        "an item with 1/7000 of the mass was drawn {low} times of 200"
    );
}

#[test]
fn each_shard_evicts_its_oldest_and_frames_go_with_their_last_item() {
    let s = store(4, 2, 0.6);
    s.check_layout(&Layout {
        shape: vec![1, 4],
        codec: Codec::None,
        num_actions: 16,
    })
    .unwrap();
    fill(&s, &[1.0; 10]);
    assert_eq!(s.len(), 4);
    assert_eq!(s.counters().inserted_total, 10);
    let held: Vec<u32> = s
        .contents()
        .shards
        .iter()
        .flat_map(|c| c.items.iter().map(|(it, _)| it.action))
        .collect();
    assert_eq!(held, vec![6, 8, 7, 9]);
    assert_eq!(
        s.ledger().frames(),
        8,
        "the evicted items' frames are freed"
    );
    assert!(s.stored_bytes() > s.ledger().bytes());
}

#[test]
fn layouts_must_agree() {
    let s = store(4, 1, 0.6);
    let l = |c: usize, codec| Layout {
        shape: vec![c, 2, 2],
        codec,
        num_actions: 4,
    };
    s.check_layout(&l(4, Codec::Lz4)).unwrap();
    s.check_layout(&l(4, Codec::Lz4)).unwrap();
    let more_actions = Layout {
        num_actions: 18,
        ..l(4, Codec::Lz4)
    };
    assert!(s.check_layout(&more_actions).is_err());
    assert!(matches!(
        s.check_layout(&l(3, Codec::Lz4)),
        Err(StoreError::LayoutMismatch { .. })
    ));
    assert!(s.check_layout(&l(4, Codec::Zstd)).is_err());
    assert_eq!(s.sample(1, 0.4).unwrap_err(), StoreError::Empty);
    assert!(matches!(
        s.sample(0, 0.4),
        Err(StoreError::BadBatchSize { .. })
    ));
}

mod model {
    //! Random operations against a plain reference model: per-shard FIFO
    //! lists of (id, tag, weight), with a checkpoint round trip as one of
    //! the operations.

    use proptest::prelude::*;

    use super::*;
    use crate::checkpoint;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<f32>),
        Sample(usize),
        Update(Vec<(usize, f32)>),
        CheckpointRestore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::collection::vec(prop_oneof![Just(0.0f32), 0.01f32..10.0], 1..6).prop_map(Op::Insert),
            2 => (1usize..40).prop_map(Op::Sample),
            2 => proptest::collection::vec((0usize..64, 0.0f32..10.0), 1..8).prop_map(Op::Update),
            1 => Just(Op::CheckpointRestore),
        ]
    }

    struct Model {
        shards: Vec<std::collections::VecDeque<(u64, u32, f64)>>,
        next_seq: Vec<u64>,
        per_shard: usize,
        turn: usize,
        max_priority: f32,
        tag: u32,
        alpha: f64,
    }

    impl Model {
        fn weight(&self, p: f32) -> f64 {
            p.max(MIN_PRIORITY).powf(self.alpha as f32) as f64
        }

        fn ids(&self) -> Vec<u64> {
            self.shards
                .iter()
                .enumerate()
                .flat_map(|(k, q)| {
                    q.iter()
                        .map(move |(seq, _, _)| (k as u64) << SEQ_BITS | seq)
                })
                .collect()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn the_store_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..60), shards in 1usize..4) {
            let config = StoreConfig { capacity: 12, shards, alpha: 0.7, seed: 1 };
            let dir = tempfile::tempdir().unwrap();
            let mut s = Store::new(config.clone());
            let mut m = Model {
                shards: vec![Default::default(); shards],
                next_seq: vec![0; shards],
                per_shard: 12usize.div_ceil(shards),
                turn: 0,
                max_priority: 1.0,
                tag: 0,
                alpha: 0.7,
            };
            for op in ops {
                match op {
                    Op::Insert(priorities) => {
                        let batch: Vec<NewItem> = priorities.iter().map(|&p| { m.tag += 1; item(&s, m.tag, p) }).collect();
                        s.insert(batch);
                        // Single-threaded, every lock is free: shards take turns.
                        let k = m.turn % shards;
                        m.turn += 1;
                        for &p in &priorities {
                            if p > 0.0 { m.max_priority = m.max_priority.max(p); }
                        }
                        let first_tag = m.tag + 1 - priorities.len() as u32;
                        for (i, &p) in priorities.iter().enumerate() {
                            let w = m.weight(if p > 0.0 { p } else { m.max_priority });
                            if m.shards[k].len() == m.per_shard { m.shards[k].pop_front(); }
                            m.shards[k].push_back((m.next_seq[k], first_tag + i as u32, w));
                            m.next_seq[k] += 1;
                        }
                    }
                    Op::Sample(n) => {
                        let held = m.ids();
                        match s.sample(n, 0.5) {
                            Ok(sample) => {
                                prop_assert_eq!(sample.ids.len(), n);
                                for id in &sample.ids { prop_assert!(held.contains(id), "sampled id {} is not held", id); }
                                prop_assert!(sample.weights.iter().all(|w| *w > 0.0 && *w <= 1.0));
                            }
                            Err(e) => prop_assert!(held.is_empty() && e == StoreError::Empty),
                        }
                    }
                    Op::Update(updates) => {
                        let held = m.ids();
                        // Ids both held and never held (past the end).
                        let ids: Vec<u64> = updates.iter().map(|&(i, _)| held.get(i).copied().unwrap_or(i as u64 + 1000)).collect();
                        let prios: Vec<f32> = updates.iter().map(|&(_, p)| p).collect();
                        let (updated, missing) = s.update_priorities(&ids, &prios);
                        let expect = ids.iter().filter(|id| held.contains(id)).count();
                        prop_assert_eq!((updated, missing), (expect, ids.len() - expect));
                        for (&id, &p) in ids.iter().zip(&prios) {
                            m.max_priority = m.max_priority.max(p.max(MIN_PRIORITY));
                            let k = (id >> SEQ_BITS) as usize;
                            let seq = id & ((1 << SEQ_BITS) - 1);
                            let w = m.weight(p);
                            if let Some(e) = m.shards.get_mut(k).and_then(|q| q.iter_mut().find(|e| e.0 == seq)) { e.2 = w; }
                        }
                    }
                    Op::CheckpointRestore => {
                        checkpoint::write(dir.path(), &s.contents()).unwrap();
                        let ledger = Arc::new(Ledger::default());
                        let back = checkpoint::read(&checkpoint::current(dir.path()), &ledger).unwrap();
                        prop_assert_eq!(&back, &s.contents());
                        s = Store::restore(config.clone(), back, ledger);
                        m.turn = 0; // a new store starts its turns again

                    }
                }
                // After every operation: the same items, in order, with the same weights.
                let c = s.contents();
                prop_assert_eq!(s.len(), m.shards.iter().map(|q| q.len()).sum::<usize>());
                for (k, q) in m.shards.iter().enumerate() {
                    let got: Vec<(u64, u32, f64)> = (c.shards[k].first..c.shards[k].next)
                        .zip(&c.shards[k].items)
                        .map(|(seq, (it, w))| (seq, it.action, *w))
                        .collect();
                    let want: Vec<(u64, u32, f64)> = q.iter().copied().collect();
                    prop_assert_eq!(got, want);
                }
                prop_assert_eq!(s.ledger().frames(), 2 * s.len(), "frames live exactly as long as their items");
            }
        }
    }
}

#[test]
fn a_shard_copied_in_slices_equals_one_copied_at_once() {
    let s = store(3 * COPY_SLICE, 1, 0.6);
    let n = 3 * COPY_SLICE + 100; // the oldest 100 evicted
    for chunk in (0..n as u32).collect::<Vec<_>>().chunks(1000) {
        s.insert(chunk.iter().map(|&t| item(&s, t, 1.0 + t as f32)).collect());
    }
    let sliced = s.contents();
    let whole = s.shards[0].lock().contents();
    assert_eq!(sliced.shards[0], whole);
    assert_eq!(whole.items.len(), 3 * COPY_SLICE);
    assert_eq!(whole.first, 100);
}
