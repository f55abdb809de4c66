//! `apex evaluator` (the evaluation service next to a learner), `apex eval`
//! (a checkpoint's score under one protocol) and `apex play` (a GIF of a
//! checkpoint, or of random play).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apex_actor::policy::PolicyNet;
use apex_env::{EnvSpec, Protocol};
use apex_evaluator::play::{play, write_gif, PlayConfig, Player};
use apex_evaluator::{spec_for, EnvSteps, EvalStats, EvaluatorConfig, Summary};
use apex_model::{Arch, QNetConfig};
use apex_telemetry::tensorboard::SummaryWriter;
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::env_cmd::GameArgs;
use crate::services::{cancel_on_signals, serve_metrics, NetArgs};

/// Evaluation settings ([eval] in a run's config.toml).
#[derive(Args, Clone, Serialize)]
pub struct EvalArgs {
    /// Evaluation games per protocol per round (0: no evaluation).
    #[arg(long, env = "APEX_EVAL_EPISODES", default_value_t = 10)]
    pub eval_episodes: usize,
    /// Probability of a random action in evaluation games (Ape-X, DQN: 0.05).
    #[arg(long, env = "APEX_EVAL_EPSILON", default_value_t = 0.05)]
    pub eval_epsilon: f64,
    /// Protocols each round plays, comma-separated.
    #[arg(
        long,
        env = "APEX_EVAL_PROTOCOLS",
        value_delimiter = ',',
        default_value = "v4,v5"
    )]
    #[serde(serialize_with = "protocols_text")]
    pub eval_protocols: Vec<Protocol>,
    /// Seconds between the starts of evaluation rounds, at least.
    #[arg(long, env = "APEX_EVAL_EVERY_SECS", default_value_t = 300)]
    pub eval_every_secs: u64,
    /// Most wall time evaluation may use, as a share of one core: a round
    /// that took t seconds waits at least t / budget before the next.
    #[arg(long, env = "APEX_EVAL_BUDGET", default_value_t = 0.1)]
    pub eval_budget: f64,
}

fn protocols_text<S: serde::Serializer>(v: &[Protocol], s: S) -> Result<S::Ok, S::Error> {
    let names: Vec<String> = v.iter().map(Protocol::to_string).collect();
    s.collect_str(&names.join(","))
}

/// Evaluation games use seeds apart from the actors' (which count from the game seed).
const EVAL_SEED_OFFSET: u64 = 1_000_000;
/// Evaluation games stepped together.
const PARALLEL_GAMES: usize = 10;

impl EvalArgs {
    pub fn enabled(&self) -> bool {
        self.eval_episodes > 0 && !self.eval_protocols.is_empty()
    }

    pub fn check(&self) -> Result<()> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.eval_epsilon),
            "--eval-epsilon {} must be in [0, 1]",
            self.eval_epsilon
        );
        anyhow::ensure!(
            self.eval_budget > 0.0,
            "--eval-budget {} must be above 0 (use --eval-episodes 0 to turn evaluation off)",
            self.eval_budget
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn config(
        &self,
        game: &GameArgs,
        net: QNetConfig,
        learner_addr: String,
        env_steps: EnvSteps,
        run_dir: Option<PathBuf>,
        tensorboard: Option<SummaryWriter>,
    ) -> EvaluatorConfig {
        EvaluatorConfig {
            learner_addr,
            env_steps,
            env: game.spec(),
            net,
            protocols: self.eval_protocols.clone(),
            episodes: self.eval_episodes,
            epsilon: self.eval_epsilon,
            every: Duration::from_secs(self.eval_every_secs),
            budget: self.eval_budget,
            parallel: PARALLEL_GAMES,
            seed: game.seed + EVAL_SEED_OFFSET,
            run_dir,
            tensorboard,
            max_rounds: None,
            token: None,
        }
    }
}

/// The network a game is played with.
pub fn net_config(spec: &EnvSpec, dueling: bool) -> Result<QNetConfig> {
    let (shape, actions) = spec.probe()?;
    Ok(QNetConfig::new(
        Arch::for_observation(&shape),
        &shape,
        actions,
        dueling,
    ))
}

/// A checkpoint as a policy for `spec`'s game; dueling or not is read from
/// the checkpoint's variable names.
pub fn load_checkpoint(path: &Path, spec: &EnvSpec) -> Result<PolicyNet> {
    let checkpoint = crate::export::read_checkpoint(path)?;
    let dueling = checkpoint
        .tensors
        .iter()
        .any(|(n, _)| n.starts_with("value."));
    let net = net_config(spec, dueling)?;
    PolicyNet::from_weights(net, &checkpoint.bytes, 0).with_context(|| {
        format!(
            "checkpoint {} does not fit {}'s network: evaluate it with the game it was trained on (--game)",
            path.display(),
            spec.name()
        )
    })
}

#[derive(Args)]
pub struct EvaluatorArgs {
    #[command(flatten)]
    pub preset: crate::preset::PresetArg,
    /// The learner whose weights to evaluate.
    #[arg(long, env = "APEX_LEARNER", default_value = "http://127.0.0.1:50052")]
    learner: String,
    /// The replay server, to tell how many env frames the weights were trained on.
    #[arg(long, env = "APEX_REPLAY")]
    replay: Option<String>,
    #[command(flatten)]
    game: GameArgs,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    eval: EvalArgs,
    /// eval.csv, TensorBoard files and GIFs go here.
    #[arg(long, env = "APEX_RUN_DIR", default_value = "runs/evaluator")]
    run_dir: PathBuf,
    #[arg(long, env = "APEX_METRICS_ADDR", default_value = "0.0.0.0:9100")]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    auth: crate::services::AuthArgs,
}

