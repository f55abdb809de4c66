//! The learner: samples batches from the replay server, trains the
//! Q-network, sends new priorities back and publishes versioned weights that
//! actors fetch over gRPC (`apex.v1.Parameters`). It resumes its whole state
//! from the run folder's checkpoint and rides out replay-server restarts.

mod batch_workers;
pub mod dqn;
pub mod io;
mod metrics;
pub mod optim;
pub mod persist;
mod td_loss;
#[cfg(test)]
mod test_rng;
mod throttle;
mod train;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apex_model::{Arch, QNetConfig, Quantiles};
use apex_proto::auth::Token;
use apex_proto::tls::Tls;
use apex_proto::v1::parameters_server::ParametersServer;
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::MAX_MESSAGE_BYTES;
use apex_telemetry::tensorboard::SummaryWriter;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dqn::{Dqn, DqnConfig};
use crate::io::weights::{ParametersService, Published};
use crate::io::{prefetch, priorities, summaries, upload};
use crate::persist::checkpoint::{self, CheckpointError};

#[derive(Debug, Clone)]
pub struct LearnerConfig {
    /// The replay server, e.g. `http://127.0.0.1:50051`.
    pub replay_addr: String,
    pub obs_shape: Vec<usize>,
    pub num_actions: usize,
    pub arch: Arch,
    pub dueling: bool,
    /// QR-DQN's quantile head; none: the expected-value head.
    pub quantiles: Option<Quantiles>,
    pub dqn: DqnConfig,
    pub batch_size: usize,
    /// Updates between weight publications.
    pub publish_every: u64,
    /// Updates between checkpoints (one is also written at the end).
    pub checkpoint_every: u64,
    /// Where `checkpoint.ot` (and `checkpoint.prev.ot`) live; a run
    /// resumes its whole training state from them when present.
    pub run_dir: Option<PathBuf>,
    /// Train on CUDA when it is available.
    pub cuda: bool,
    /// Stop once the update count reaches this (a resumed run counts on
    /// from its checkpoint).
    pub max_updates: Option<u64>,
    /// Batches sampled ahead of the training loop.
    pub prefetch: usize,
    /// Input workers: Sample calls in flight, each answer decoded on its
    /// own thread ([`default_input_workers`] gives the usual count).
    pub input_workers: usize,
    /// Slices each batch is taken in side by side, one thread each (CPU
    /// only; 1: whole; [`dqn::default_batch_slices`] gives the usual count).
    pub batch_slices: usize,
    /// libtorch threads the update runs on, its slices sharing them: read
    /// once where the service starts (`apex_model::threads::torch_threads_here`),
    /// since the count is per thread and the training thread is another.
    pub torch_threads: usize,
    /// Importance-sampling exponent, annealed linearly from start to end
    /// over `beta_anneal_updates` updates.
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_anneal_updates: u64,
    /// Where to write TensorBoard scalars (losses, update rate), if anywhere.
    pub tensorboard: Option<SummaryWriter>,
    /// Sent to the replay server and required of actors fetching weights
    /// (see `apex_proto::auth`); none: calls go without, and anyone may fetch.
    pub token: Option<Token>,
    /// Served to actors and evaluators where it has an identity, and used
    /// for an `https://` replay address.
    pub tls: Tls,
}

impl LearnerConfig {
    /// Beta after `updates` updates.
    pub fn beta(&self, updates: u64) -> f64 {
        let progress = (updates as f64 / self.beta_anneal_updates.max(1) as f64).min(1.0);
        self.beta_start + (self.beta_end - self.beta_start) * progress
    }
}

