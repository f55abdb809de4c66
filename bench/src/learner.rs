//! `apex-bench learner`: the learner's updates/s on the dueling Nature CNN,
//! each update starting from a replay response of compressed frames (as the
//! replay server sends them) and taking the learner's own path: frames
//! decoded and stacked into a batch, then one DQN update. Its peer is
//! `scripts/bench_learner.py`, the same update written in PyTorch; the
//! settings below are that script's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apex_learner::dqn::{Dqn, DqnConfig, Optimizer};
use apex_learner::io::batch::Batch;
use apex_model::{Arch, QNetConfig};
use apex_proto::v1::{Codec, Frame, SampleResponse, Shape};
use clap::Args;
use rand::{Rng, SeedableRng};

use apex::env_cmd::GameArgs;
use apex::services::{CodecName, OptimizerName};

/// Distinct frames the sampled batches draw from.
const POOL_FRAMES: usize = 4096;
/// Responses prepared before timing and used in turn.
const PREPARED_BATCHES: usize = 8;
const N_STEP: usize = 3;
/// Updates before timing: oneDNN picks and caches its kernels on the first passes.
const WARM_UP_UPDATES: usize = 3;

#[derive(Args)]
pub struct LearnerBenchArgs {
    #[command(flatten)]
    game: GameArgs,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "32,512")]
    batch: Vec<usize>,
    /// libtorch intra-op threads, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<i32>,
    /// Optimizers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "adam")]
    optimizer: Vec<OptimizerName>,
    /// How the replay's frames are compressed (what actors send).
    #[arg(long, default_value = "lz4")]
    codec: CodecName,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Take each batch whole on one thread whose libtorch threads split
    /// every operation (the learner before batch slices), instead of in as
    /// many slices side by side as there are threads.
    #[arg(long)]
    whole: bool,
    /// Train on the GPU, as a CUDA learner does (batches uploaded from
    /// pinned buffers); figures are keyed with a `-cuda` suffix.
    #[arg(long)]
    cuda: bool,
}

pub fn run(a: LearnerBenchArgs) -> Result<()> {
    let spec = a.game.spec();
    let (obs_shape, actions) = spec.probe()?;
    anyhow::ensure!(
        obs_shape.len() == 3 && obs_shape[1] >= 36 && obs_shape[2] >= 36,
        "the Nature CNN needs frames of at least 36x36; {} has {obs_shape:?}",
        spec.name()
    );
    let pool = frame_pool(&spec, &obs_shape, a.codec.into())?;
    let net = QNetConfig::new(Arch::Nature, &obs_shape, actions, true);
    let device = apex_model::device(a.cuda)?;
    if device.is_cuda() {
        // As the learner sets it: cuDNN picks its fastest kernels once.
        tch::Cuda::cudnn_set_benchmark(true);
    }
    let suffix = if device.is_cuda() { "-cuda" } else { "" };
    for &optimizer in &a.optimizer {
        for &batch in &a.batch {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let responses: Vec<SampleResponse> = (0..PREPARED_BATCHES)
                .map(|_| response(&pool, &obs_shape, actions, batch, a.codec.into(), &mut rng))
                .collect();
            for &threads in &a.threads {
                let key = format!("b{batch}-t{threads}-{}{suffix}", name(optimizer));
                let m = measure(
                    net,
                    dqn_config(optimizer),
                    &responses,
                    threads,
                    a.whole,
                    device,
                    Duration::from_secs_f64(a.seconds),
                )?;
                // One line per figure, machine-readable for scripts/bench-learner.sh.
                println!("apex_updates_per_sec {key} {:.3}", m.updates_per_sec);
                println!("apex_batch_ms {key} {:.3}", m.batch_ms);
            }
        }
    }
    Ok(())
}

/// The learner's settings as presets/apex-atari.toml has them (Adam), or
/// the Ape-X paper's centred RMSProp.
fn dqn_config(optimizer: OptimizerName) -> DqnConfig {
    let (optimizer, learning_rate) = match optimizer {
        OptimizerName::Adam => (Optimizer::Adam { eps: 1.5e-4 }, 1e-4),
        OptimizerName::Rmsprop => (
            Optimizer::CentredRmsProp {
                decay: 0.95,
                eps: 1.5e-7,
            },
            0.00025 / 4.0,
        ),
    };
    DqnConfig {
        optimizer,
        learning_rate,
        learning_rate_decay: None,
        max_grad_norm: 40.0,
        target_update_every: 2_500,
        double: true,
        loss: apex_learner::dqn::TdLoss::Huber,
        munchausen: None,
    }
}

