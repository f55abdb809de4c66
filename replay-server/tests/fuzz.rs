//! Property tests at the replay's two trust boundaries: insert requests from
//! actors and checkpoint files from disk. Whatever arrives, the server
//! answers with an error or stores only valid items; it never panics, and a
//! damaged checkpoint is refused, never half-loaded.

use std::sync::Arc;

use apex_proto::v1::{Codec, Frame, InsertRequest, Shape, Transition};
use apex_replay_server::frame::Ledger;
use apex_replay_server::store::{Store, StoreConfig};
use apex_replay_server::stream::{StreamFrames, WindowBudget};
use apex_replay_server::{checkpoint, valid_priority};
use proptest::prelude::*;

/// Cases per property: PROPTEST_CASES for a long run (millions), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const CHANNELS: usize = 2;
const FRAME: usize = 16; // 4x4 bytes per channel

fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        -2.0f32..2.0,
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(f32::MAX),
        any::<f32>(),
    ]
}

fn transition(max_id: u64) -> impl Strategy<Value = Transition> {
    let ids = prop::collection::vec(0..max_id + 3, 0..4);
    (
        ids.clone(),
        ids,
        prop_oneof![0u32..6, any::<u32>()],
        any_f32(),
        any_f32(),
        any_f32(),
    )
        .prop_map(
            |(obs, next_obs, action, reward, discount, priority)| Transition {
                obs,
                next_obs,
                action,
                reward,
                discount,
                priority,
            },
        )
}

/// Requests near valid ones (so that validation runs deep), with any field
/// free to be wrong: shapes, codecs, frame ids, frame bytes, every number.
fn request() -> impl Strategy<Value = InsertRequest> {
    let shape = prop_oneof![
        4 => Just(vec![CHANNELS as u64, 4, 4]),
        1 => prop::collection::vec(prop_oneof![0u64..6, any::<u64>()], 0..6),
    ];
    let frame = (
        0u64..12,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..24),
    )
        .prop_map(|(id, encode, bytes)| Frame {
            id,
            data: if encode {
                Codec::Lz4
                    .encode(&[bytes.first().copied().unwrap_or(7); FRAME])
                    .into()
            } else {
                bytes.into()
            },
        });
    (
        shape,
        prop_oneof![4 => Just(Codec::Lz4 as i32), 1 => any::<i32>()],
        prop_oneof![4 => Just(6u32), 1 => any::<u32>()],
        prop::collection::vec(frame, 0..8),
        prop::collection::vec(transition(12), 0..6),
    )
        .prop_map(|(dims, codec, num_actions, mut frames, transitions)| {
            // Mostly consecutive ids, as a sender numbers them.
            if frames.len() % 2 == 0 {
                for (i, f) in frames.iter_mut().enumerate() {
                    f.id = i as u64;
                }
            }
            InsertRequest {
                obs_shape: Some(Shape::of(
                    &dims.iter().map(|&d| d as usize).collect::<Vec<_>>(),
                )),
                codec,
                frames,
                transitions,
                actor_id: 1,
                num_actions,
                ..Default::default()
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1000)))]

    #[test]
    fn any_insert_request_is_refused_or_yields_only_valid_items(
        requests in prop::collection::vec(request(), 1..4)
    ) {
        let ledger = Arc::new(Ledger::default());
        let mut stream = StreamFrames::new(WindowBudget::new(1 << 20));
        for req in &requests {
            let Ok(layout) = StreamFrames::layout(req) else { continue };
            let Ok(items) = stream.accept(req, &layout, &ledger) else { continue };
            prop_assert_eq!(items.len(), req.transitions.len());
            for new in items {
                prop_assert!(valid_priority(new.priority));
                prop_assert!(new.item.reward.is_finite());
                prop_assert!((0.0..=1.0).contains(&new.item.discount));
                prop_assert!(new.item.action < layout.num_actions);
                prop_assert_eq!(new.item.frames.len(), 2 * layout.channels());
            }
        }
    }
}

/// A real checkpoint of a few items, as bytes.
fn checkpoint_bytes() -> Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(write_checkpoint).clone()
}

fn write_checkpoint() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        capacity: 64,
        shards: 2,
        alpha: 0.6,
        seed: 3,
    };
    let store = Store::new(config);
    let ledger = store.ledger().clone();
    let mut stream = StreamFrames::new(WindowBudget::new(1 << 20));
    let req = InsertRequest {
        obs_shape: Some(Shape::of(&[CHANNELS, 4, 4])),
        codec: Codec::Lz4 as i32,
        frames: (0..5)
            .map(|id| Frame {
                id,
                data: Codec::Lz4.encode(&[id as u8; FRAME]).into(),
            })
            .collect(),
        transitions: (0..3)
            .map(|i| Transition {
                obs: vec![i, i + 1],
                next_obs: vec![i + 1, i + 2],
                action: i as u32,
                reward: 0.5,
                discount: 0.99,
                priority: 1.0 + i as f32,
            })
            .collect(),
        actor_id: 1,
        num_actions: 6,
        ..Default::default()
    };
    let layout = StreamFrames::layout(&req).unwrap();
    store.check_layout(&layout).unwrap();
    store.insert(stream.accept(&req, &layout, &ledger).unwrap());
    let (path, _) = checkpoint::write(dir.path(), &store.contents()).unwrap();
    std::fs::read(path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(300)))]

    #[test]
    fn a_damaged_checkpoint_is_refused_never_half_loaded(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        truncate in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let good = checkpoint_bytes();
        let mut bad = good.clone();
        for (at, flip) in &edits {
            bad[at.index(good.len())] ^= flip;
        }
        if let Some(at) = truncate {
            bad.truncate(at.index(good.len()));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("damaged");
        std::fs::write(&path, &bad).unwrap();
        let read = checkpoint::read(&path, &Arc::new(Ledger::default()));
        prop_assert!(read.is_err(), "a damaged checkpoint loaded");
        let message = read.err().unwrap().to_string();
        prop_assert!(message.contains("corrupt"), "{}", message);
    }
}

#[test]
fn an_intact_checkpoint_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("intact");
    std::fs::write(&path, checkpoint_bytes()).unwrap();
    let contents = checkpoint::read(&path, &Arc::new(Ledger::default())).unwrap();
    let items: usize = contents.shards.iter().map(|s| s.items.len()).sum();
    assert_eq!(items, 3);
}
