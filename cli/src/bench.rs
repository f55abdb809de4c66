//! `apex bench ...`: throughput figures for BENCHMARKS.md.

use std::time::Duration;

use anyhow::Result;
use apex_env::bench;
use clap::{Args, Subcommand};

use crate::env_cmd::GameArgs;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Environment agent steps/s (preprocessing and frame stack, no policy)
    /// and bare emulator frames/s, for each thread count.
    Env(EnvBenchArgs),
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

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Env(a) => {
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
    }
}
