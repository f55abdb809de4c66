//! `apex local`, `apex replay-server`, `apex learner`, `apex actor`: the
//! services on their own (one per machine or container) or all together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apex_actor::policy::Exploration;
use apex_actor::{ActorConfig, ActorStats};
use apex_env::EnvSpec;
use apex_evaluator::{EnvSteps, EvalStats};
use apex_learner::dqn::{DqnConfig, Optimizer};
use apex_learner::{LearnerConfig, LearnerStats};
use apex_model::Arch;
use apex_proto::auth::Token;
use apex_proto::v1::Codec;
use apex_replay_server::limiter::RateLimit;
use apex_replay_server::store::{Layout, StoreConfig};
use apex_replay_server::{Replay, ReplayConfig};
use apex_telemetry::tensorboard::SummaryWriter;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::env_cmd::{GameArgs, OnOff};
use crate::evaluate::{self, EvalArgs};
use crate::preset;
use crate::progress::Reporter;

/// Replay storage settings ([replay] in a preset).
#[derive(Args, Clone, Serialize)]
pub struct StoreArgs {
    /// Transitions held before the oldest are evicted.
    #[arg(long, env = "APEX_REPLAY_CAPACITY")]
    pub capacity: usize,
    /// Transitions needed before the learner may sample.
    #[arg(long, env = "APEX_REPLAY_MIN_SIZE")]
    pub min_size: usize,
    /// Priority exponent (0: uniform sampling).
    #[arg(long, env = "APEX_ALPHA")]
    pub alpha: f64,
    /// Shards, each with its own lock: inserts from many actors go on in parallel.
    #[arg(long, env = "APEX_SHARDS")]
    pub shards: usize,
    /// Sampled per inserted transition, held by the rate limiter (0: no ratio).
    #[arg(long, env = "APEX_SAMPLES_PER_INSERT")]
    pub samples_per_insert: f64,
    /// How far (in sampled transitions) sampling and inserting may drift from the ratio.
    #[arg(long, env = "APEX_ERROR_BUFFER")]
    pub error_buffer: f64,
}

impl StoreArgs {
    fn replay_config(
        &self,
        seed: u64,
        checkpoint: &CheckpointArgs,
        dir: Option<PathBuf>,
    ) -> ReplayConfig {
        ReplayConfig {
            store: StoreConfig {
                capacity: self.capacity,
                shards: self.shards.max(1),
                alpha: self.alpha,
                seed,
            },
            limit: RateLimit {
                min_size: self.min_size,
                samples_per_insert: (self.samples_per_insert > 0.0)
                    .then_some(self.samples_per_insert),
                error_buffer: self.error_buffer,
            },
            sample_timeout: Duration::from_secs(10),
            checkpoint_every: dir.as_ref().and_then(|_| {
                (checkpoint.checkpoint_every_secs > 0)
                    .then(|| Duration::from_secs(checkpoint.checkpoint_every_secs))
            }),
            checkpoint_dir: dir,
            ..ReplayConfig::in_memory(self.capacity, self.min_size, self.alpha, seed)
        }
    }
}

/// Replay persistence (where, how often): deployment settings, not in presets.
#[derive(Args, Clone)]
pub struct CheckpointArgs {
    /// Seconds between replay checkpoints (0: only at shutdown).
    #[arg(long, env = "APEX_REPLAY_CHECKPOINT_EVERY_SECS", default_value_t = 600)]
    pub checkpoint_every_secs: u64,
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    Adam,
    /// Centred RMSProp, no momentum.
    Rmsprop,
}