fn name(o: OptimizerName) -> &'static str {
    match o {
        OptimizerName::Adam => "adam",
        OptimizerName::Rmsprop => "rmsprop",
    }
}

/// Real game frames (the newest frame of each observation of a random
/// game), compressed as actors send them: decoding costs what it costs in
/// training.
fn frame_pool(
    spec: &apex_env::EnvSpec,
    obs_shape: &[usize],
    codec: Codec,
) -> Result<Vec<bytes::Bytes>> {
    let mut env = spec.make(0)?;
    let frame = obs_shape[1] * obs_shape[2];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    env.reset();
    let mut pool = Vec::with_capacity(POOL_FRAMES);
    while pool.len() < POOL_FRAMES {
        let obs = env.obs();
        pool.push(codec.encode(&obs[obs.len() - frame..]).into());
        if env.step(rng.gen_range(0..env.num_actions())).done() {
            env.reset();
        }
    }
    Ok(pool)
}

/// A replay's answer for `batch` n-step transitions at random times: each
/// needs frames t-3..t (obs) and t..t+3 (next obs), each distinct frame sent once.
fn response(
    pool: &[bytes::Bytes],
    obs_shape: &[usize],
    actions: usize,
    batch: usize,
    codec: Codec,
    rng: &mut impl Rng,
) -> SampleResponse {
    let stack = obs_shape[0];
    let mut frames = Vec::new();
    let mut index: HashMap<usize, u32> = HashMap::new();
    let mut place = |t: usize, frames: &mut Vec<Frame>| -> u32 {
        *index.entry(t).or_insert_with(|| {
            frames.push(Frame {
                id: t as u64,
                data: pool[t].clone(),
            });
            frames.len() as u32 - 1
        })
    };
    let (mut obs_frames, mut next_obs_frames) = (Vec::new(), Vec::new());
    for _ in 0..batch {
        let t = rng.gen_range(stack - 1..pool.len() - N_STEP);
        for k in 0..stack {
            obs_frames.push(place(t + 1 + k - stack, &mut frames));
            next_obs_frames.push(place(t + N_STEP + 1 + k - stack, &mut frames));
        }
    }
    SampleResponse {
        obs_shape: Some(Shape::of(obs_shape)),
        codec: codec as i32,
        ids: (0..batch as u64).collect(),
        weights: (0..batch).map(|_| rng.gen_range(0.1..1.0)).collect(),
        frames,
        obs_frames,
        next_obs_frames,
        actions: (0..batch)
            .map(|_| rng.gen_range(0..actions as u32))
            .collect(),
        rewards: (0..batch)
            .map(|_| if rng.gen_bool(0.1) { 1.0 } else { 0.0 })
            .collect(),
        discounts: vec![0.99f32.powi(N_STEP as i32); batch],
    }
}

struct Measured {
    updates_per_sec: f64,
    /// Time per update spent decoding frames and building the batch.
    batch_ms: f64,
}

/// Updates/s of a fresh learner (same seed each time), each update on the
/// next prepared response, decoded in turn on this thread.
fn measure(
    net: QNetConfig,
    config: DqnConfig,
    responses: &[SampleResponse],
    threads: i32,
    whole: bool,
    device: tch::Device,
    duration: Duration,
) -> Result<Measured> {
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let mut dqn = match whole {
        true => Dqn::with_batch_workers(net, config, device, 1, threads as usize)?,
        false => Dqn::new(net, config, device)?,
    };
    let shape: Vec<usize> = net.obs_shape.iter().map(|&d| d as usize).collect();
    let actions = net.actions as usize;
    let to = apex_learner::io::upload::Uploader::new(device);
    let mut step = |i: usize| -> Result<Duration> {
        let t = Instant::now();
        let b = Batch::from_response(responses[i % responses.len()].clone(), &shape, actions, &to)
            .context("the prepared batch does not fit the network")?;
        let built = t.elapsed();
        // Random weights can give no finite loss only by a bug.
        dqn.update(&b).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(built)
    };
    for i in 0..WARM_UP_UPDATES {
        step(i)?;
    }
    let (start, mut n, mut batching) = (Instant::now(), 0usize, Duration::ZERO);
    while start.elapsed() < duration {
        batching += step(n)?;
        n += 1;
    }
    // Each update waits for its loss, but its step is left queued: the
    // figure counts only finished work.
    if let tch::Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
    Ok(Measured {
        updates_per_sec: n as f64 / start.elapsed().as_secs_f64(),
        batch_ms: batching.as_secs_f64() * 1e3 / n as f64,
    })
}
