//! Actors: one process steps many environments, makes one batched forward
//! pass per step for all of them, explores with Ape-X's epsilon ladder,
//! builds n-step transitions and streams them to the replay server, picking
//! up newer weights from the learner without pausing play.

mod acting;
pub mod inference;
mod metrics;
pub mod n_step;
pub mod policy;
pub mod sender;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apex_env::{EnvError, EnvSpec, Environment, GameSummary};
use apex_model::policy::PolicyNet;
use apex_model::{Arch, QNetConfig, Quantiles};
use apex_proto::auth::{Channel, Token};
use apex_proto::tls::Tls;
use apex_proto::transport::{pause_or_stop, Retry};
use apex_proto::v1::parameters_client::ParametersClient;
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{Codec, Frame, Transition};
use apex_proto::weights::{fetch_weights, FetchedWeights};
use apex_proto::MAX_MESSAGE_BYTES;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::acting::Acting;
use crate::inference::Passes;
use crate::policy::Exploration;
use crate::sender::{Sender, StreamSpec};

#[derive(Debug, Clone, PartialEq)]
pub struct ActorConfig {
    /// `http://host:port` of the replay server and of the learner.
    pub replay_addr: String,
    pub learner_addr: String,
    pub env: EnvSpec,
    pub arch: Arch,
    pub dueling: bool,
    /// QR-DQN's quantile head, as the learner's; none: the expected-value head.
    pub quantiles: Option<Quantiles>,
    /// This actor's index among `actor_count`; with `envs` environments
    /// each, environment j of actor i is number i * envs + j on the ladder.
    pub actor_index: usize,
    pub actor_count: usize,
    pub envs: usize,
    /// Epsilon of each environment: a rung of the ladder, maybe reached by decay.
    pub exploration: Exploration,
    pub n_step: usize,
    pub gamma: f32,
    /// Transitions per insert request.
    pub send_batch: usize,
    /// Insert requests sent but not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// Steps (of every environment) between weight refreshes.
    pub weights_refresh_steps: u64,
    /// Stop after this many agent steps over all environments.
    pub max_env_steps: Option<u64>,
    pub seed: u64,
    /// How frames are compressed for the replay (done here, not on the server).
    pub codec: Codec,
    /// Sent with every call to the replay server and the learner.
    pub token: Option<Token>,
    /// For `https://` addresses.
    pub tls: Tls,
    /// The environments are valued in this many groups, one forward pass
    /// each on an inference thread while the stepping thread steps the other
    /// groups (1: the stepping thread runs every pass itself).
    pub inference_groups: usize,
    /// libtorch threads of the forward passes (0: libtorch's default).
    pub torch_threads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("replay server {addr}: {status}")]
    Replay { addr: String, status: tonic::Status },
    #[error("learner {addr}: {status}")]
    Learner { addr: String, status: tonic::Status },
    #[error("invalid address '{0}': use http://host:port")]
    Address(String),
    #[error("an actor needs at least one environment: set --envs 1 or more")]
    NoEnvs,
    #[error("{envs} environments are more than one actor can stream ({most} at most): run more actors with fewer environments each")]
    TooManyEnvs { envs: usize, most: usize },
    #[error("cannot start the inference thread: {0}")]
    Thread(std::io::Error),
    #[error("weights from the learner do not fit this actor's network ({0}): start both with the same environment and network settings")]
    Weights(tch::TchError),
}

/// Live figures for progress reports.
#[derive(Debug, Default)]
pub struct ActorStats {
    pub env_steps: AtomicU64,
    pub episodes: AtomicU64,
    pub transitions_acknowledged: Arc<AtomicU64>,
    pub weights_version: AtomicU64,
    finished: Mutex<VecDeque<GameSummary>>,
}

/// How long a stopping actor waits for its last batches' acknowledgements.
const FINISH_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// Finished games kept for [`ActorStats::take_finished`] when nobody takes them.
const UNREAD_GAMES: usize = 10_000;

impl ActorStats {
    fn record_game(&self, game: GameSummary) {
        self.episodes.fetch_add(1, Ordering::Relaxed);
        let mut finished = self.finished.lock().expect("games lock poisoned");
        if finished.len() == UNREAD_GAMES {
            finished.pop_front();
        }
        finished.push_back(game);
    }