/// Learner settings ([learner] in a preset).
#[derive(Args, Clone, Serialize)]
pub struct TrainArgs {
    #[arg(long, env = "APEX_BATCH_SIZE")]
    pub batch_size: usize,
    #[arg(long, env = "APEX_OPTIMIZER")]
    pub optimizer: OptimizerName,
    #[arg(long, env = "APEX_LEARNING_RATE")]
    pub learning_rate: f64,
    /// Epsilon of Adam or RMSProp.
    #[arg(long, env = "APEX_OPTIMIZER_EPS")]
    pub optimizer_eps: f64,
    /// RMSProp's moving-average decay.
    #[arg(long, env = "APEX_RMSPROP_DECAY")]
    pub rmsprop_decay: f64,
    #[arg(long, env = "APEX_MAX_GRAD_NORM")]
    pub max_grad_norm: f64,
    #[arg(long, env = "APEX_TARGET_UPDATE_EVERY")]
    pub target_update_every: u64,
    /// Double-DQN targets (off: the target network's max).
    #[arg(long, env = "APEX_DOUBLE")]
    pub double: OnOff,
    /// Importance-sampling exponent at the start, annealed linearly to --beta-end.
    #[arg(long, env = "APEX_BETA_START")]
    pub beta_start: f64,
    #[arg(long, env = "APEX_BETA_END")]
    pub beta_end: f64,
    /// Updates over which beta goes from start to end.
    #[arg(long, env = "APEX_BETA_ANNEAL_UPDATES")]
    pub beta_anneal_updates: u64,
    /// Updates between weight publications.
    #[arg(long, env = "APEX_PUBLISH_EVERY")]
    pub publish_every: u64,
    #[arg(long, env = "APEX_CHECKPOINT_EVERY")]
    pub checkpoint_every: u64,
    /// Stop after this many updates.
    #[arg(long, env = "APEX_MAX_UPDATES")]
    pub max_updates: Option<u64>,
    /// Train on CUDA when available.
    #[arg(long, env = "APEX_CUDA")]
    pub cuda: bool,
}

impl TrainArgs {
    fn dqn(&self) -> DqnConfig {
        DqnConfig {
            optimizer: match self.optimizer {
                OptimizerName::Adam => Optimizer::Adam {
                    eps: self.optimizer_eps,
                },
                OptimizerName::Rmsprop => Optimizer::CentredRmsProp {
                    decay: self.rmsprop_decay,
                    eps: self.optimizer_eps,
                },
            },
            learning_rate: self.learning_rate,
            max_grad_norm: self.max_grad_norm,
            target_update_every: self.target_update_every,
            double: self.double.into(),
        }
    }
}

/// Actor settings ([actor] in a preset).
#[derive(Args, Clone, Serialize)]
pub struct ActArgs {
    /// Environments stepped together by one actor (one batched forward pass).
    #[arg(long, env = "APEX_ENVS")]
    pub envs: usize,
    #[arg(long, env = "APEX_N_STEP")]
    pub n_step: usize,
    #[arg(long, env = "APEX_GAMMA")]
    pub gamma: f32,
    /// Environment i of N explores with base^(1 + alpha i / (N - 1)).
    #[arg(long, env = "APEX_EPSILON_BASE")]
    pub epsilon_base: f64,
    #[arg(long, env = "APEX_EPSILON_ALPHA")]
    pub epsilon_alpha: f64,
    /// Epsilon at the first step, decayed linearly to the ladder's value.
    #[arg(long, env = "APEX_EPSILON_START")]
    pub epsilon_start: f64,
    /// Steps of each environment over which epsilon decays (0: none).
    #[arg(long, env = "APEX_EPSILON_DECAY_STEPS")]
    pub epsilon_decay_steps: u64,
    /// Transitions per insert request.
    #[arg(long, env = "APEX_SEND_BATCH")]
    pub send_batch: usize,
    #[arg(long, env = "APEX_MAX_IN_FLIGHT")]
    pub max_in_flight: usize,
    /// Steps of each environment between weight refreshes (100 = 400 Atari frames).
    #[arg(long, env = "APEX_WEIGHTS_REFRESH_STEPS")]
    pub weights_refresh_steps: u64,
    /// Stop each actor after this many agent steps.
    #[arg(long, env = "APEX_MAX_ENV_STEPS")]
    pub max_env_steps: Option<u64>,
    /// How actors compress frames for the replay.
    #[arg(long, env = "APEX_FRAME_CODEC")]
    pub frame_codec: CodecName,
}

