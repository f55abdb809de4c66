//! A sampled batch as tensors, checked against what the network expects.

use apex_proto::sample_frames;
use apex_proto::v1::SampleResponse;
use tch::{Kind, Tensor};

use crate::io::upload::{Staging, Uploader};

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
    #[error("sampled batch is empty: the replay answered a Sample call with no transitions")]
    Empty,
}

pub struct Batch {
    pub ids: Vec<u64>,
    pub obs: Tensor,
    pub actions: Tensor,
    pub rewards: Tensor,
    pub discounts: Tensor,
    pub next_obs: Tensor,
    pub weights: Tensor,
    /// The pinned buffers the observations were copied from (CUDA), held
    /// until the batch is dropped.
    pub staging: Option<Staging>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Checks `r` against the network, then decodes it onto `to`'s device.
    pub fn from_response(
        r: SampleResponse,
        obs_shape: &[usize],
        actions: usize,
        to: &Uploader,
    ) -> Result<Batch, BatchError> {
        let got = r.obs_shape.as_ref().map(|s| s.dims()).unwrap_or_default();
        if got != obs_shape {
            return Err(BatchError::Shape {
                expected: obs_shape.to_vec(),
                got,
            });
        }
        let n = r.ids.len();
        // An update needs at least one row (its slices split the rows).
        if n == 0 {
            return Err(BatchError::Empty);
        }
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
        if let Some(&action) = r.actions.iter().find(|&&a| a as usize >= actions) {
            return Err(BatchError::Action { action, actions });
        }
        let mut shape = vec![n as i64];
        shape.extend(obs_shape.iter().map(|&d| d as i64));
        let (obs, next_obs, staging) = to.observations(&shape, |obs, next| {
            sample_frames::observations_into(&r, obs, next)
        })?;
        let actions: Vec<i64> = r.actions.iter().map(|&a| a as i64).collect();
        Ok(Batch {
            obs,
            next_obs,
            actions: to.upload(Tensor::from_slice(&actions)),
            rewards: to.upload(Tensor::from_slice(&r.rewards)),
            discounts: to.upload(Tensor::from_slice(&r.discounts)),
            weights: to.upload(Tensor::from_slice(&r.weights).to_kind(Kind::Float)),
            ids: r.ids,
            staging,
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
        staging: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apex_proto::v1::{Codec, Frame, Shape};
    use tch::Device;

    fn cpu() -> Uploader {
        Uploader::new(Device::Cpu)
    }

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
        let b = Batch::from_response(response(3), &[1, 2, 2], 2, &cpu()).unwrap();
        assert_eq!(b.obs.size(), vec![3, 1, 2, 2]);
        assert_eq!(b.obs.kind(), Kind::Uint8);
        assert_eq!(b.actions.kind(), Kind::Int64);
        assert_eq!(b.obs.int64_value(&[2, 0, 1, 1]), 7);
        assert_eq!(b.next_obs.int64_value(&[2, 0, 1, 1]), 8);
    }

    fn cuda() -> Device {
        assert!(
            tch::Cuda::is_available(),
            "this test needs a CUDA device: run it where nvidia-smi works"
        );
        Device::Cuda(0)
    }

    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_batch_arrives_on_the_device_intact() {
        let device = cuda();
        let on_cpu = Batch::from_response(response(5), &[1, 2, 2], 2, &cpu()).unwrap();
        let on_gpu =
            Batch::from_response(response(5), &[1, 2, 2], 2, &Uploader::new(device)).unwrap();
        for (cpu, gpu) in [
            (&on_cpu.obs, &on_gpu.obs),
            (&on_cpu.next_obs, &on_gpu.next_obs),
            (&on_cpu.actions, &on_gpu.actions),
            (&on_cpu.rewards, &on_gpu.rewards),
            (&on_cpu.discounts, &on_gpu.discounts),
            (&on_cpu.weights, &on_gpu.weights),
        ] {
            assert_eq!(gpu.device(), device);
            assert!(gpu.to_device(Device::Cpu).equal(cpu));
        }
    }

    /// Batches queued by one thread and read at once by another (the
    /// prefetch task and the training loop) hold their data: the copies
    /// are ordered before the reads without any wait.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn batches_made_on_one_thread_are_whole_when_another_reads_them() {
        let device = cuda();
        let shape = [4usize, 84, 84];
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let maker = std::thread::spawn(move || {
            let to = Uploader::new(device);
            for k in 0..64u8 {
                let frame = |id: u64, v: u8| Frame {
                    id,
                    data: Codec::Lz4.encode(&[v; 84 * 84]).into(),
                };
                let n = 256;
                let r = SampleResponse {
                    obs_shape: Some(Shape::of(&shape)),
                    codec: Codec::Lz4 as i32,
                    ids: (0..n as u64).collect(),
                    weights: vec![1.0; n],
                    frames: vec![frame(0, k), frame(1, k.wrapping_add(1))],
                    obs_frames: vec![0; n * 4],
                    next_obs_frames: vec![1; n * 4],
                    actions: vec![1; n],
                    rewards: vec![k as f32; n],
                    discounts: vec![0.99; n],
                };
                tx.send(Batch::from_response(r, &shape, 2, &to).unwrap())
                    .unwrap();
            }
        });
        for k in 0..64u8 {
            let b = rx.recv().unwrap();
            let per_obs = (4 * 84 * 84) as i64;
            let sum = |t: &Tensor| t.sum(Kind::Int64).int64_value(&[]);
            assert_eq!(sum(&b.obs), 256 * per_obs * k as i64, "batch {k}");
            assert_eq!(
                sum(&b.next_obs),
                256 * per_obs * k.wrapping_add(1) as i64,
                "batch {k}"
            );
            assert_eq!(b.rewards.double_value(&[255]), k as f64);
        }
        maker.join().unwrap();
    }

    #[test]
    fn bad_batches_are_named() {
        assert!(matches!(
            Batch::from_response(response(3), &[4, 84, 84], 2, &cpu()),
            Err(BatchError::Shape { .. })
        ));
        let mut r = response(3);
        r.rewards.pop();
        assert!(matches!(
            Batch::from_response(r, &[1, 2, 2], 2, &cpu()),
            Err(BatchError::Inconsistent(_))
        ));
        let mut r = response(3);
        r.obs_frames[1] = 5;
        assert!(matches!(
            Batch::from_response(r, &[1, 2, 2], 2, &cpu()),
            Err(BatchError::Frames(_))
        ));
        assert!(matches!(
            Batch::from_response(response(3), &[1, 2, 2], 1, &cpu()),
            Err(BatchError::Action {
                action: 1,
                actions: 1
            })
        ));
        assert_eq!(
            Batch::from_response(response(0), &[1, 2, 2], 2, &cpu()).err(),
            Some(BatchError::Empty)
        );
    }
}
