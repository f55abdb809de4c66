//! The Q-network shared by actors (inference) and the learner (training):
//! the Nature DQN convolutional torso with an optional dueling head.

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Shape of a Q-network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QNetConfig {
    /// Stacked frames per observation.
    pub frames: i64,
    /// Side of the square frames.
    pub frame_size: i64,
    pub actions: i64,
    /// Separate value and advantage streams (Wang et al. 2016).
    pub dueling: bool,
}

/// Nature CNN: 32x8x8/4, 64x4x4/2, 64x3x3/1, then 512 units.
#[derive(Debug)]
pub struct QNet {
    torso: nn::Sequential,
    value: Option<nn::Sequential>,
    advantage: nn::Sequential,
}

fn conv_out(size: i64) -> i64 {
    let a = (size - 8) / 4 + 1;
    let b = (a - 4) / 2 + 1;
    b - 3 + 1
}

fn head(p: &nn::Path, input: i64, outputs: i64) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(p / "hidden", input, 512, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(p / "out", 512, outputs, Default::default()))
}

impl QNet {
    pub fn new(p: &nn::Path, c: QNetConfig) -> Self {
        let side = conv_out(c.frame_size);
        assert!(
            side > 0,
            "frames of side {} are too small for the Nature CNN",
            c.frame_size
        );
        let flat = 64 * side * side;
        let torso = nn::seq()
            .add(nn::conv2d(
                p / "conv1",
                c.frames,
                32,
                8,
                nn::ConvConfig {
                    stride: 4,
                    ..Default::default()
                },
            ))
            .add_fn(|x| x.relu())
            .add(nn::conv2d(
                p / "conv2",
                32,
                64,
                4,
                nn::ConvConfig {
                    stride: 2,
                    ..Default::default()
                },
            ))
            .add_fn(|x| x.relu())
            .add(nn::conv2d(p / "conv3", 64, 64, 3, Default::default()))
            .add_fn(|x| x.relu().flatten(1, -1));
        let value = c.dueling.then(|| head(&(p / "value"), flat, 1));
        let advantage = head(&(p / "advantage"), flat, c.actions);
        QNet {
            torso,
            value,
            advantage,
        }
    }

    /// Q-values `[B, actions]` for uint8 observations `[B, frames, H, W]`.
    pub fn q_values(&self, obs: &Tensor) -> Tensor {
        let x = obs.to_kind(Kind::Float) / 255.0;
        let h = self.torso.forward(&x);
        let a = self.advantage.forward(&h);
        match &self.value {
            // Subtracting the mean advantage makes the split identifiable.
            Some(v) => v.forward(&h) + &a - a.mean_dim(-1, true, Kind::Float),
            None => a,
        }
    }
}

/// CUDA when asked for and present, else the CPU.
pub fn device(want_cuda: bool) -> Device {
    if want_cuda && tch::Cuda::is_available() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nature_cnn_shapes_and_parameter_count() {
        let vs = nn::VarStore::new(Device::Cpu);
        let c = QNetConfig {
            frames: 4,
            frame_size: 84,
            actions: 4,
            dueling: true,
        };
        let net = QNet::new(&vs.root(), c);
        let obs = Tensor::zeros([3, 4, 84, 84], (Kind::Uint8, Device::Cpu));
        assert_eq!(net.q_values(&obs).size(), vec![3, 4]);
        let params: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        // Torso 77,984 + two 3136->512->k heads.
        assert_eq!(
            params,
            77_984 + (3136 * 512 + 512 + 512 + 1) + (3136 * 512 + 512 + 512 * 4 + 4)
        );
    }

    #[test]
    fn dueling_advantages_are_centred() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let c = QNetConfig {
            frames: 4,
            frame_size: 84,
            actions: 6,
            dueling: true,
        };
        let net = QNet::new(&vs.root(), c);
        let obs = Tensor::randint(255, [2, 4, 84, 84], (Kind::Uint8, Device::Cpu));
        let q = net.q_values(&obs);
        let h = net.torso.forward(&(obs.to_kind(Kind::Float) / 255.0));
        let v = net.value.as_ref().unwrap().forward(&h);
        let diff = (q.mean_dim(-1, true, Kind::Float) - v)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "mean Q must equal V, off by {diff}");
    }
}