impl ActArgs {
    /// Refuses settings that can never work, before anything starts.
    fn check(&self) -> Result<()> {
        anyhow::ensure!(self.envs > 0, "--envs must be at least 1");
        anyhow::ensure!(self.n_step > 0, "--n-step must be at least 1");
        anyhow::ensure!(self.send_batch > 0, "--send-batch must be at least 1");
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.gamma),
            "--gamma {} must be in [0, 1]",
            self.gamma
        );
        Ok(())
    }
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    None,
    Lz4,
    Zstd,
}

impl From<CodecName> for Codec {
    fn from(c: CodecName) -> Codec {
        match c {
            CodecName::None => Codec::None,
            CodecName::Lz4 => Codec::Lz4,
            CodecName::Zstd => Codec::Zstd,
        }
    }
}

/// The shared secret of every apex service (see apex_proto::auth).
#[derive(Args, Clone, Default)]
pub struct AuthArgs {
    /// A file holding the bearer token every gRPC call must carry; without
    /// it, the variable APEX_TOKEN; with neither, the services are open.
    #[arg(long, env = "APEX_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl AuthArgs {
    pub fn token(&self) -> Result<Option<Token>> {
        Ok(Token::configured(self.token_file.as_deref())?)
    }
}

/// Network settings both the learner and the actors must agree on ([net]).
#[derive(Args, Clone, Serialize)]
pub struct NetArgs {
    /// Dueling value and advantage heads.
    #[arg(long, env = "APEX_DUELING")]
    pub dueling: OnOff,
}

/// `apex local`'s own settings ([local]).
#[derive(Args, Clone, Serialize)]
pub struct LocalSettings {
    /// Actor loops, each with its own environments and batched forward pass.
    #[arg(long, env = "APEX_ACTORS")]
    pub actors: usize,
}

/// What a run resolved, sections as in a preset file.
#[derive(Serialize)]
struct Resolved<'a> {
    game: &'a GameArgs,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<&'a LocalSettings>,
    net: &'a NetArgs,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay: Option<&'a StoreArgs>,
    learner: &'a TrainArgs,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a ActArgs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eval: Option<&'a EvalArgs>,
}

pub fn arch(spec: &EnvSpec) -> Arch {
    match spec {
        EnvSpec::Atari(_) => Arch::Nature,
        EnvSpec::Catch(_) => Arch::Mlp { hidden: 64 },
    }
}

fn learner_config(
    game: &GameArgs,
    net: &NetArgs,
    t: &TrainArgs,
    replay_addr: String,
    run_dir: Option<PathBuf>,
) -> Result<LearnerConfig> {
    let spec = game.spec();
    let (obs_shape, num_actions) = spec.probe()?;
    Ok(LearnerConfig {
        replay_addr,
        obs_shape,
        num_actions,
        arch: arch(&spec),
        dueling: net.dueling.into(),
        dqn: t.dqn(),
        batch_size: t.batch_size,
        publish_every: t.publish_every,
        checkpoint_every: t.checkpoint_every,
        run_dir,
        cuda: t.cuda,
        max_updates: t.max_updates,
        prefetch: 2,
        beta_start: t.beta_start,
        beta_end: t.beta_end,
        beta_anneal_updates: t.beta_anneal_updates,
        tensorboard: None,
        token: None,
    })
}

fn actor_config(
    game: &GameArgs,
    net: &NetArgs,
    a: &ActArgs,
    index: usize,
    count: usize,
    replay: String,
    learner: String,
) -> ActorConfig {
    let env = game.spec();
    ActorConfig {
        replay_addr: replay,
        learner_addr: learner,
        arch: arch(&env),
        env,
        dueling: net.dueling.into(),
        actor_index: index,
        actor_count: count,
        envs: a.envs,
        exploration: Exploration {
            base: a.epsilon_base,
            alpha: a.epsilon_alpha,
            start: a.epsilon_start,
            decay_steps: a.epsilon_decay_steps,
        },
        n_step: a.n_step,
        gamma: a.gamma,
        send_batch: a.send_batch,
        max_in_flight: a.max_in_flight,
        weights_refresh_steps: a.weights_refresh_steps,
        max_env_steps: a.max_env_steps,
        seed: game.seed,
        codec: a.frame_codec.into(),
        token: None,
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("shutting down: finishing in-flight work and writing a checkpoint");
        token.cancel();
    });
}

