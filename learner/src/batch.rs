//! A sampled batch as tensors, checked against what the network expects.

use apex_proto::v1::SampleResponse;
use tch::{Device, Kind, Tensor};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    #[error("the replay serves observations of shape {got:?} but the network takes {expected:?}: point the learner at the replay of the same environment")]
    Shape {
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("sampled batch is inconsistent: {0}")]
    Inconsistent(String),
    #[error("sampled batch's frames: {0}")]
    Frames(#[from] apex_proto::sample_frames::SampleFramesError),
    #[error("action {action} is out of range for {actions} actions")]
    Action { action: u32, actions: usize },
}

pub struct Batch {
    pub ids: Vec<u64>,
    pub obs: Tensor,
    pub actions: Tensor,
    pub rewards: Tensor,
    pub discounts: Tensor,
    pub next_obs: Tensor,
    pub weights: Tensor,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn from_response(
        r: SampleResponse,
        obs_shape: &[usize],
        actions: usize,
        device: Device,
    ) -> Result<Batch, BatchError> {
        let got = r.obs_shape.as_ref().map(|s| s.dims()).unwrap_or_default();
        if got != obs_shape {
            return Err(BatchError::Shape {
                expected: obs_shape.to_vec(),
                got,
            });
        }
        let n = r.ids.len();
        let lengths = [
            r.weights.len(),
            r.actions.len(),
            r.rewards.len(),
            r.discounts.len(),
        ];
        if lengths.iter().any(|&l| l != n) {
            return Err(BatchError::Inconsistent(format!(
                "{n} ids but [weights, actions, rewards, discounts] lengths {lengths:?}"
            )));
        }
        let (obs, next_obs) = apex_proto::sample_frames::observations(&r)?;
        if let Some(&action) = r.actions.iter().find(|&&a| a as usize >= actions) {
            return Err(BatchError::Action { action, actions });
        }
        let mut shape = vec![n as i64];
        shape.extend(obs_shape.iter().map(|&d| d as i64));
        let images = |bytes: &[u8]| {
            Tensor::from_slice(bytes)
                .view(shape.as_slice())
                .to_device(device)
        };
        let actions: Vec<i64> = r.actions.iter().map(|&a| a as i64).collect();
        Ok(Batch {
            obs: images(&obs),
            next_obs: images(&next_obs),
            actions: Tensor::from_slice(&actions).to_device(device),
            rewards: Tensor::from_slice(&r.rewards).to_device(device),
            discounts: Tensor::from_slice(&r.discounts).to_device(device),
            weights: Tensor::from_slice(&r.weights)
                .to_kind(Kind::Float)
                .to_device(device),
            ids: r.ids,
        })
    }
}

/// Four 2x2 one-channel transitions sharing one observation, for the
/// learner's unit tests.
#[cfg(test)]
pub(crate) fn tiny_batch(actions: [i64; 4], reward: f32, discount: f32) -> Batch {
    let obs = Tensor::from_slice(&[0u8, 255, 0, 255])
        .view([1, 1, 2, 2])
        .repeat([4, 1, 1, 1]);
    Batch {
        ids: vec![0, 1, 2, 3],
        next_obs: obs.copy(),
        obs,
        actions: Tensor::from_slice(&actions),
        rewards: Tensor::from_slice(&[reward; 4]),
        discounts: Tensor::from_slice(&[discount; 4]),
        weights: Tensor::from_slice(&[1f32; 4]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apex_proto::v1::{Codec, Frame, Shape};

    /// `n` transitions from frame 0 (all 7s) to frame 1 (all 8s).
    fn response(n: usize) -> SampleResponse {
        let frame = |id: u64, v: u8| Frame {
            id,
            data: Codec::Lz4.encode(&[v; 4]).into(),
        };
        SampleResponse {
            obs_shape: Some(Shape::of(&[1, 2, 2])),
            codec: Codec::Lz4 as i32,
            ids: (0..n as u64).collect(),
            weights: vec![1.0; n],
            frames: vec![frame(0, 7), frame(1, 8)],
            obs_frames: vec![0; n],
            next_obs_frames: vec![1; n],
            actions: vec![1; n],
            rewards: vec![0.5; n],
            discounts: vec![0.99; n],
        }
    }

    #[test]
    fn a_good_batch_becomes_tensors() {
        let b = Batch::from_response(response(3), &[1, 2, 2], 2, Device::Cpu).unwrap();
        assert_eq!(b.obs.size(), vec![3, 1, 2, 2]);
        assert_eq!(b.obs.kind(), Kind::Uint8);
        assert_eq!(b.actions.kind(), Kind::Int64);
        assert_eq!(b.obs.int64_value(&[2, 0, 1, 1]), 7);
        assert_eq!(b.next_obs.int64_value(&[2, 0, 1, 1]), 8);
    }

    #[test]
    fn bad_batches_are_named() {
        assert!(matches!(
            Batch::from_response(response(3), &[4, 84, 84], 2, Device::Cpu),
            Err(BatchError::Shape { .. })
        ));
        let mut r = response(3);
        r.rewards.pop();
        assert!(matches!(
            Batch::from_response(r, &[1, 2, 2], 2, Device::Cpu),
            Err(BatchError::Inconsistent(_))
        ));
        let mut r = response(3);
        r.obs_frames[1] = 5;
        assert!(matches!(
            Batch::from_response(r, &[1, 2, 2], 2, Device::Cpu),
            Err(BatchError::Frames(_))
        ));
        assert!(matches!(
            Batch::from_response(response(3), &[1, 2, 2], 1, Device::Cpu),
            Err(BatchError::Action {
                action: 1,
                actions: 1
            })
        ));
    }
}
