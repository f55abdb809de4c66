//! The learner: samples batches from the replay server, trains the
//! Q-network, sends new priorities back and publishes versioned weights that
//! actors fetch over gRPC (`apex.v1.Parameters`).

pub mod batch;
pub mod dqn;
mod metrics;
pub mod rmsprop;
mod summaries;
pub mod weights;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apex_model::{Arch, QNetConfig};
use apex_proto::v1::parameters_server::ParametersServer;
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{SampleRequest, UpdatePrioritiesRequest};
use apex_proto::MAX_MESSAGE_BYTES;
use apex_telemetry::tensorboard::SummaryWriter;
use tch::Device;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

use crate::batch::{Batch, BatchError};
use crate::dqn::{Dqn, DqnConfig};
use crate::weights::{ParametersService, Published};

#[derive(Debug, Clone)]
pub struct LearnerConfig {
    /// The replay server, e.g. `http://127.0.0.1:50051`.
    pub replay_addr: String,
    pub obs_shape: Vec<usize>,
    pub num_actions: usize,
    pub arch: Arch,
    pub dueling: bool,
    pub dqn: DqnConfig,
    pub batch_size: usize,
    /// Updates between weight publications.
    pub publish_every: u64,
    /// Updates between checkpoints (one is also written at the end).
    pub checkpoint_every: u64,
    /// Where `checkpoint.ot` lives; a run resumes from it when present.
    pub run_dir: Option<PathBuf>,
    /// Train on CUDA when it is available.
    pub cuda: bool,
    /// Stop after this many updates.
    pub max_updates: Option<u64>,
    /// Batches sampled ahead of the training loop.
    pub prefetch: usize,
    /// Importance-sampling exponent, annealed linearly from start to end
    /// over `beta_anneal_updates` updates.
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_anneal_updates: u64,
    /// Where to write TensorBoard scalars (losses, update rate), if anywhere.
    pub tensorboard: Option<SummaryWriter>,
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

#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("replay server {addr}: {status}")]
    Replay { addr: String, status: tonic::Status },
    #[error("invalid replay address '{0}': use http://host:port")]
    Address(String),
    #[error("serving parameters failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Live figures for progress reports.
#[derive(Debug, Default)]
pub struct LearnerStats {
    pub updates: AtomicU64,
    pub version: AtomicU64,
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
pub async fn run(
    config: LearnerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
    stats: Arc<LearnerStats>,
) -> Result<LearnerReport, LearnerError> {
    metrics::describe();
    let stop = shutdown.child_token();
    let net = QNetConfig::new(
        config.arch,
        &config.obs_shape,
        config.num_actions,
        config.dueling,
    );
    let device = apex_model::device(config.cuda);
    let mut dqn = Dqn::new(net, config.dqn, device)?;
    let checkpoint = config.run_dir.as_ref().map(|d| d.join("checkpoint.ot"));
    if let Some(path) = checkpoint.as_ref().filter(|p| p.exists()) {
        dqn.load(path)?;
        tracing::info!(path = %path.display(), "resumed from checkpoint");
    }
    tracing::info!(?device, "learner starting");
    let published = Published::default();
    published.publish(1, dqn.updates(), dqn.weights()?);
    stats.version.store(1, Ordering::Relaxed);
    ::metrics::gauge!(metrics::WEIGHTS_VERSION).set(1.0);

    let server = {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<ParametersServer<ParametersService>>()
            .await;
        let service = ParametersServer::new(ParametersService::new(published.clone()))
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let stop = stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                ),
        )
    };

    let addr = config.replay_addr.clone();
    let result = async {
        let Some(channel) = apex_proto::connect(&addr, &stop)
            .await
            .map_err(LearnerError::Address)?
        else {
            return Ok(());
        };
        let client = ReplayClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (batch_tx, batch_rx) = mpsc::channel(config.prefetch.max(1));
        let prefetcher = tokio::spawn(prefetch(
            client.clone(),
            config.clone(),
            dqn.device(),
            stats.clone(),
            batch_tx,
            stop.clone(),
        ));
        let summaries = config.tensorboard.clone().map(|writer| {
            tokio::spawn(summaries::write(
                client.clone(),
                writer,
                stats.clone(),
                SUMMARY_EVERY,
                stop.clone(),
            ))
        });
        let (prio_tx, prio_rx) = mpsc::channel(16);
        let prioritizer = tokio::spawn(send_priorities(client, prio_rx));
        let training = {
            let (config, published, stats, checkpoint) = (
                config.clone(),
                published.clone(),
                stats.clone(),
                checkpoint.clone(),
            );
            tokio::task::spawn_blocking(move || {
                train(
                    &mut dqn,
                    &config,
                    batch_rx,
                    prio_tx,
                    &published,
                    &stats,
                    checkpoint.as_deref(),
                )
            })
        };
        let outcome = training.await.expect("training thread panicked");
        stop.cancel();
        let _ = prefetcher.await;
        let _ = prioritizer.await;
        if let Some(task) = summaries {
            let _ = task.await;
        }
        outcome
    }
    .await;
    stop.cancel();
    let _ = server.await;
    result?;
    Ok(LearnerReport {
        updates: stats.updates.load(Ordering::Relaxed),
        version: stats.version.load(Ordering::Relaxed),
    })
}

