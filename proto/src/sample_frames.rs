//! The receiving side of frames: turns a `SampleResponse`'s distinct frames
//! and per-transition frame indices back into stacked observations.

use crate::codec::CodecError;
use crate::v1::{Codec, SampleResponse};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SampleFramesError {
    #[error("the batch has no observation shape")]
    NoShape,
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
    let shape = r
        .obs_shape
        .as_ref()
        .ok_or(SampleFramesError::NoShape)?
        .dims();
    if shape.len() < 2 {
        return Err(SampleFramesError::NoShape);
    }
    let codec = Codec::try_from(r.codec).map_err(|_| SampleFramesError::UnknownCodec(r.codec))?;
    let channels = shape[0];
    let size: usize = shape[1..].iter().product();
    let n = r.ids.len();
    let mut decoded = vec![0u8; r.frames.len() * size];
    for (i, (f, out)) in r
        .frames
        .iter()
        .zip(decoded.chunks_exact_mut(size))
        .enumerate()
    {
        codec.decode_into(i, &f.data, out)?;
    }
    let gather = |field: &'static str, idx: &[u32]| {
        if idx.len() != n * channels {
            return Err(SampleFramesError::IndexCount {
                field,
                got: idx.len(),
                n,
                channels,
            });
        }
        let mut out = Vec::with_capacity(idx.len() * size);
        for &i in idx {
            let start = i as usize * size;
            let frame = decoded
                .get(start..start + size)
                .ok_or(SampleFramesError::BadIndex {
                    index: i,
                    frames: r.frames.len(),
                })?;
            out.extend_from_slice(frame);
        }
        Ok(out)
    };
    Ok((
        gather("obs", &r.obs_frames)?,
        gather("next_obs", &r.next_obs_frames)?,
    ))
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
