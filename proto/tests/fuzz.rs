//! Property tests of what the learner decodes from the replay: any frame
//! bytes and any sample response give frames of the right size or an error,
//! never a panic or an allocation the response did not earn.

use apex_proto::sample_frames::observations;
use apex_proto::v1::{Codec, Frame, SampleResponse, Shape};
use proptest::prelude::*;

/// Cases per property: PROPTEST_CASES for a long run (millions), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::None), Just(Codec::Lz4), Just(Codec::Zstd)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(3000)))]

    #[test]
    fn frames_round_trip_through_every_codec(
        codec in codec(),
        frame in prop::collection::vec(any::<u8>(), 1..2048),
    ) {
        let mut out = vec![0u8; frame.len()];
        codec.decode_into(0, &codec.encode(&frame), &mut out).unwrap();
        prop_assert_eq!(out, frame);
    }

    #[test]
    fn any_bytes_decode_to_exactly_the_frame_size_or_fail(
        codec in codec(),
        data in prop::collection::vec(any::<u8>(), 0..512),
        size in 1usize..1024,
    ) {
        let mut out = vec![0u8; size];
        let _ = codec.decode_into(3, &data, &mut out);
    }

    #[test]
    fn any_sample_response_gives_observations_or_an_error(
        dims in prop::collection::vec(prop_oneof![1u32..6, any::<u32>()], 0..6),
        codec in prop_oneof![0i32..3, any::<i32>()],
        frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6),
        ids in 0usize..5,
        obs in prop::collection::vec(0u32..8, 0..24),
        next in prop::collection::vec(0u32..8, 0..24),
        encode in any::<bool>(),
    ) {
        let known = Codec::try_from(codec).ok();
        let frames = frames
            .into_iter()
            .enumerate()
            .map(|(id, bytes)| Frame {
                id: id as u64,
                data: match known {
                    Some(c) if encode => c.encode(&bytes).into(),
                    _ => bytes.into(),
                },
            })
            .collect();
        let response = SampleResponse {
            ids: (0..ids as u64).collect(),
            obs_shape: Some(Shape { dims: dims.clone() }),
            codec,
            frames,
            obs_frames: obs,
            next_obs_frames: next,
            ..Default::default()
        };
        if let Ok((o, n)) = observations(&response) {
            let numel: usize = dims.iter().map(|&d| d as usize).product();
            prop_assert_eq!(o.len(), ids * numel);
            prop_assert_eq!(n.len(), ids * numel);
        }
    }
}
