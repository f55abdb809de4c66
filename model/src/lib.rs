//! The Q-network shared by actors (inference) and the learner (training):
//! the Nature DQN convolutional torso with an optional dueling head, which
//! predicts each action's expected return (DQN) or quantiles of its return
//! (QR-DQN).

pub mod policy;
pub mod threads;

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The torso that turns observations into features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Nature DQN: 32x8x8/4, 64x4x4/2, 64x3x3/1 convolutions (Atari frames).
    Nature,
    /// One hidden layer on the flattened observation (small test environments).
    Mlp { hidden: i64 },
}

/// Shape of a Q-network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QNetConfig {
    pub arch: Arch,
    /// Observation shape `[channels, height, width]` (uint8).
    pub obs_shape: [i64; 3],
    pub actions: i64,
    /// Separate value and advantage streams (Wang et al. 2016).
    pub dueling: bool,
    /// Quantiles of each action's return (QR-DQN, Dabney et al. 2018)
    /// instead of its expectation; the Q-value is their mean.
    pub quantiles: Option<Quantiles>,
}

/// How many quantiles of the return a QR-DQN head predicts per action: 2
/// to [`Quantiles::MAX`] (one would be the median, no distribution).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantiles(i64);

/// A quantile count outside 2 to [`Quantiles::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} quantiles: give 2 to 256 (QR-DQN's paper uses 200), or 0 for the expected-value head")]
pub struct BadQuantiles(pub i64);

impl Quantiles {
    /// The head's outputs grow as actions times quantiles.
    pub const MAX: i64 = 256;