pub async fn evaluator(a: EvaluatorArgs) -> Result<()> {
    a.eval.check()?;
    anyhow::ensure!(
        a.eval.enabled(),
        "--eval-episodes 0 or no --eval-protocols: nothing to evaluate"
    );
    serve_metrics(a.metrics_addr)?;
    let shutdown = CancellationToken::new();
    cancel_on_signals(shutdown.clone());
    let spec = a.game.spec();
    let net = net_config(&spec, a.net.dueling.into())?;
    let tensorboard = SummaryWriter::create(&a.run_dir)?;
    let steps = a.replay.map_or(EnvSteps::Unknown, EnvSteps::Replay);
    let config = EvaluatorConfig {
        token: a.auth.configure()?,
        ..a.eval.config(
            &a.game,
            net,
            a.learner,
            steps,
            Some(a.run_dir),
            Some(tensorboard),
        )
    };
    apex_evaluator::run(config, shutdown, Arc::new(EvalStats::default())).await?;
    Ok(())
}

#[derive(Args)]
pub struct EvalCmdArgs {
    #[command(flatten)]
    pub preset: crate::preset::PresetArg,
    /// A learner checkpoint (checkpoint.ot in a run folder).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The game and the protocol (--protocol v4|v5) to evaluate under.
    #[command(flatten)]
    game: GameArgs,
    /// Whole games to play.
    #[arg(long, default_value_t = 10)]
    episodes: usize,
    /// Probability of a random action.
    #[arg(long, default_value_t = 0.05)]
    epsilon: f64,
}

/// One line a person reads: the protocol first, since scores differ by it.
pub fn describe(spec: &EnvSpec, protocol: Protocol, epsilon: f64, s: &Summary) -> String {
    format!(
        "{} under {protocol}, {} games, epsilon {epsilon}: mean {:.1}, median {:.1}, std {:.1}, min {}, max {} (raw score)",
        match spec {
            EnvSpec::Atari(c) => c.game.clone(),
            EnvSpec::Catch(_) => "catch".into(),
        },
        s.games,
        s.mean,
        s.median,
        s.std,
        s.min,
        s.max
    )
}

fn eval_spec(game: &GameArgs) -> Result<(EnvSpec, Protocol)> {
    let protocol = game.protocol;
    let spec = spec_for(&game.spec(), protocol)
        .with_context(|| format!("{} has no protocol {protocol}: use v4", game.game))?;
    Ok((spec, protocol))
}

fn stop_on_signal() -> Arc<std::sync::atomic::AtomicBool> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
            });
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    stop
}

pub fn eval(a: EvalCmdArgs) -> Result<()> {
    anyhow::ensure!(a.episodes > 0, "--episodes must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.epsilon),
        "--epsilon {} must be in [0, 1]",
        a.epsilon
    );
    let (spec, protocol) = eval_spec(&a.game)?;
    let net = load_checkpoint(&a.checkpoint, &spec)?;
    let player = Player::Greedy {
        net,
        epsilon: a.epsilon,
    };
    let stop = stop_on_signal();
    let games = play(
        &spec,
        &player,
        &PlayConfig {
            games: a.episodes,
            seed: a.game.seed + EVAL_SEED_OFFSET,
            parallel: PARALLEL_GAMES,
        },
        &|| stop.load(std::sync::atomic::Ordering::Relaxed),
    )?;
    let scores: Vec<f64> = games.iter().map(|g| g.score as f64).collect();
    let s = Summary::of(&scores).context("interrupted before any game finished")?;
    println!("{}", describe(&spec, protocol, a.epsilon, &s));
    let list: Vec<String> = games.iter().map(|g| g.score.to_string()).collect();
    println!("scores: {}", list.join(" "));
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
pub enum PolicyName {
    /// The checkpoint's network, epsilon-greedy.
    Greedy,
    /// Uniformly random actions; needs no checkpoint.
    Random,
}

#[derive(Args)]
pub struct PlayArgs {
    #[command(flatten)]
    pub preset: crate::preset::PresetArg,
    /// A learner checkpoint (checkpoint.ot); not needed with --policy random.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The animated GIF to write (raw screens, one per agent step).
    #[arg(long)]
    gif: PathBuf,
    #[command(flatten)]
    game: GameArgs,
    #[arg(long, default_value_t = 1)]
    episodes: usize,
    #[arg(long, value_enum, default_value = "greedy")]
    policy: PolicyName,
    /// Probability of a random action for --policy greedy.
    #[arg(long, default_value_t = 0.05)]
    epsilon: f64,
}

pub fn play_cmd(a: PlayArgs) -> Result<()> {
    anyhow::ensure!(a.episodes > 0, "--episodes must be at least 1");
    let (spec, protocol) = eval_spec(&a.game)?;
    let player = match (a.policy, &a.checkpoint) {
        (PolicyName::Random, _) => Player::Random,
        (PolicyName::Greedy, Some(path)) => Player::Greedy {
            net: load_checkpoint(path, &spec)?,
            epsilon: a.epsilon,
        },
        (PolicyName::Greedy, None) => anyhow::bail!(
            "--policy greedy plays a trained network: give --checkpoint PATH, or use --policy random"
        ),
    };
    let games = play(
        &spec,
        &player,
        &PlayConfig {
            games: a.episodes,
            seed: a.game.seed,
            parallel: 1,
        },
        &|| false,
    )?;
    let frames = write_gif(&spec, &games, &a.gif)
        .with_context(|| format!("cannot write {}", a.gif.display()))?;
    let scores: Vec<String> = games.iter().map(|g| g.score.to_string()).collect();
    println!(
        "{} under {protocol}: {} game(s), raw scores {}; {frames} screens in {}",
        spec.name(),
        games.len(),
        scores.join(" "),
        a.gif.display()
    );
    Ok(())
}