pub fn serve_metrics(addr: Option<SocketAddr>) -> Result<()> {
    if let Some(addr) = addr {
        apex_telemetry::serve_prometheus(addr)?;
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}: pick a free address with --listen"))
}

#[derive(Args)]
pub struct ReplayArgs {
    #[arg(long, env = "APEX_LISTEN", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// Checkpoints go here, and the newest is restored from here at start.
    #[arg(long, env = "APEX_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    /// Serve Prometheus metrics here.
    #[arg(long, env = "APEX_METRICS_ADDR", default_value = "0.0.0.0:9100")]
    metrics_addr: Option<SocketAddr>,
    #[arg(long, env = "APEX_SEED", default_value_t = 0)]
    seed: u64,
    /// The observation shape every actor must send, channels first (e.g.
    /// 4,84,84); with --num-actions it fixes the replay's layout, so no
    /// insert can set it. Without them the first insert does.
    #[arg(long, env = "APEX_OBS_SHAPE", value_delimiter = ',')]
    obs_shape: Vec<usize>,
    /// The game's action count (Breakout: 4).
    #[arg(long, env = "APEX_NUM_ACTIONS")]
    num_actions: Option<u32>,
    /// How actors compress frames (with --obs-shape).
    #[arg(long, env = "APEX_FRAME_CODEC", default_value = "lz4")]
    frame_codec: CodecName,
    /// Memory all insert streams' frame windows may hold together, in MiB.
    #[arg(long, env = "APEX_STREAM_WINDOW_MB", default_value_t = 4096)]
    stream_window_mb: usize,
    /// Insert streams (actors) served at once, at most.
    #[arg(long, env = "APEX_MAX_INSERT_STREAMS", default_value_t = 1024)]
    max_insert_streams: usize,
    #[command(flatten)]
    auth: AuthArgs,
}

pub async fn replay_server(a: ReplayArgs) -> Result<()> {
    let layout = match (a.obs_shape.is_empty(), a.num_actions) {
        (true, None) => None,
        (false, Some(num_actions)) => Some(Layout {
            shape: a.obs_shape.clone(),
            codec: a.frame_codec.into(),
            num_actions,
        }),
        _ => anyhow::bail!("--obs-shape and --num-actions go together: give both or neither"),
    };
    let token = a.auth.token()?;
    serve_metrics(a.metrics_addr)?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let listener = bind(a.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, authenticated = token.is_some(), "replay server listening");
    let config = ReplayConfig {
        layout,
        stream_window_bytes: a.stream_window_mb << 20,
        max_insert_streams: a.max_insert_streams,
        token,
        ..a.store
            .replay_config(a.seed, &a.checkpoint, a.checkpoint_dir.clone())
    };
    apex_replay_server::run(config, listener, shutdown.cancelled_owned()).await?;
    Ok(())
}

#[derive(Args)]
pub struct LearnerArgs {
    #[arg(long, env = "APEX_LISTEN", default_value = "0.0.0.0:50052")]
    listen: SocketAddr,
    /// The replay server.
    #[arg(long, env = "APEX_REPLAY", default_value = "http://127.0.0.1:50051")]
    replay: String,
    #[command(flatten)]
    game: GameArgs,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    train: TrainArgs,
    /// Checkpoints go here; a run resumes from the checkpoint it finds.
    #[arg(long, env = "APEX_RUN_DIR", default_value = "runs/learner")]
    run_dir: PathBuf,
    #[arg(long, env = "APEX_METRICS_ADDR", default_value = "0.0.0.0:9100")]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    auth: AuthArgs,
}

pub async fn learner(a: LearnerArgs, preset: &str) -> Result<()> {
    serve_metrics(a.metrics_addr)?;
    let resolved = Resolved {
        game: &a.game,
        local: None,
        net: &a.net,
        replay: None,
        learner: &a.train,
        actor: None,
        eval: None,
    };
    preset::write_resolved(&a.run_dir, preset, &resolved)?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let mut config = learner_config(&a.game, &a.net, &a.train, a.replay, Some(a.run_dir.clone()))?;
    config.tensorboard = Some(SummaryWriter::create(&a.run_dir)?);
    config.token = a.auth.token()?;
    let listener = bind(a.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "learner listening");
    let report = apex_learner::run(
        config,
        listener,
        shutdown,
        Arc::new(LearnerStats::default()),
    )
    .await?;
    tracing::info!(
        updates = report.updates,
        version = report.version,
        "learner stopped"
    );
    Ok(())
}