    pub fn new(n: i64) -> Result<Quantiles, BadQuantiles> {
        match n {
            2..=Quantiles::MAX => Ok(Quantiles(n)),
            _ => Err(BadQuantiles(n)),
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// Each quantile's fraction, the midpoints (2i + 1) / 2N of N equal
    /// parts of [0, 1] (the paper's tau-hat).
    pub fn fractions(self, device: Device) -> Tensor {
        let n = self.0 as f64;
        Tensor::arange(self.0, (Kind::Float, device)) * (1.0 / n) + 0.5 / n
    }
}

impl Arch {
    /// The network for observations of `shape` (`[channels, height, width]`):
    /// the Nature CNN where its convolutions fit (Atari's 84x84 frames), else
    /// an MLP on the flattened observation (small test environments such as
    /// Catch).
    pub fn for_observation(shape: &[usize]) -> Arch {
        // 8x8 stride 4, then 4x4 stride 2, then 3x3: 36 pixels leave one.
        const NATURE_MIN_SIDE: usize = 36;
        match shape {
            [_, h, w] if *h >= NATURE_MIN_SIDE && *w >= NATURE_MIN_SIDE => Arch::Nature,
            _ => Arch::Mlp { hidden: 64 },
        }
    }
}

impl QNetConfig {
    /// `obs_shape` must have three dimensions.
    pub fn new(arch: Arch, obs_shape: &[usize], actions: usize, dueling: bool) -> Self {
        assert_eq!(
            obs_shape.len(),
            3,
            "observations are [channels, height, width]"
        );
        QNetConfig {
            arch,
            obs_shape: [
                obs_shape[0] as i64,
                obs_shape[1] as i64,
                obs_shape[2] as i64,
            ],
            actions: actions as i64,
            dueling,
            quantiles: None,
        }
    }

    /// The same network with a quantile head (or, with `None`, the
    /// expected-value head).
    pub fn with_quantiles(self, quantiles: Option<Quantiles>) -> Self {
        QNetConfig { quantiles, ..self }
    }

    /// What each action's head predicts: its quantiles, or 1 (the expectation).
    fn outputs_per_action(&self) -> i64 {
        self.quantiles.map_or(1, Quantiles::get)
    }
}

/// A Q-network: a torso, then an advantage head and, if dueling, a value head.
#[derive(Debug)]
pub struct QNet {
    torso: nn::Sequential,
    /// On the CPU, convolutions read their input channels-last (see [`channels_last`]).
    channels_last: bool,
    value: Option<nn::Sequential>,
    advantage: nn::Sequential,
    actions: i64,
    quantiles: Option<Quantiles>,
}

fn conv_out(size: i64) -> i64 {
    let a = (size - 8) / 4 + 1;
    let b = (a - 4) / 2 + 1;
    b - 3 + 1
}

/// Units of the last hidden layer of each head.
const HEAD_HIDDEN: i64 = 512;

fn head(p: &nn::Path, input: i64, hidden: i64, outputs: i64) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(p / "hidden", input, hidden, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(p / "out", hidden, outputs, Default::default()))
}

impl QNet {
    pub fn new(p: &nn::Path, c: QNetConfig) -> Self {
        let [channels, height, width] = c.obs_shape;
        let (torso, features, head_hidden) = match c.arch {
            Arch::Nature => {
                let (h, w) = (conv_out(height), conv_out(width));
                assert!(
                    h > 0 && w > 0,
                    "{height}x{width} frames are too small for the Nature CNN"
                );
                let torso = nn::seq()
                    .add(nn::conv2d(
                        p / "conv1",
                        channels,
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
                (torso, 64 * h * w, HEAD_HIDDEN)
            }
            Arch::Mlp { hidden } => {
                let torso = nn::seq()
                    .add_fn(|x| x.flatten(1, -1))
                    .add(nn::linear(
                        p / "fc",
                        channels * height * width,
                        hidden,
                        Default::default(),
                    ))
                    .add_fn(|x| x.relu());
                (torso, hidden, hidden)
            }
        };
        let per_action = c.outputs_per_action();
        let value = c
            .dueling
            .then(|| head(&(p / "value"), features, head_hidden, per_action));
        let advantage = head(
            &(p / "advantage"),
            features,
            head_hidden,
            c.actions * per_action,
        );
        QNet {
            torso,
            // oneDNN's gain; cuDNN's layouts in float32 were never measured.
            channels_last: matches!(c.arch, Arch::Nature) && p.device() == Device::Cpu,
            value,
            advantage,
            actions: c.actions,
            quantiles: c.quantiles,
        }
    }

    /// The quantile head's count, if the network has one.
    pub fn quantiles(&self) -> Option<Quantiles> {
        self.quantiles
    }

    /// Q-values `[B, actions]` for uint8 observations `[B, frames, H, W]`.
    pub fn q_values(&self, obs: &Tensor) -> Tensor {
        let obs = match self.channels_last {
            true => channels_last(obs),
            false => obs.shallow_clone(),
        };
        self.q_values_scaled(&(obs.to_kind(Kind::Float) / 255.0))
    }

    /// Q-values for observations already scaled to floats in [0, 1], as
    /// [`scale_into`] does: a learner that passes the same observations
    /// through two networks converts them once, into a buffer it keeps.
    pub fn q_values_scaled(&self, x: &Tensor) -> Tensor {
        match self.quantiles {
            None => self.heads(x, 1).squeeze_dim(-1),
            Some(_) => self
                .return_quantiles_scaled(x)
                .mean_dim(-1, false, Kind::Float),
        }
    }

    /// Each action's return quantiles `[B, actions, quantiles]` for scaled
    /// observations (as [`QNet::q_values_scaled`] takes them), in the order of
    /// [`Quantiles::fractions`]; `[B, actions, 1]`, the Q-values, for an
    /// expected-value head.
    pub fn return_quantiles_scaled(&self, x: &Tensor) -> Tensor {
        self.heads(x, self.quantiles.map_or(1, Quantiles::get))
    }

    /// The heads' outputs as `[B, actions, per_action]`.
    fn heads(&self, x: &Tensor, per_action: i64) -> Tensor {
        let h = match self.channels_last {
            true => self.torso.forward(&channels_last(x)),
            false => self.torso.forward(x),
        };
        let a = self
            .advantage
            .forward(&h)
            .view([-1, self.actions, per_action]);
        match &self.value {
            // Subtracting the mean advantage (per quantile) makes the split
            // identifiable.
            Some(v) => v.forward(&h).unsqueeze(1) + &a - a.mean_dim(1, true, Kind::Float),
            None => a,
        }
    }
}

/// Writes uint8 observations as floats in [0, 1] into `out` (the same bits
/// as [`QNet::q_values`] computes), reallocating it only when the shape or
/// device changes: a batch of 512 Atari stacks takes 58 MB as floats, and a
/// fresh allocation that size costs page faults on every update. Stacks of
/// images on the CPU land channels-last, the layout its convolutions read.
pub fn scale_into(obs: &Tensor, out: &mut Tensor) {
    if !out.defined()
        || out.size() != obs.size()
        || out.device() != obs.device()
        || out.kind() != Kind::Float
    {
        *out = match (obs.size().as_slice(), obs.device()) {
            (&[n, c, h, w], Device::Cpu) => {
                Tensor::empty([n, h, w, c], (Kind::Float, Device::Cpu)).permute([0, 3, 1, 2])
            }
            _ => Tensor::empty(obs.size(), (Kind::Float, obs.device())),
        };
    }
    if !scale_on_host(obs, out) {
        out.copy_(obs);
        let _ = out.g_div_scalar_(255.0);
    }
}

/// The CPU case of [`scale_into`] in one pass: contiguous uint8 stacks
/// `[N, C, H, W]` into the channels-last float buffer, each value divided
/// by 255 in float as libtorch divides (the same bits). libtorch copies
/// into that layout element by element and divides in a second pass (6.6%
/// of a batch-32 update's samples on one thread, against PyTorch's 1.5%
/// for its contiguous conversion). False (nothing written) for any other
/// tensors.
fn scale_on_host(obs: &Tensor, out: &Tensor) -> bool {
    let size = obs.size();
    let &[_, c, h, w] = size.as_slice() else {
        return false;
    };
    let total = obs.numel();
    let host_bytes = obs.device() == Device::Cpu && obs.kind() == Kind::Uint8;
    if !host_bytes
        || !obs.is_contiguous()
        || total == 0
        || out.device() != Device::Cpu
        || out.kind() != Kind::Float
        || out.size() != size
        || out.stride() != [h * w * c, 1, w * c, c]
    {
        return false;
    }
    // SAFETY: `obs` holds `total` contiguous bytes and `out` as many floats
    // densely (channels-last: its strides were checked), in two allocations
    // (their kinds differ), and both outlive the slices.
    let (src, dst) = unsafe {
        (
            std::slice::from_raw_parts(obs.data_ptr() as *const u8, total),
            std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, total),
        )
    };
    let (c, plane) = (c as usize, (h * w) as usize);
    for (stack, pixels) in src
        .chunks_exact(c * plane)
        .zip(dst.chunks_exact_mut(c * plane))
    {
        match c {
            // Atari's stacks of four: a fixed width lets the loop vectorize.
            4 => interleave4(stack, pixels, plane),
            _ => {
                for (p, px) in pixels.chunks_exact_mut(c).enumerate() {
                    for (k, v) in px.iter_mut().enumerate() {
                        *v = f32::from(stack[k * plane + p]) / 255.0;
                    }
                }
            }
        }
    }
    true
}

/// `pixels[p * 4 + k] = stack[k * plane + p] / 255` for one stack of four
/// planes, written as zips so that no index needs a bounds check.
fn interleave4(stack: &[u8], pixels: &mut [f32], plane: usize) {
    let (a, rest) = stack.split_at(plane);
    let (b, rest) = rest.split_at(plane);
    let (c, d) = rest.split_at(plane);
    let quads = a.iter().zip(b).zip(c).zip(d);
    for (px, (((&a, &b), &c), &d)) in pixels.chunks_exact_mut(4).zip(quads) {
        px.copy_from_slice(&[a, b, c, d].map(|v| f32::from(v) / 255.0));
    }
}

/// `x` (`[N, C, H, W]`) with its channels innermost in memory, the shape
/// unchanged. oneDNN convolves this layout natively; from the default
/// (channels-first) layout it reorders inputs, outputs and gradients
/// (batch-32 updates in `apex-bench learner`: 8-10% faster with this). The
/// values are the same up to float rounding. Returns `x` itself when it is
/// laid out so already.
pub fn channels_last(x: &Tensor) -> Tensor {
    let size = x.size();
    let &[_, c, h, w] = size.as_slice() else {
        return x.shallow_clone();
    };
    let stride = x.stride();
    if stride[1] == 1 && stride[3] == c && stride[2] == w * c && stride[0] == h * w * c {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Serializes every variable (libtorch's format, names and shapes included).
pub fn save_weights(vs: &nn::VarStore) -> Result<Vec<u8>, tch::TchError> {
    let mut out = std::io::Cursor::new(Vec::new());
    vs.save_to_stream(&mut out)?;
    Ok(out.into_inner())
}

/// Loads weights saved by [`save_weights`] from a network of the same shape;
/// a different shape is an error, not a silent partial load.
pub fn load_weights(vs: &mut nn::VarStore, bytes: &[u8]) -> Result<(), tch::TchError> {
    vs.load_from_stream(std::io::Cursor::new(bytes))
}

/// Why `--cuda` cannot be honoured; shared by the learner and `apex doctor`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cuda was asked for but libtorch sees no usable GPU: check that nvidia-smi works with a driver for CUDA 13 (580 or newer), that the container runs with the NVIDIA runtime (docker --gpus all, the compose GPU override, Kubernetes' nvidia.com/gpu), and that this is the learner image (the actor image has no CUDA); `apex doctor --require-cuda` checks; to train on the CPU leave --cuda off (--cuda=false)")]
pub struct CudaUnavailable;

/// The training device: CUDA when asked for, else the CPU. A request for
/// CUDA where none is usable is an error, never a silent CPU run: a GPU
/// preset on a CPU makes about one update a second.
pub fn device(want_cuda: bool) -> Result<Device, CudaUnavailable> {
    match (want_cuda, tch::Cuda::is_available()) {
        (false, _) => Ok(Device::Cpu),
        (true, true) => Ok(Device::Cuda(0)),
        (true, false) => Err(CudaUnavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atari_frames_get_the_nature_cnn_and_small_grids_an_mlp() {
        assert_eq!(Arch::for_observation(&[4, 84, 84]), Arch::Nature);
        assert_eq!(Arch::for_observation(&[4, 36, 36]), Arch::Nature);
        assert_eq!(Arch::for_observation(&[1, 10, 5]), Arch::Mlp { hidden: 64 });
        assert_eq!(
            Arch::for_observation(&[4, 35, 84]),
            Arch::Mlp { hidden: 64 }
        );
        assert_eq!(Arch::for_observation(&[8]), Arch::Mlp { hidden: 64 });
    }

    #[test]
    fn cuda_is_given_only_where_it_is_usable() {
        assert_eq!(device(false), Ok(Device::Cpu));
        let expected = if tch::Cuda::is_available() {
            Ok(Device::Cuda(0))
        } else {
            Err(CudaUnavailable)
        };
        assert_eq!(device(true), expected);
    }

    #[test]
    fn nature_cnn_shapes_and_parameter_count() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = QNet::new(
            &vs.root(),
            QNetConfig::new(Arch::Nature, &[4, 84, 84], 4, true),
        );
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
    fn weights_round_trip_and_shape_mismatches_fail() {
        let c = QNetConfig::new(Arch::Mlp { hidden: 8 }, &[1, 4, 4], 3, true);
        let a = nn::VarStore::new(Device::Cpu);
        let net_a = QNet::new(&a.root(), c);
        let mut b = nn::VarStore::new(Device::Cpu);
        let net_b = QNet::new(&b.root(), c);
        let obs = Tensor::randint(255, [2, 1, 4, 4], (Kind::Uint8, Device::Cpu));
        assert!(!net_a.q_values(&obs).equal(&net_b.q_values(&obs)));
        load_weights(&mut b, &save_weights(&a).unwrap()).unwrap();
        assert!(net_a.q_values(&obs).equal(&net_b.q_values(&obs)));
        let mut other = nn::VarStore::new(Device::Cpu);
        let _ = QNet::new(
            &other.root(),
            QNetConfig::new(Arch::Mlp { hidden: 9 }, &[1, 4, 4], 3, true),
        );
        assert!(load_weights(&mut other, &save_weights(&a).unwrap()).is_err());
    }

    /// Weights come over the network and from disk: damaged bytes must be
    /// an error (or, where the format cannot tell, some weights), never an
    /// abort of the process inside libtorch.
    #[test]
    fn damaged_weights_fail_to_load_without_aborting() {
        let c = QNetConfig::new(Arch::Mlp { hidden: 8 }, &[1, 4, 4], 3, true);
        let a = nn::VarStore::new(Device::Cpu);
        let _ = QNet::new(&a.root(), c);
        let good = save_weights(&a).unwrap();
        let mut b = nn::VarStore::new(Device::Cpu);
        let _ = QNet::new(&b.root(), c);
        // A fixed xorshift: the same damage every run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut refused = 0;
        for round in 0..400 {
            let mut bad = good.clone();
            if round % 2 == 0 {
                bad.truncate(next() as usize % good.len());
            } else {
                for _ in 0..1 + next() % 4 {
                    let at = next() as usize % bad.len();
                    bad[at] ^= 1 + (next() % 255) as u8;
                }
            }
            refused += usize::from(load_weights(&mut b, &bad).is_err());
        }
        assert!(
            refused >= 200,
            "every truncated file must be refused: {refused}"
        );
        for bytes in [&[][..], b"PK\x03\x04", &[0xffu8; 64][..]] {
            assert!(load_weights(&mut b, bytes).is_err());
        }
    }

    #[test]
    fn scaled_observations_give_the_same_q_values() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = QNet::new(
            &vs.root(),
            QNetConfig::new(Arch::Nature, &[4, 84, 84], 4, true),
        );
        let mut buffer = Tensor::new();
        for n in [3, 3, 2] {
            let obs = Tensor::randint(256, [n, 4, 84, 84], (Kind::Uint8, Device::Cpu));
            scale_into(&obs, &mut buffer);
            assert!(buffer.equal(&(obs.to_kind(Kind::Float) / 255.0)));
            assert!(net.q_values_scaled(&buffer).equal(&net.q_values(&obs)));
        }
    }

    #[test]
    fn scaling_matches_libtorch_for_any_stack_and_layout() {
        let mut buffer = Tensor::new();
        for shape in [[2, 3, 5, 7], [1, 1, 4, 4], [3, 4, 9, 2], [0, 4, 84, 84]] {
            let obs = Tensor::randint(256, shape, (Kind::Uint8, Device::Cpu));
            scale_into(&obs, &mut buffer);
            assert_eq!(buffer.size(), shape.to_vec());
            assert!(
                buffer.equal(&(obs.to_kind(Kind::Float) / 255.0)),
                "{shape:?}"
            );
        }
        // Not contiguous (a transposed view): libtorch's copy takes it.
        let obs = Tensor::randint(256, [2, 4, 6, 6], (Kind::Uint8, Device::Cpu)).transpose(2, 3);
        scale_into(&obs, &mut buffer);
        assert!(buffer.equal(&(obs.to_kind(Kind::Float) / 255.0)));
    }

    #[test]
    fn mlp_for_small_observations() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = QNet::new(
            &vs.root(),
            QNetConfig::new(Arch::Mlp { hidden: 32 }, &[1, 10, 5], 3, false),
        );
        let obs = Tensor::zeros([7, 1, 10, 5], (Kind::Uint8, Device::Cpu));
        assert_eq!(net.q_values(&obs).size(), vec![7, 3]);
    }

    #[test]
    fn quantile_counts_outside_two_to_the_maximum_are_refused() {
        for n in [-1, 0, 1, Quantiles::MAX + 1] {
            assert_eq!(Quantiles::new(n), Err(BadQuantiles(n)));
        }
        assert_eq!(Quantiles::new(2).unwrap().get(), 2);
        let f = Vec::<f32>::try_from(Quantiles::new(4).unwrap().fractions(Device::Cpu)).unwrap();
        assert_eq!(f, vec![0.125, 0.375, 0.625, 0.875]);
    }

    /// The quantile head: actions times quantiles outputs, Q-values their
    /// mean, and (dueling) each quantile's advantages centred on the value
    /// stream's quantile.
    #[test]
    fn a_quantile_head_predicts_quantiles_whose_mean_is_the_q_value() {
        tch::manual_seed(2);
        let n = Quantiles::new(5).unwrap();
        for dueling in [true, false] {
            let vs = nn::VarStore::new(Device::Cpu);
            let c = QNetConfig::new(Arch::Nature, &[4, 84, 84], 6, dueling).with_quantiles(Some(n));
            let net = QNet::new(&vs.root(), c);
            let obs = Tensor::randint(255, [3, 4, 84, 84], (Kind::Uint8, Device::Cpu));
            let x = obs.to_kind(Kind::Float) / 255.0;
            let z = net.return_quantiles_scaled(&x);
            assert_eq!(z.size(), vec![3, 6, 5]);
            let q = net.q_values(&obs);
            assert_eq!(q.size(), vec![3, 6]);
            let off = (q - z.mean_dim(-1, false, Kind::Float))
                .abs()
                .max()
                .double_value(&[]);
            assert!(off < 1e-5, "Q must be the quantiles' mean, off by {off}");
            let params: i64 = vs
                .trainable_variables()
                .iter()
                .map(|t| t.numel() as i64)
                .sum();
            let value = if dueling {
                3136 * 512 + 512 + 512 * 5 + 5
            } else {
                0
            };
            assert_eq!(params, 77_984 + value + (3136 * 512 + 512 + 512 * 30 + 30));
            if dueling {
                let h = net.torso.forward(&x);
                let v = net.value.as_ref().unwrap().forward(&h);
                let off = (z.mean_dim(1, false, Kind::Float) - v)
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(
                    off < 1e-5,
                    "each quantile's mean over actions must be V's, off by {off}"
                );
            }
        }
    }

    #[test]
    fn dueling_advantages_are_centred() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let net = QNet::new(
            &vs.root(),
            QNetConfig::new(Arch::Nature, &[4, 84, 84], 6, true),
        );
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
