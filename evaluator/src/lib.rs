//! The evaluator, like Ape-X's dedicated evaluator and Stable-Baselines3's
//! `EvalCallback`: it fetches the learner's newest weights and plays
//! separate evaluation games (whole games, epsilon 0.05 by default) under
//! the protocols asked for, v4 and v5, apart from the exploring actors.
//! Each round goes to `eval.csv`, Prometheus (`apex_eval_raw_score{protocol}`)
//! and TensorBoard, and keeps its best game as a GIF. On a small machine
//! evaluation takes CPU from training, so rounds are spaced to stay within
//! a share of one core.

mod metrics;
pub mod play;
pub mod summary;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apex_env::{AtariConfig, EnvSpec, Protocol};
use apex_model::policy::PolicyNet;
use apex_model::QNetConfig;
use apex_proto::transport::{pause_or_stop, Retry};
use apex_proto::v1::parameters_client::ParametersClient;
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::InfoRequest;
use apex_proto::weights::{fetch_weights, FetchedWeights};
use apex_proto::MAX_MESSAGE_BYTES;
use apex_telemetry::tensorboard::SummaryWriter;
use tokio_util::sync::CancellationToken;

use crate::play::{play, write_gif, PlayConfig, PlayError, Player};
pub use crate::summary::Summary;

/// Where the env-frame count of a round comes from.
#[derive(Clone)]
pub enum EnvSteps {
    /// The actors in this process (agent steps).
    Local(Arc<dyn Fn() -> u64 + Send + Sync>),
    /// Transitions the replay server has taken in (`http://host:port`).
    Replay(String),
    Unknown,
}