    /// Games finished since the last call (training games: they explore).
    pub fn take_finished(&self) -> Vec<GameSummary> {
        self.finished
            .lock()
            .expect("games lock poisoned")
            .drain(..)
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorReport {
    pub env_steps: u64,
    pub episodes: u64,
}

/// Plays until `shutdown` or `max_env_steps`.
pub async fn run(
    config: ActorConfig,
    shutdown: CancellationToken,
    stats: Arc<ActorStats>,
) -> Result<ActorReport, ActorError> {
    metrics::describe();
    let envs = make_envs(&config)?;
    let obs_shape = envs[0].obs_shape();
    let net = QNetConfig::new(
        config.arch,
        &obs_shape,
        envs[0].num_actions(),
        config.dueling,
    )
    .with_quantiles(config.quantiles);
    let report = |stats: &ActorStats| ActorReport {
        env_steps: stats.env_steps.load(Ordering::Relaxed),
        episodes: stats.episodes.load(Ordering::Relaxed),
    };

    let learner_err = |status| ActorError::Learner {
        addr: config.learner_addr.clone(),
        status,
    };
    let replay_err = |status| ActorError::Replay {
        addr: config.replay_addr.clone(),
        status,
    };
    let Some(learner) = apex_proto::connect(
        &config.learner_addr,
        config.token.as_ref(),
        &config.tls,
        &shutdown,
    )
    .await
    .map_err(ActorError::Address)?
    else {
        return Ok(report(&stats));
    };
    let mut params = ParametersClient::new(learner).max_decoding_message_size(MAX_MESSAGE_BYTES);
    // Play with the learner's network from the first step.
    let mut retry = Retry::new("GetWeights", &config.learner_addr);
    let Some(FetchedWeights {
        version,
        data: weights,
        ..
    }) = first_weights(&mut params, &mut retry, &shutdown)
        .await
        .map_err(learner_err)?
    else {
        return Ok(report(&stats));
    };
    let policy = PolicyNet::from_weights(net, &weights, version).map_err(ActorError::Weights)?;

    let Some(replay) = apex_proto::connect(
        &config.replay_addr,
        config.token.as_ref(),
        &config.tls,
        &shutdown,
    )
    .await
    .map_err(ActorError::Address)?
    else {
        return Ok(report(&stats));
    };
    let replay = ReplayClient::new(replay).max_encoding_message_size(MAX_MESSAGE_BYTES);
    let stop = shutdown.child_token();
    let spec = StreamSpec {
        shape: obs_shape.clone(),
        num_actions: envs[0].num_actions(),
        codec: config.codec,
        actor_id: config.actor_index as u32,
        max_in_flight: config.max_in_flight,
    };
    let sender = Sender::open(
        replay,
        &config.replay_addr,
        spec,
        stats.transitions_acknowledged.clone(),
        shutdown.clone(),
    );

    let (ready_tx, ready_rx) = mpsc::channel(1);
    let refresh = Arc::new(Notify::new());
    let poller = tokio::spawn(poll_weights(
        params,
        retry,
        net,
        version,
        refresh.clone(),
        ready_tx,
        stop.clone(),
    ));

    let threaded = config.inference_groups > 1 && config.envs > 1;
    let passes =
        Passes::start(policy, config.torch_threads, threaded).map_err(ActorError::Thread)?;
    let handle = tokio::runtime::Handle::current();
    let loop_stats = stats.clone();
    let loop_config = config.clone();
    let loop_stop = stop.clone();
    let (sender, outcome) = tokio::task::spawn_blocking(move || {
        let mut acting = Acting {
            config: loop_config,
            envs,
            passes,
            version,
            stats: loop_stats,
        };
        let mut sender = sender;
        let label = [("actor", acting.config.actor_index.to_string())];
        let mut deliver = |frames: Vec<Frame>, batch: Vec<Transition>| {
            let waited = Instant::now();
            send(&handle, &mut sender, frames, batch, &loop_stop)?;
            ::metrics::histogram!(metrics::SEND_WAIT, &label)
                .record(waited.elapsed().as_secs_f64());
            Ok(())
        };
        let mut ready = ready_rx;
        let outcome = acting.run(&mut ready, &refresh, &loop_stop, &mut deliver);
        (sender, outcome)
    })
    .await
    .expect("actor thread panicked");
    stop.cancel();
    let polled = poller.await.expect("weights poller panicked");
    outcome.map_err(replay_err)?;
    finish(sender, &shutdown).await.map_err(replay_err)?;
    polled.map_err(learner_err)?;
    Ok(report(&stats))
}

/// This actor's environments, each seeded by its place among all actors'.
fn make_envs(config: &ActorConfig) -> Result<Vec<Box<dyn Environment>>, ActorError> {
    if config.envs == 0 {
        return Err(ActorError::NoEnvs);
    }
    let envs: Vec<Box<dyn Environment>> = (0..config.envs)
        .map(|j| {
            config.env.make(
                config
                    .seed
                    .wrapping_add((config.actor_index * config.envs + j) as u64),
            )
        })
        .collect::<Result<_, _>>()?;
    // A transition refers back to frames named up to channels + n + 2 steps
    // of each environment earlier; the replay remembers a window of them,
    // half of which old but unchanged screens may use (FRAME_REUSE_AGE).
    let steps_back = envs[0].obs_shape()[0] + config.n_step + 2;
    let room = (apex_proto::STREAM_FRAME_WINDOW - apex_proto::FRAME_REUSE_AGE) as usize;
    if config.envs * steps_back > room {
        return Err(ActorError::TooManyEnvs {
            envs: config.envs,
            most: room / steps_back,
        });
    }
    Ok(envs)
}

/// The learner's first publication, waited for; `None` if `shutdown`
/// comes first.
async fn first_weights(
    params: &mut ParametersClient<Channel>,
    retry: &mut Retry,
    shutdown: &CancellationToken,
) -> Result<Option<FetchedWeights>, tonic::Status> {
    loop {
        let wait = match fetch_weights(params, 0).await {
            Ok(Some(w)) => return Ok(Some(w)),
            Ok(None) => Duration::from_millis(200),
            Err(s) => retry.failed(&s)?,
        };
        if pause_or_stop(wait, shutdown).await {
            return Ok(None);
        }
    }
}

/// Ends the insert stream: at shutdown, what the server acknowledges in a
/// few seconds is kept and the rest goes with the shutdown; otherwise
/// every batch must be acknowledged.
async fn finish(sender: Sender, shutdown: &CancellationToken) -> Result<(), tonic::Status> {
    if !shutdown.is_cancelled() {
        return sender.finish().await;
    }
    match tokio::time::timeout(FINISH_AT_SHUTDOWN, sender.finish()).await {
        Ok(Ok(())) => {}
        Ok(Err(status)) => tracing::debug!(%status, "insert stream ended at shutdown"),
        Err(_) => tracing::debug!("unacknowledged batches left at shutdown"),
    }
    Ok(())
}

/// Fetches newer weights whenever the actor asks, and builds the new
/// network off the actor's thread so play never waits for it.
async fn poll_weights(
    mut params: ParametersClient<Channel>,
    mut retry: Retry,
    net: QNetConfig,
    mut have: u64,
    refresh: Arc<Notify>,
    ready: mpsc::Sender<PolicyNet>,
    stop: CancellationToken,
) -> Result<(), tonic::Status> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = refresh.notified() => {}
        }
        let fetched = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = fetch_weights(&mut params, have) => r,
        };
        let FetchedWeights {
            version,
            data: weights,
            ..
        } = match fetched {
            Ok(Some(w)) => w,
            Ok(None) => continue,
            // The learner may be restarting: keep playing with what we have,
            // and ask again no sooner than the backoff says.
            Err(s) => {
                apex_telemetry::grpc_error("GetWeights", &s);
                if pause_or_stop(retry.failed(&s)?, &stop).await {
                    return Ok(());
                }
                continue;
            }
        };
        retry.succeeded();
        let built =
            tokio::task::spawn_blocking(move || PolicyNet::from_weights(net, &weights, version))
                .await
                .expect("weights loading panicked");
        match built {
            Ok(policy) => {
                have = version;
                if ready.send(policy).await.is_err() {
                    return Ok(());
                }
            }
            Err(e) => {
                return Err(tonic::Status::invalid_argument(format!(
                    "weights do not fit the network: {e}"
                )))
            }
        }
    }
}

/// Sends a batch, waiting for room in the in-flight window. Once shutdown is
/// asked for, the wait ends at once and a failure is no error: the replay
/// server may be stopping too, and waiting on it would hang the shutdown.
fn send(
    handle: &tokio::runtime::Handle,
    sender: &mut Sender,
    frames: Vec<Frame>,
    batch: Vec<Transition>,
    stop: &CancellationToken,
) -> Result<(), tonic::Status> {
    let sent = handle.block_on(async {
        tokio::select! {
            r = sender.send(frames, batch) => r,
            _ = stop.cancelled() => Ok(()),
        }
    });
    match sent {
        Err(status) if stop.is_cancelled() => {
            tracing::debug!(%status, "batch not sent at shutdown");
            Ok(())
        }
        r => r,
    }
}
