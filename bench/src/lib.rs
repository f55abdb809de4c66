//! `apex-bench`: the throughput harnesses behind BENCHMARKS.md, kept out of
//! the production binary. Each prints machine-readable lines for the
//! side-by-side scripts in scripts/. Commands that need a replay server
//! process start the `apex` binary built beside this one. The command line
//! lives here, not in `main`, so that the documentation's `apex-bench`
//! lines are parsed by the same parser in tests.

pub mod actor;
pub mod learner;
pub mod learner_input;
pub mod replay;
pub mod replay_service;

use std::time::Duration;

use anyhow::Result;
use apex::env_cmd::GameArgs;
use apex_env::bench;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "apex-bench",
    version,
    about = "Measure apex's throughput (BENCHMARKS.md)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Environment agent steps/s (preprocessing and frame stack, no policy)
    /// and bare emulator frames/s, for each thread count.
    Env(EnvBenchArgs),
    /// The actor loop (environments, batched inference, streaming to a live
    /// replay server over loopback gRPC) against stepping the same
    /// environments alone, both on one stepping thread (the actor's forward
    /// passes run on its inference thread).
    Actor(actor::ActorBenchArgs),
    /// Prioritized replay in-process: sampling (batches with importance
    /// weights) and priority updates per second, at each store size.
    Replay(replay::ReplayBenchArgs),
    /// A replay server process under actor-like writers and a sampler over
    /// loopback gRPC: inserts/s, samples/s, insert latency, memory per transition.
    ReplayService(replay_service::ReplayServiceBenchArgs),
    /// DQN updates/s of the learner (dueling Nature CNN, batches decoded from
    /// compressed frames) for each batch size, thread count and optimizer.
    Learner(learner::LearnerBenchArgs),
    /// Batches/s the learner's input pipeline (Sample calls, decoding, the
    /// upload) delivers from a replay server with no training, for each
    /// count of input workers.
    LearnerInput(learner_input::InputBenchArgs),
}

#[derive(Args)]
pub struct EnvBenchArgs {
    #[command(flatten)]
    game: GameArgs,
    /// Thread counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

/// Runs one harness to the end.
pub fn run(cli: Cli) -> Result<()> {
    let runtime = || tokio::runtime::Runtime::new().expect("tokio runtime");
    match cli.command {
        BenchCommand::Env(a) => env(a),
        BenchCommand::Actor(a) => runtime().block_on(actor::run(a)),
        BenchCommand::Replay(a) => replay::replay(a),
        BenchCommand::ReplayService(a) => runtime().block_on(replay_service::run(a)),
        BenchCommand::Learner(a) => learner::run(a),
        BenchCommand::LearnerInput(a) => runtime().block_on(learner_input::run(a)),
    }
}

fn env(a: EnvBenchArgs) -> Result<()> {
    let config = a.game.config();
    let duration = Duration::from_secs_f64(a.seconds);
    for &t in &a.threads {
        let raw = bench::raw_frames_per_sec(&config, t, duration)?;
        let env = bench::env_steps_per_sec(&config, t, duration)?;
        // One line per figure, machine-readable for the bench script.
        println!("apex_raw_ale_frames_per_sec threads={t} {raw:.0}");
        println!("apex_env_steps_per_sec threads={t} {env:.0}");
    }
    Ok(())
}
