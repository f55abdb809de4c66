//! The receiving side of frames: turns a `SampleResponse`'s distinct frames
//! and per-transition frame indices back into stacked observations.

use crate::codec::CodecError;
use crate::v1::{Codec, SampleResponse};
use crate::{MAX_CHANNELS, MAX_FRAME_BYTES};

/// Bytes of one decoded observation array (obs or next_obs) at most: a
/// batch of 512 Atari stacks takes 14 MB.
const MAX_DECODED_BYTES: usize = 2 << 30;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SampleFramesError {
    #[error("the batch has no observation shape")]
    NoShape,
    #[error("the batch's observation shape {0:?} is not two to four non-zero dimensions of at most {MAX_CHANNELS} channels and {MAX_FRAME_BYTES} bytes each")]
    BadShape(Vec<usize>),
    #[error("the batch's observations would take {0} bytes decoded, more than {MAX_DECODED_BYTES}: lower the batch size")]
    TooLarge(usize),
    #[error("the batch names codec {0}, which this build does not know")]
    UnknownCodec(i32),
    #[error(
        "the batch has {got} {field} frame indices for {n} transitions of {channels} channels"
    )]
    IndexCount {
        field: &'static str,
        got: usize,
        n: usize,
        channels: usize,
    },
    #[error("frame index {index} is past the batch's {frames} frames")]
    BadIndex { index: u32, frames: usize },
    #[error(transparent)]
    Frame(#[from] CodecError),
}

/// `(obs, next_obs)`: each batch_size observations of the response's shape, concatenated.
pub fn observations(r: &SampleResponse) -> Result<(Vec<u8>, Vec<u8>), SampleFramesError> {
    let layout = Layout::of(r)?;
    let (mut obs, mut next) = (vec![0u8; layout.bytes()], vec![0u8; layout.bytes()]);
    decode(r, &layout, &mut obs, &mut next)?;
    Ok((obs, next))
}

/// Decodes the observations into `obs` and `next` (each batch_size
/// observations of the response's shape), wherever the caller wants them:
/// the learner's are the tensors it trains on, so no copy follows.
pub fn observations_into(
    r: &SampleResponse,
    obs: &mut [u8],
    next: &mut [u8],
) -> Result<(), SampleFramesError> {
    let layout = Layout::of(r)?;
    let bytes = layout.bytes();
    assert!(
        obs.len() == bytes && next.len() == bytes,
        "observation buffers of {} and {} bytes for {bytes}",
        obs.len(),
        next.len()
    );
    decode(r, &layout, obs, next)
}

fn decode(
    r: &SampleResponse,
    layout: &Layout,
    obs: &mut [u8],
    next: &mut [u8],
) -> Result<(), SampleFramesError> {
    let size = layout.size;
    // Each frame is decoded once, straight into its first place; its other
    // places copy from there (no intermediate buffer of decoded frames).
    let mut first: Vec<Option<(bool, usize)>> = vec![None; r.frames.len()];
    let places = r
        .obs_frames
        .iter()
        .enumerate()
        .map(|(k, &i)| (false, k, i))
        .chain(
            r.next_obs_frames
                .iter()
                .enumerate()
                .map(|(k, &i)| (true, k, i)),
        );
    for (in_next, k, i) in places {
        let i = i as usize;
        let at = k * size;
        match first[i] {
            None => {
                let out = if in_next { &mut *next } else { &mut *obs };
                layout
                    .codec
                    .decode_into(i, &r.frames[i].data, &mut out[at..at + size])?;
                first[i] = Some((in_next, at));
            }
            Some((src_next, src)) => match (src_next, in_next) {
                (false, false) => obs.copy_within(src..src + size, at),
                (true, true) => next.copy_within(src..src + size, at),
                (false, true) => next[at..at + size].copy_from_slice(&obs[src..src + size]),
                (true, false) => obs[at..at + size].copy_from_slice(&next[src..src + size]),
            },
        }
    }
    Ok(())
}

/// A response's checked observation layout.
struct Layout {
    codec: Codec,
    /// Transitions times channels: frames per observation array.
    places: usize,
    /// Bytes of one frame.
    size: usize,
}

impl Layout {
    fn bytes(&self) -> usize {
        self.places * self.size
    }

    fn of(r: &SampleResponse) -> Result<Layout, SampleFramesError> {
        let shape = r
            .obs_shape
            .as_ref()
            .ok_or(SampleFramesError::NoShape)?
            .dims();
        let size = shape
            .get(1..)
            .and_then(|rest| rest.iter().try_fold(1usize, |a, &d| a.checked_mul(d)));
        let size = match size {
            Some(size)
                if (2..=4).contains(&shape.len())
                    && !shape.contains(&0)
                    && shape[0] <= MAX_CHANNELS
                    && size <= MAX_FRAME_BYTES =>
            {
                size
            }
            _ => return Err(SampleFramesError::BadShape(shape)),
        };
        let codec =
            Codec::try_from(r.codec).map_err(|_| SampleFramesError::UnknownCodec(r.codec))?;
        let channels = shape[0];
        let n = r.ids.len();
        // Cannot overflow: channels x size is at most 2^28, and n fits a message.
        let bytes = n * channels * size;
        if bytes > MAX_DECODED_BYTES {
            return Err(SampleFramesError::TooLarge(bytes));
        }
        for (field, idx) in [("obs", &r.obs_frames), ("next_obs", &r.next_obs_frames)] {
            if idx.len() != n * channels {
                return Err(SampleFramesError::IndexCount {
                    field,
                    got: idx.len(),
                    n,
                    channels,
                });
            }
            if let Some(&index) = idx.iter().find(|&&i| i as usize >= r.frames.len()) {
                return Err(SampleFramesError::BadIndex {
                    index,
                    frames: r.frames.len(),
                });
            }
        }
        Ok(Layout {
            codec,
            places: n * channels,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Frame, Shape};

    #[test]
    fn frames_are_gathered_into_stacks() {
        let frame = |id: u64, v: u8| Frame {
            id,
            data: Codec::Zstd.encode(&[v; 4]).into(),
        };
        let r = SampleResponse {
            obs_shape: Some(Shape::of(&[2, 2, 2])),
            codec: Codec::Zstd as i32,
            ids: vec![10, 11],
            frames: vec![frame(0, 5), frame(1, 6), frame(2, 7)],
            obs_frames: vec![0, 1, 1, 2],
            next_obs_frames: vec![1, 2, 2, 2],
            ..Default::default()
        };
        let (obs, next) = observations(&r).unwrap();
        assert_eq!(obs, [[5u8; 4], [6; 4], [6; 4], [7; 4]].concat());
        assert_eq!(next, [[6u8; 4], [7; 4], [7; 4], [7; 4]].concat());
        let bad = SampleResponse {
            obs_frames: vec![0, 1, 1, 9],
            ..r.clone()
        };
        assert_eq!(
            observations(&bad).unwrap_err(),
            SampleFramesError::BadIndex {
                index: 9,
                frames: 3
            }
        );
        let short = SampleResponse {
            next_obs_frames: vec![1],
            ..r
        };
        assert!(matches!(
            observations(&short),
            Err(SampleFramesError::IndexCount {
                field: "next_obs",
                ..
            })
        ));
    }
}