#[derive(Clone)]
pub struct EvaluatorConfig {
    pub learner_addr: String,
    pub env_steps: EnvSteps,
    /// The game as trained; each protocol's evaluation takes that
    /// protocol's settings (sticky actions, no-ops, life loss) for it.
    pub env: EnvSpec,
    pub net: QNetConfig,
    pub protocols: Vec<Protocol>,
    pub episodes: usize,
    pub epsilon: f64,
    /// Time between the starts of rounds, at least.
    pub every: Duration,
    /// Most wall time evaluation may take, as a fraction of one core:
    /// a round that takes t waits at least t / budget before the next.
    pub budget: f64,
    /// Games stepped together with one batched forward pass.
    pub parallel: usize,
    pub seed: u64,
    /// eval.csv, GIFs of each round's best game (`gifs/`); none: metrics only.
    pub run_dir: Option<PathBuf>,
    pub tensorboard: Option<SummaryWriter>,
    /// Stop after this many rounds.
    pub max_rounds: Option<u64>,
    /// Sent with every call to the learner and the replay server.
    pub token: Option<apex_proto::auth::Token>,
    /// For `https://` addresses.
    pub tls: apex_proto::tls::Tls,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Play(#[from] PlayError),
    #[error("learner {addr}: {status}")]
    Learner { addr: String, status: tonic::Status },
    #[error("invalid address '{0}': use http://host:port")]
    Address(String),
    #[error("weights from the learner do not fit the evaluator's network ({0}): start both with the same game and network settings")]
    Weights(tch::TchError),
    #[error("cannot write evaluation results to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The latest result per protocol, for progress lines.
#[derive(Debug, Default)]
pub struct EvalStats {
    pub rounds: AtomicU64,
    latest: Mutex<Vec<(Protocol, Summary)>>,
}

impl EvalStats {
    pub fn latest(&self) -> Vec<(Protocol, Summary)> {
        self.latest
            .lock()
            .expect("eval stats lock poisoned")
            .clone()
    }

    fn set(&self, protocol: Protocol, s: Summary) {
        let mut latest = self.latest.lock().expect("eval stats lock poisoned");
        latest.retain(|(p, _)| *p != protocol);
        latest.push((protocol, s));
        latest.sort_by_key(|(p, _)| p.to_string());
    }
}

/// The game under `protocol`'s evaluation settings. Small test
/// environments have no protocols: they are evaluated once, as `v4`.
pub fn spec_for(env: &EnvSpec, protocol: Protocol) -> Option<EnvSpec> {
    match env {
        EnvSpec::Atari(c) => {
            let defaults = AtariConfig::new(&c.game, protocol);
            Some(EnvSpec::Atari(AtariConfig {
                protocol,
                noop_max: defaults.noop_max,
                terminal_on_life_loss: defaults.terminal_on_life_loss,
                ..c.clone()
            }))
        }
        EnvSpec::Catch(_) => (protocol == Protocol::V4).then(|| env.clone()),
    }
}

/// Emulator frames per agent step.
pub fn frame_skip(env: &EnvSpec) -> u64 {
    match env {
        EnvSpec::Atari(c) => c.frame_skip as u64,
        EnvSpec::Catch(_) => 1,
    }
}

async fn env_steps(
    source: &EnvSteps,
    token: Option<&apex_proto::auth::Token>,
    tls: &apex_proto::tls::Tls,
) -> Option<u64> {
    match source {
        EnvSteps::Local(f) => Some(f()),
        EnvSteps::Replay(addr) => {
            let channel = apex_proto::transport::endpoint(addr, tls)
                .ok()?
                .connect()
                .await
                .ok()?;
            let channel =
                apex_proto::auth::Channel::new(channel, apex_proto::auth::Credentials::new(token));
            let request = apex_proto::transport::with_deadline(
                InfoRequest::default(),
                apex_proto::transport::UNARY_DEADLINE,
            );
            let info = ReplayClient::new(channel).info(request).await.ok()?;
            Some(info.into_inner().inserted_total)
        }
        EnvSteps::Unknown => None,
    }
}

/// Evaluates every newer publication of the weights, round after round,
/// until `shutdown` (or `max_rounds`).
pub async fn run(
    config: EvaluatorConfig,
    shutdown: CancellationToken,
    stats: Arc<EvalStats>,
) -> Result<(), EvalError> {
    metrics::describe();
    let started = Instant::now();
    let learner_err = |status| EvalError::Learner {
        addr: config.learner_addr.clone(),
        status,
    };
    let Some(channel) = apex_proto::connect(
        &config.learner_addr,
        config.token.as_ref(),
        &config.tls,
        &shutdown,
    )
    .await
    .map_err(EvalError::Address)?
    else {
        return Ok(());
    };
    let mut params = ParametersClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut have = 0;
    let mut rounds = 0;
    let mut retry = Retry::new("GetWeights", &config.learner_addr);
    loop {
        if config.max_rounds.is_some_and(|m| rounds >= m) {
            return Ok(());
        }
        let fetched = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = fetch_weights(&mut params, have) => r,
        };
        let weights = match fetched {
            Ok(Some(w)) => w,
            // Nothing newer since the last round: ask again shortly.
            Ok(None) => {
                if pause_or_stop(Duration::from_secs(1), &shutdown).await {
                    return Ok(());
                }
                continue;
            }
            Err(s) => {
                apex_telemetry::grpc_error("GetWeights", &s);
                let wait = retry.failed(&s).map_err(learner_err)?;
                if pause_or_stop(wait, &shutdown).await {
                    return Ok(());
                }
                continue;
            }
        };
        retry.succeeded();
        have = weights.version;
        let round_start = Instant::now();
        let steps = env_steps(&config.env_steps, config.token.as_ref(), &config.tls).await;
        let done = round(&config, weights, steps, started, &stats, &shutdown).await?;
        if !done {
            return Ok(());
        }
        rounds += 1;
        let took = round_start.elapsed();
        ::metrics::gauge!(metrics::ROUND_SECONDS).set(took.as_secs_f64());
        let wait = config
            .every
            .max(took.div_f64(config.budget.max(1e-3)))
            .saturating_sub(took);
        if pause_or_stop(wait, &shutdown).await {
            return Ok(());
        }
    }
}

/// Plays one round under every protocol; false if interrupted by shutdown.
async fn round(
    config: &EvaluatorConfig,
    weights: FetchedWeights,
    env_steps: Option<u64>,
    started: Instant,
    stats: &EvalStats,
    shutdown: &CancellationToken,
) -> Result<bool, EvalError> {
    let FetchedWeights {
        version,
        updates,
        data,
    } = weights;
    let env_frames = env_steps.map(|s| s * frame_skip(&config.env));
    let net = config.net;
    let policy = tokio::task::spawn_blocking(move || PolicyNet::from_weights(net, &data, version))
        .await
        .expect("loading weights does not panic")
        .map_err(EvalError::Weights)?;
    // Moved into each protocol's blocking task and back: a network is Send, not Sync.
    let mut player = Player::Greedy {
        net: policy,
        epsilon: config.epsilon,
    };
    for &protocol in &config.protocols {
        let Some(spec) = spec_for(&config.env, protocol) else {
            continue;
        };
        let play_config = PlayConfig {
            games: config.episodes,
            seed: config.seed,
            parallel: config.parallel,
        };
        let (games, spec) = {
            let (stop, spec) = (shutdown.clone(), spec.clone());
            let (games, spec, back) = tokio::task::spawn_blocking(move || {
                let games = play(&spec, &player, &play_config, &|| stop.is_cancelled());
                (games, spec, player)
            })
            .await
            .expect("evaluation games do not panic");
            player = back;
            (games?, spec)
        };
        if games.len() < config.episodes {
            return Ok(false);
        }
        let scores: Vec<f64> = games.iter().map(|g| g.score as f64).collect();
        let summary = Summary::of(&scores).expect("at least one game");
        let row = summary.eval_row(
            protocol,
            env_frames,
            started.elapsed().as_secs_f64(),
            version,
            updates,
        );
        tracing::info!(
            %protocol, version, updates, env_frames, games = summary.games,
            mean = summary.mean, median = summary.median, std = summary.std,
            min = summary.min, max = summary.max,
            "evaluation"
        );
        let label = [("protocol", protocol.to_string())];
        ::metrics::gauge!(metrics::RAW_SCORE, &label).set(summary.mean);
        ::metrics::gauge!(metrics::RAW_SCORE_MEDIAN, &label).set(summary.median);
        ::metrics::counter!(metrics::GAMES, &label).increment(games.len() as u64);
        ::metrics::gauge!(metrics::WEIGHTS_VERSION).set(version as f64);
        if let Some(tb) = &config.tensorboard {
            let step = env_steps.unwrap_or(updates) as i64;
            let ep_len = games.iter().map(|g| g.steps as f64).sum::<f64>() / games.len() as f64;
            let mut scalars = vec![
                (format!("eval/{protocol}/mean_reward"), summary.mean),
                (format!("eval/{protocol}/median_reward"), summary.median),
                (format!("eval/{protocol}/mean_ep_length"), ep_len),
            ];
            if Some(&protocol) == config.protocols.first() {
                scalars.push(("eval/mean_reward".into(), summary.mean));
                scalars.push(("eval/mean_ep_length".into(), ep_len));
            }
            for (tag, v) in scalars {
                if let Err(e) = tb.scalar(&tag, v, step) {
                    tracing::warn!(error = %e, "tensorboard write failed");
                }
            }
            let _ = tb.flush();
        }
        if let Some(dir) = &config.run_dir {
            apex_run_folder::append(dir, &row).map_err(|source| EvalError::Write {
                path: dir.join(apex_run_folder::EVAL_CSV),
                source,
            })?;
            let best = games
                .iter()
                .max_by_key(|g| (g.score, std::cmp::Reverse(g.seed)))
                .expect("at least one game")
                .clone();
            let path = dir.join("gifs").join(format!(
                "eval-{protocol}-v{version:06}-score{}.gif",
                best.score
            ));
            let written = tokio::task::spawn_blocking(move || {
                write_gif(&spec, std::slice::from_ref(&best), &path).map(|n| (n, path))
            })
            .await
            .expect("gif writing does not panic");
            match written {
                Ok((n, path)) => {
                    tracing::debug!(path = %path.display(), frames = n, "best game saved")
                }
                Err(e) => tracing::warn!(error = %e, "could not save the best game's gif"),
            }
        }
        stats.set(protocol, summary);
    }
    stats.rounds.fetch_add(1, Ordering::Relaxed);
    Ok(true)
}
