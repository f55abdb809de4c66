//! `apex local`, `apex replay-server`, `apex learner`, `apex actor`: the
//! services on their own (one per machine or container) or all together
//! (`local.rs`), and `apex evaluator` (`evaluator.rs`). Their settings are
//! in `settings.rs`, and how settings become each service's configuration
//! in `config.rs`.

mod config;
#[cfg(feature = "torch")]
mod evaluator;
#[cfg(feature = "torch")]
mod local;
mod settings;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
#[cfg(feature = "torch")]
use apex_actor::{ActorConfig, ActorStats};
#[cfg(feature = "torch")]
use apex_learner::LearnerStats;
use apex_replay_server::store::Layout;
use apex_replay_server::ReplayConfig;
use apex_telemetry::tensorboard::SummaryWriter;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "torch")]
pub use self::config::net_config;
#[cfg(feature = "torch")]
use self::config::{actor_config, learner_config};
pub use self::config::{EVAL_SEED_OFFSET, PARALLEL_GAMES};
#[cfg(feature = "torch")]
pub use self::evaluator::{evaluator, EvaluatorArgs};
#[cfg(feature = "torch")]
pub use self::local::{local, LocalArgs};
pub use self::settings::*;
use crate::env_cmd::GameArgs;
use crate::preset;

/// Cancels `token` on Ctrl-C or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    on_signals(
        token,
        "shutting down: finishing in-flight work and writing a checkpoint",
    );
}

/// Cancels `token` on Ctrl-C or SIGTERM, saying `what` it stops.
pub(crate) fn on_signals(token: CancellationToken, what: &'static str) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("{what}");
        token.cancel();
    });
}

pub fn serve_metrics(addr: Option<SocketAddr>) -> Result<()> {
    if let Some(addr) = addr {
        apex_telemetry::serve_prometheus(addr)?;
    }
    Ok(())
}

pub(super) async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}: pick a free address with --listen"))
}

#[derive(Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub preset: crate::preset::PresetArg,
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
    #[arg(long, env = "APEX_STREAM_WINDOW_MB", default_value_t = 4096, value_parser = at_least_one::<usize>)]
    stream_window_mb: usize,
    /// Insert streams (actors) served at once, at most.
    #[arg(long, env = "APEX_MAX_INSERT_STREAMS", default_value_t = 1024, value_parser = at_least_one::<usize>)]
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
    let access = a.auth.load()?;
    serve_metrics(a.metrics_addr)?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let listener = bind(a.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, authenticated = access.token.is_some(), tls = access.tls.serves_tls(), "replay server listening");
    let config = ReplayConfig {
        layout,
        stream_window_bytes: a.stream_window_mb << 20,
        max_insert_streams: a.max_insert_streams,
        token: access.token,
        tls: access.tls,
        ..a.store
            .replay_config(a.seed, &a.checkpoint, a.checkpoint_dir.clone())
    };
    apex_replay_server::run(config, listener, shutdown).await?;
    Ok(())
}

#[derive(Args)]
pub struct LearnerArgs {
    #[command(flatten)]
    pub preset: crate::preset::PresetArg,
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

#[cfg(feature = "torch")]
pub async fn learner(a: LearnerArgs, preset: &str) -> Result<()> {
    apex_model::device(a.train.cuda)?;
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
    if let Some(changed) = preset::write_resolved(&a.run_dir, preset, &resolved)? {
        tracing::info!(run_dir = %a.run_dir.display(), changed = changed.len(), "resuming; see resumes.log");
    }
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let mut config = learner_config(&a.game, &a.net, &a.train, a.replay, Some(a.run_dir.clone()))?;
    config.tensorboard = Some(SummaryWriter::create(&a.run_dir)?);
    let access = a.auth.load()?;
    config.token = access.token;
    config.tls = access.tls;
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
    #[command(flatten)]
    pub preset: crate::preset::PresetArg,
    #[arg(long, env = "APEX_REPLAY", default_value = "http://127.0.0.1:50051")]
    replay: String,
    #[arg(long, env = "APEX_LEARNER", default_value = "http://127.0.0.1:50052")]
    learner: String,
    /// This actor's index among --actor-count (for its place on the exploration ladder).
    #[arg(long, env = "APEX_ACTOR_INDEX", default_value_t = 0)]
    actor_index: usize,
    #[arg(long, env = "APEX_ACTOR_COUNT", default_value_t = 1, value_parser = at_least_one::<usize>)]
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

#[cfg(feature = "torch")]
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
    let access = a.auth.load()?;
    let config = ActorConfig {
        token: access.token,
        tls: access.tls,
        ..actor_config(
            &a.game,
            &a.net,
            &a.act,
            a.actor_index,
            a.actor_count,
            a.replay,
            a.learner,
        )?
    };
    let stats = Arc::new(ActorStats::default());
    let report = apex_actor::run(config, shutdown, stats.clone()).await?;
    tracing::info!(
        steps = report.env_steps,
        games = report.episodes,
        acknowledged = stats.transitions_acknowledged.load(Ordering::Relaxed),
        "actor stopped"
    );
    Ok(())
}
