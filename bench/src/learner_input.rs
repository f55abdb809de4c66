//! `apex-bench learner-input`: batches per second the learner's input
//! pipeline delivers with no training behind it, for each count of input
//! workers. A real replay server runs in this process on loopback, filled by
//! an actor-like writer with recorded Atari frames; the learner's own
//! prefetch (Sample calls over gRPC, frames decoded into the batch's
//! tensors, the upload to the training device) feeds a consumer that only
//! counts. What a GPU learner can be fed is what this delivers.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apex_learner::io::upload::Uploader;
use apex_learner::{LearnerConfig, LearnerStats};
use apex_model::Arch;
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::InfoRequest;
use apex_proto::MAX_MESSAGE_BYTES;
use apex_replay_server::ReplayConfig;
use clap::Args;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::replay_service::{Frames, Tally, Until};
use apex::services::CodecName;

#[derive(Args)]
pub struct InputBenchArgs {
    /// Frames recorded by `apex env record` (obs.npy: steps x 84 x 84).
    #[arg(long)]
    frames: PathBuf,
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Input-worker counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Transitions in the replay (sampled uniformly enough that a batch's
    /// frames are mostly distinct, as in a replay of millions).
    #[arg(long, default_value_t = 50_000)]
    fill: usize,
    #[arg(long, default_value = "lz4")]
    codec: CodecName,
    /// Seconds per measurement, after a warm-up second.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Upload to the GPU, as a CUDA learner does.
    #[arg(long)]
    cuda: bool,
}

pub async fn run(a: InputBenchArgs) -> Result<()> {
    let device = apex_model::device(a.cuda)?;
    let frames = Arc::new(Frames::load(&a.frames, false)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", listener.local_addr()?);
    let stop_server = CancellationToken::new();
    let mut config = ReplayConfig::in_memory(a.fill, a.batch, 0.6, 0);
    config.store.shards = 8;
    let server = tokio::spawn(apex_replay_server::run(
        config,
        listener,
        stop_server.clone(),
    ));
    let client = ReplayClient::connect(addr.clone())
        .await?
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    crate::replay_service::writer(
        client.clone(),
        frames.clone(),
        a.codec.into(),
        0,
        0,
        Until::Sent(a.fill as u64),
        Arc::new(Tally::default()),
    )
    .await
    .context("filling the replay")?;
    let held = client.clone().info(InfoRequest::default()).await?;
    eprintln!(
        "replay holds {} transitions of {:?}",
        held.into_inner().size,
        frames.shape()
    );
    for &workers in &a.workers {
        let per_sec = measure(&addr, &frames.shape(), &a, workers, device).await?;
        // One line per figure, machine-readable for scripts/bench-learner-input.sh.
        println!(
            "apex_input_batches_per_sec b{}-w{workers}-{} {per_sec:.2}",
            a.batch,
            if device.is_cuda() { "cuda" } else { "cpu" }
        );
    }
    stop_server.cancel();
    server.await??;
    Ok(())
}

/// Batches per second out of the learner's prefetch with `workers` input
/// workers, counted after a warm-up second.
async fn measure(
    addr: &str,
    shape: &[usize],
    a: &InputBenchArgs,
    workers: usize,
    device: tch::Device,
) -> Result<f64> {
    let threads = apex_model::threads::torch_threads_here();
    let config = LearnerConfig {
        replay_addr: addr.to_owned(),
        obs_shape: shape.to_vec(),
        num_actions: crate::replay_service::NUM_ACTIONS as usize,
        arch: Arch::Nature,
        dueling: true,
        quantiles: None,
        dqn: apex_learner::dqn::DqnConfig {
            optimizer: apex_learner::dqn::Optimizer::Adam { eps: 1.5e-4 },
            learning_rate: 1e-4,
            learning_rate_decay: None,
            max_grad_norm: 40.0,
            target_update_every: 250,
            double: true,
            loss: apex_learner::dqn::TdLoss::Huber,
            munchausen: None,
        },
        batch_size: a.batch,
        publish_every: 25,
        checkpoint_every: 5_000,
        run_dir: None,
        cuda: device.is_cuda(),
        max_updates: None,
        prefetch: 2,
        input_workers: workers,
        batch_slices: apex_learner::dqn::default_batch_slices(device, Arch::Nature, threads),
        torch_threads: threads,
        beta_start: 0.4,
        beta_end: 0.4,
        beta_anneal_updates: 1,
        tensorboard: None,
        token: None,
        tls: Default::default(),
    };
    let (tx, mut rx) = mpsc::channel(config.prefetch);
    let stop = CancellationToken::new();
    // The learner's own kind of client (what `apex_learner::run` makes).
    let channel = apex_proto::connect(addr, None, &Default::default(), &stop)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("stopped while connecting")?;
    let client = ReplayClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let stats = Arc::new(LearnerStats::default());
    let pipeline = tokio::spawn(apex_learner::io::prefetch::prefetch(
        client,
        config,
        Uploader::new(device),
        stats.clone(),
        tx,
        stop.clone(),
    ));
    let warm_up = Duration::from_secs(1);
    let measured = Duration::from_secs_f64(a.seconds);
    let started = Instant::now();
    let (mut counted, mut from) = (0u64, None);
    while started.elapsed() < warm_up + measured {
        let batch = rx
            .recv()
            .await
            .context("the input pipeline ended")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if device.is_cuda() {
            // The batch is whole on the device, as the update would find it.
            batch.weights.sum(tch::Kind::Float).double_value(&[]);
        }
        match from {
            None if started.elapsed() >= warm_up => from = Some(Instant::now()),
            Some(_) => counted += 1,
            None => {}
        }
    }
    stop.cancel();
    drop(rx);
    pipeline.await?;
    anyhow::ensure!(
        stats.bad_batches.load(Ordering::Relaxed) == 0,
        "the replay served batches the pipeline dropped"
    );
    let from = from.context("no batch after the warm-up")?;
    Ok(counted as f64 / from.elapsed().as_secs_f64())
}