#[derive(Args)]
pub struct ActorArgs {
    #[arg(long, env = "APEX_REPLAY", default_value = "http://127.0.0.1:50051")]
    replay: String,
    #[arg(long, env = "APEX_LEARNER", default_value = "http://127.0.0.1:50052")]
    learner: String,
    /// This actor's index among --actor-count (for its place on the exploration ladder).
    #[arg(long, env = "APEX_ACTOR_INDEX", default_value_t = 0)]
    actor_index: usize,
    #[arg(long, env = "APEX_ACTOR_COUNT", default_value_t = 1)]
    actor_count: usize,
    #[command(flatten)]
    game: GameArgs,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    act: ActArgs,
    #[arg(long, env = "APEX_METRICS_ADDR", default_value = "0.0.0.0:9100")]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    auth: AuthArgs,
}

pub async fn actor(a: ActorArgs) -> Result<()> {
    a.act.check()?;
    anyhow::ensure!(
        a.actor_index < a.actor_count,
        "--actor-index {} must be below --actor-count {}",
        a.actor_index,
        a.actor_count
    );
    serve_metrics(a.metrics_addr)?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let config = ActorConfig {
        token: a.auth.token()?,
        ..actor_config(
            &a.game,
            &a.net,
            &a.act,
            a.actor_index,
            a.actor_count,
            a.replay,
            a.learner,
        )
    };
    let report = apex_actor::run(config, shutdown, Arc::new(ActorStats::default())).await?;
    tracing::info!(
        steps = report.env_steps,
        games = report.episodes,
        "actor stopped"
    );
    Ok(())
}

#[derive(Args)]
pub struct LocalArgs {
    #[command(flatten)]
    game: GameArgs,
    #[command(flatten)]
    local: LocalSettings,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    act: ActArgs,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    #[command(flatten)]
    eval: EvalArgs,
    /// Checkpoints, eval.csv, progress.csv, TensorBoard files and GIFs go here [default: runs/<game>-<protocol>-<time>].
    #[arg(long, env = "APEX_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    #[arg(long, env = "APEX_METRICS_ADDR", default_value = "127.0.0.1:9100")]
    metrics_addr: Option<SocketAddr>,
}

