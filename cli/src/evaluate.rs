//! `apex eval` (a checkpoint's score under one protocol) and `apex play` (a
//! GIF of a checkpoint, or of random play). The evaluation service beside a
//! learner is `services/evaluator.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use apex_env::{EnvSpec, Protocol};
use apex_evaluator::play::{play, write_gif, PlayConfig, Player};
use apex_evaluator::{spec_for, Summary};
use apex_model::policy::PolicyNet;
use clap::{Args, ValueEnum};

use crate::env_cmd::GameArgs;
use crate::services::{at_least_one, net_config, EVAL_SEED_OFFSET, PARALLEL_GAMES};

/// A checkpoint as a policy for `spec`'s game; dueling or not is read from
/// the checkpoint's variable names, a quantile head's count from its meta.
pub fn load_checkpoint(path: &Path, spec: &EnvSpec) -> Result<PolicyNet> {
    let checkpoint = crate::export::read_checkpoint(path)?;
    let dueling = checkpoint
        .tensors
        .iter()
        .any(|(n, _)| n.starts_with("value."));
    let quantiles = apex_learner::persist::checkpoint::saved_quantiles(&checkpoint.tensors);
    let net = net_config(spec, dueling)?.with_quantiles(quantiles);
    PolicyNet::from_weights(net, &checkpoint.bytes, 0).with_context(|| {
        format!(
            "checkpoint {} does not fit {}'s network: evaluate it with the game it was trained on (--game)",
            path.display(),
            spec.name()
        )
    })
}

#[derive(Args)]
pub struct EvalCmdArgs {
    #[command(flatten)]
    pub preset: crate::preset::PresetArg,
    /// A learner checkpoint (checkpoint.ot in a run folder).
    #[arg(long, env = "APEX_CHECKPOINT")]
    checkpoint: PathBuf,
    /// The game and the protocol (--protocol v4|v5) to evaluate under.
    #[command(flatten)]
    game: GameArgs,
    /// Whole games to play.
    #[arg(long, env = "APEX_EPISODES", default_value_t = 10, value_parser = at_least_one::<usize>)]
    episodes: usize,
    /// Probability of a random action.
    #[arg(long, env = "APEX_EPSILON", default_value_t = 0.05)]
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
    #[arg(long, env = "APEX_CHECKPOINT")]
    checkpoint: Option<PathBuf>,
    /// The animated GIF to write (raw screens, one per agent step).
    #[arg(long, env = "APEX_GIF")]
    gif: PathBuf,
    #[command(flatten)]
    game: GameArgs,
    /// Whole games to play.
    #[arg(long, env = "APEX_EPISODES", default_value_t = 1, value_parser = at_least_one::<usize>)]
    episodes: usize,
    #[arg(long, env = "APEX_POLICY", value_enum, default_value = "greedy")]
    policy: PolicyName,
    /// Probability of a random action for --policy greedy.
    #[arg(long, env = "APEX_EPSILON", default_value_t = 0.05)]
    epsilon: f64,
}

pub fn play_cmd(a: PlayArgs) -> Result<()> {
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