/// How often a learner on its own writes TensorBoard scalars.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// An update (with the publication or checkpoint that may follow it) that
/// runs this long is stuck: a batch-512 update on a slow CPU takes seconds.
/// Health then reports NOT_SERVING; waiting for data is not an update.
const UPDATE_STUCK_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Device(#[from] apex_model::CudaUnavailable),
    #[error(transparent)]
    Head(#[from] crate::dqn::HeadMismatch),
    #[error("replay server {addr} refused {call} ({code:?}: {message}): {advice}", code = .status.code(), message = .status.message())]
    Replay {
        addr: String,
        call: &'static str,
        status: tonic::Status,
        advice: &'static str,
    },
    #[error("invalid replay address '{0}': use http://host:port")]
    Address(String),
    #[error("serving parameters failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the learner's {task} failed: {message}; the last checkpoint holds the run: fix the cause above and start again with the same --run-dir")]
    Task { task: &'static str, message: String },
    #[error("the network diverged: its weights are not finite after {updates} updates; lower the learning rate (or the gradient-norm clip) and resume from the last checkpoint")]
    Diverged { updates: u64 },
}

impl LearnerError {
    /// A helper task that panicked or was cancelled, as an error.
    pub(crate) fn task(task: &'static str, e: tokio::task::JoinError) -> LearnerError {
        let message = match e.try_into_panic() {
            Ok(panic) => panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "it panicked".into()),
            Err(e) => e.to_string(),
        };
        LearnerError::Task { task, message }
    }
}

/// Input workers for a learner on `device`: one per core on CUDA (up to 8),
/// where the pipeline must keep up with a GPU; one on the CPU, where the
/// update itself needs the cores and a batch of 32 decodes in a millisecond.
pub fn default_input_workers(device: tch::Device) -> usize {
    if device.is_cuda() {
        std::thread::available_parallelism().map_or(4, |n| n.get().min(8))
    } else {
        1
    }
}

/// Live figures for progress reports.
#[derive(Debug, Default)]
pub struct LearnerStats {
    pub updates: AtomicU64,
    pub version: AtomicU64,
    /// Sampled batches dropped because they did not fit the network.
    pub bad_batches: AtomicU64,
    /// Updates skipped because their loss or gradient was not finite.
    pub nonfinite_updates: AtomicU64,
    /// Marks each update, so that health reports one that never ends.
    pub busy: apex_proto::health::Liveness,
    loss_bits: AtomicU64,
    mean_q_bits: AtomicU64,
}

impl LearnerStats {
    pub fn loss(&self) -> f64 {
        f64::from_bits(self.loss_bits.load(Ordering::Relaxed))
    }
    pub fn mean_q(&self) -> f64 {
        f64::from_bits(self.mean_q_bits.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnerReport {
    pub updates: u64,
    pub version: u64,
}

/// Trains until `shutdown` or `max_updates`, serving weights on `listener`.
/// With a run folder it resumes from the newest readable checkpoint there:
/// its update count goes on, and it publishes versions above the ones the
/// checkpoint's learner published.
pub async fn run(
    config: LearnerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    stats: Arc<LearnerStats>,
) -> Result<LearnerReport, LearnerError> {
    metrics::describe();
    let stop = shutdown.child_token();
    let (dqn, resumed_version) = start_dqn(&config)?;
    tracing::info!(
        device = ?dqn.device(),
        input_workers = config.input_workers,
        batch_slices = config.batch_slices,
        torch_threads = config.torch_threads,
        "learner starting"
    );
    let version = resumed_version + 1;
    stats.updates.store(dqn.updates(), Ordering::Relaxed);
    let published = Published::default();
    train::publish(&dqn, version, &published, &stats)?;
    let server = serve_weights(&config, listener, &published, &stats, &stop).await;
    let result = train_on_replay(&config, dqn, version, &published, &stats, &stop).await;
    stop.cancel();
    let _ = server.await;
    result?;
    Ok(LearnerReport {
        updates: stats.updates.load(Ordering::Relaxed),
        version: stats.version.load(Ordering::Relaxed),
    })
}

/// The Q-networks and optimizer on their device, resumed from the run
/// folder's newest readable checkpoint if there is one; with the version
/// the resumed learner had published (0 when new).
fn start_dqn(config: &LearnerConfig) -> Result<(Dqn, u64), LearnerError> {
    let net = QNetConfig::new(
        config.arch,
        &config.obs_shape,
        config.num_actions,
        config.dueling,
    )
    .with_quantiles(config.quantiles);
    config.dqn.check_head(&net)?;
    let device = apex_model::device(config.cuda)?;
    let mut dqn = Dqn::with_batch_workers(
        net,
        config.dqn,
        device,
        config.batch_slices,
        config.torch_threads,
    )?;
    let resumed = match &config.run_dir {
        Some(dir) => checkpoint::resume(dir, &mut dqn)?,
        None => None,
    };
    if let Some(r) = &resumed {
        tracing::info!(
            path = %r.path.display(),
            updates = r.updates,
            version = r.version,
            optimizer_state = r.optimizer,
            "resumed from checkpoint"
        );
    }
    if device.is_cuda() {
        // Batch shapes never change: let cuDNN pick its fastest kernels once.
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok((dqn, resumed.map_or(0, |r| r.version)))
}

/// Serves the published weights and the learner's health (NOT_SERVING once
/// an update is stuck) on `listener` until `stop`.
async fn serve_weights(
    config: &LearnerConfig,
    listener: TcpListener,
    published: &Published,
    stats: &Arc<LearnerStats>,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ParametersServer<ParametersService>>()
        .await;
    tokio::spawn(apex_proto::health::watch(
        health.clone(),
        <ParametersServer<ParametersService> as tonic::server::NamedService>::NAME,
        stats.busy.clone(),
        UPDATE_STUCK_AFTER,
        stop.clone(),
    ));
    let service = ParametersServer::new(ParametersService::new(published.clone()))
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let service = apex_proto::auth::guard(service, config.token.clone());
    tokio::spawn(
        apex_proto::transport::server(&config.tls)
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(
                apex_proto::transport::incoming(listener),
                stop.clone().cancelled_owned(),
            ),
    )
}

/// Trains on batches from the replay server until `stop`, the update
/// budget or a failure, with its helpers: the batch prefetcher, the
/// priority sender and the TensorBoard summaries.
async fn train_on_replay(
    config: &LearnerConfig,
    mut dqn: Dqn,
    version: u64,
    published: &Published,
    stats: &Arc<LearnerStats>,
    stop: &CancellationToken,
) -> Result<(), LearnerError> {
    let addr = config.replay_addr.clone();
    let Some(channel) = apex_proto::connect(&addr, config.token.as_ref(), &config.tls, stop)
        .await
        .map_err(LearnerError::Address)?
    else {
        return Ok(());
    };
    let client = ReplayClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (batch_tx, batch_rx) = mpsc::channel(config.prefetch.max(1));
    let prefetcher = tokio::spawn(prefetch::prefetch(
        client.clone(),
        config.clone(),
        upload::Uploader::new(dqn.device()),
        stats.clone(),
        batch_tx,
        stop.clone(),
    ));
    let summaries = config.tensorboard.clone().map(|writer| {
        tokio::spawn(summaries::write(
            client.clone(),
            addr.clone(),
            writer,
            stats.clone(),
            SUMMARY_EVERY,
            stop.clone(),
        ))
    });
    let (prio_tx, prio_rx) = mpsc::channel(16);
    let prioritizer = {
        let (addr, stop) = (addr.clone(), stop.clone());
        tokio::spawn(async move {
            let sent = priorities::send(client, prio_rx, addr, stop.clone()).await;
            if sent.is_err() {
                stop.cancel();
            }
            sent
        })
    };
    let training = {
        let (config, published, stats) = (config.clone(), published.clone(), stats.clone());
        tokio::task::spawn_blocking(move || {
            let out = train::Outputs {
                priorities: prio_tx,
                published: &published,
                stats: &stats,
                run_dir: config.run_dir.as_deref(),
            };
            train::train(&mut dqn, &config, batch_rx, out, version)
        })
    };
    // Every helper's end is looked at: a failed one is the learner's
    // failure, never a clean stop.
    let outcome = training
        .await
        .unwrap_or_else(|e| Err(LearnerError::task("training loop", e)));
    stop.cancel();
    let prefetched = prefetcher
        .await
        .map_err(|e| LearnerError::task("batch prefetch", e));
    let prioritized = prioritizer
        .await
        .unwrap_or_else(|e| Err(LearnerError::task("priority sender", e)));
    if let Some(task) = summaries {
        let _ = task.await;
    }
    outcome.and(prefetched).and(prioritized)
}