/// Everything in this process, wired over loopback gRPC.
pub async fn local(a: LocalArgs, preset: &str) -> Result<()> {
    let actors = a.local.actors;
    anyhow::ensure!(actors > 0, "--actors must be at least 1");
    a.act.check()?;
    a.eval.check()?;
    let spec = a.game.spec();
    // A missing ROM fails here, before anything starts.
    let (obs_shape, num_actions) = spec.probe()?;
    // Its own secret: nothing else on this machine may talk to its services.
    let token = Some(Token::generate());
    serve_metrics(a.metrics_addr)?;
    let run_dir = a.run_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("runs/{}-{secs}", spec.name()))
    });
    let resolved = Resolved {
        game: &a.game,
        local: Some(&a.local),
        net: &a.net,
        replay: Some(&a.store),
        learner: &a.train,
        actor: Some(&a.act),
        eval: Some(&a.eval),
    };
    preset::write_resolved(&run_dir, preset, &resolved)?;
    let tensorboard = SummaryWriter::create(&run_dir)?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());

    let replay_listener = bind("127.0.0.1:0".parse()?).await?;
    let learner_listener = bind("127.0.0.1:0".parse()?).await?;
    let replay_addr = format!("http://{}", replay_listener.local_addr()?);
    let learner_addr = format!("http://{}", learner_listener.local_addr()?);
    // The replay persists in the run folder: resuming a run keeps its data.
    let replay = Replay::open(&ReplayConfig {
        layout: Some(Layout {
            shape: obs_shape,
            codec: a.act.frame_codec.into(),
            num_actions: num_actions as u32,
        }),
        token: token.clone(),
        ..a.store
            .replay_config(a.game.seed, &a.checkpoint, Some(run_dir.join("replay")))
    })?;
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (replay, stop) = (replay.clone(), shutdown.clone());
        tasks.spawn(async move {
            let r = replay.serve(replay_listener, stop.cancelled_owned()).await;
            ("replay server", r.map_err(anyhow::Error::from))
        });
    }
    let learner_stats = Arc::new(LearnerStats::default());
    {
        let config = learner_config(
            &a.game,
            &a.net,
            &a.train,
            replay_addr.clone(),
            Some(run_dir.clone()),
        )?;
        let config = LearnerConfig {
            token: token.clone(),
            ..config
        };
        let (stop, stats) = (shutdown.clone(), learner_stats.clone());
        tasks.spawn(async move {
            let r = apex_learner::run(config, learner_listener, stop, stats).await;
            ("learner", r.map(|_| ()).map_err(anyhow::Error::from))
        });
    }
    let actor_stats: Vec<Arc<ActorStats>> = (0..actors)
        .map(|_| Arc::new(ActorStats::default()))
        .collect();
    for (i, stats) in actor_stats.iter().enumerate() {
        let config = ActorConfig {
            token: token.clone(),
            ..actor_config(
                &a.game,
                &a.net,
                &a.act,
                i,
                actors,
                replay_addr.clone(),
                learner_addr.clone(),
            )
        };
        let (stop, stats) = (shutdown.clone(), stats.clone());
        tasks.spawn(async move {
            let r = apex_actor::run(config, stop, stats).await;
            ("actor", r.map(|_| ()).map_err(anyhow::Error::from))
        });
    }
    let eval_stats = Arc::new(EvalStats::default());
    if a.eval.enabled() {
        let steps = {
            let actors = actor_stats.clone();
            EnvSteps::Local(Arc::new(move || {
                actors
                    .iter()
                    .map(|a| a.env_steps.load(Ordering::Relaxed))
                    .sum()
            }))
        };
        let config = apex_evaluator::EvaluatorConfig {
            token: token.clone(),
            ..a.eval.config(
                &a.game,
                evaluate::net_config(&spec, a.net.dueling.into())?,
                learner_addr.clone(),
                steps,
                Some(run_dir.clone()),
                Some(tensorboard.clone()),
            )
        };
        let (stop, stats) = (shutdown.clone(), eval_stats.clone());
        tasks.spawn(async move {
            let r = apex_evaluator::run(config, stop, stats).await;
            ("evaluator", r.map_err(anyhow::Error::from))
        });
    }
    println!(
        "apex local: {} ({} actors x {} envs), replay {replay_addr}, learner {learner_addr}, run dir {}{}",
        spec.name(),
        actors,
        a.act.envs,
        run_dir.display(),
        a.metrics_addr.map(|m| format!(", metrics http://{m}/metrics")).unwrap_or_default()
    );
    let progress = tokio::spawn(
        Reporter {
            replay,
            learner: learner_stats,
            actors: actor_stats,
            eval: eval_stats,
            every: Duration::from_secs(a.log_every.max(1)),
            frame_skip: apex_evaluator::frame_skip(&spec),
            run_dir: run_dir.clone(),
            tensorboard: Some(tensorboard),
        }
        .run(shutdown.clone()),
    );

    // Any part that stops (a failure, or actors reaching their step budget)
    // stops the rest; the first failure is the one reported.
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = match joined {
            Ok(done) => done,
            Err(e) => ("a service", Err(anyhow::anyhow!("it panicked: {e}"))),
        };
        if let Err(e) = result {
            if failure.is_none() {
                eprintln!("error: {name} failed: {e:#}; stopping everything");
            }
            failure.get_or_insert(e.context(format!("{name} failed")));
        }
        shutdown.cancel();
    }
    progress.await?;
    if let Some(e) = failure {
        return Err(e);
    }
    println!(
        "stopped cleanly; checkpoint in {}",
        run_dir.join("checkpoint.ot").display()
    );
    Ok(())
}