fn train(
    dqn: &mut Dqn,
    config: &LearnerConfig,
    mut batches: mpsc::Receiver<Result<Batch, LearnerError>>,
    priorities: mpsc::Sender<UpdatePrioritiesRequest>,
    published: &Published,
    stats: &LearnerStats,
    checkpoint: Option<&std::path::Path>,
) -> Result<(), LearnerError> {
    let save = |dqn: &Dqn| -> Result<(), LearnerError> {
        if let Some(path) = checkpoint {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(tch::TchError::from)?;
            }
            dqn.save(path)?;
            ::metrics::counter!(metrics::CHECKPOINTS).increment(1);
        }
        Ok(())
    };
    let mut version = 1;
    loop {
        if config.max_updates.is_some_and(|m| dqn.updates() >= m) {
            break;
        }
        let waited = Instant::now();
        let batch = match batches.blocking_recv() {
            Some(b) => b?,
            None => break,
        };
        ::metrics::histogram!(metrics::DATA_WAIT).record(waited.elapsed().as_secs_f64());
        let update = dqn.update(&batch);
        let updates = dqn.updates();
        stats.updates.store(updates, Ordering::Relaxed);
        stats
            .loss_bits
            .store(update.loss.to_bits(), Ordering::Relaxed);
        stats
            .mean_q_bits
            .store(update.mean_q.to_bits(), Ordering::Relaxed);
        ::metrics::counter!(metrics::UPDATES).increment(1);
        ::metrics::counter!(metrics::SAMPLED).increment(batch.len() as u64);
        ::metrics::gauge!(metrics::LOSS).set(update.loss);
        ::metrics::gauge!(metrics::MEAN_Q).set(update.mean_q);
        let _ = priorities.blocking_send(UpdatePrioritiesRequest {
            ids: batch.ids,
            priorities: update.td_abs,
        });
        if updates.is_multiple_of(config.publish_every) {
            version += 1;
            published.publish(version, updates, dqn.weights()?);
            stats.version.store(version, Ordering::Relaxed);
            ::metrics::gauge!(metrics::WEIGHTS_VERSION).set(version as f64);
        }
        if updates.is_multiple_of(config.checkpoint_every) {
            save(dqn)?;
        }
    }
    version += 1;
    published.publish(version, dqn.updates(), dqn.weights()?);
    stats.version.store(version, Ordering::Relaxed);
    save(dqn)
}

/// Keeps `prefetch` batches ready, decoded into tensors on `device`, so the
/// training loop waits neither on the network nor on decompression.
async fn prefetch(
    mut client: ReplayClient<Channel>,
    config: LearnerConfig,
    device: Device,
    stats: Arc<LearnerStats>,
    out: mpsc::Sender<Result<Batch, LearnerError>>,
    stop: CancellationToken,
) {
    loop {
        let request = SampleRequest {
            batch_size: config.batch_size as u32,
            beta: config.beta(stats.updates.load(Ordering::Relaxed)) as f32,
        };
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.sample(request) => r,
        };
        let item = match r {
            Ok(response) => {
                let (shape, actions) = (config.obs_shape.clone(), config.num_actions);
                let response = response.into_inner();
                tokio::task::spawn_blocking(move || {
                    Batch::from_response(response, &shape, actions, device)
                })
                .await
                .expect("batch decoding does not panic")
                .map_err(LearnerError::from)
            }
            // Too little data yet, or the server restarting: wait and retry.
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::Unavailable) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
            Err(s) => {
                apex_telemetry::grpc_error("Sample", &s);
                Err(LearnerError::Replay {
                    addr: config.replay_addr.clone(),
                    status: s,
                })
            }
        };
        let failed = item.is_err();
        if out.send(item).await.is_err() || failed {
            return;
        }
    }
}

async fn send_priorities(
    mut client: ReplayClient<Channel>,
    mut updates: mpsc::Receiver<UpdatePrioritiesRequest>,
) {
    while let Some(u) = updates.recv().await {
        if let Err(s) = client.update_priorities(u).await {
            apex_telemetry::grpc_error("UpdatePriorities", &s);
            tracing::debug!(status = %s, "priority update failed");
        }
    }
}
