//! `apex`: the command line of the apex actor-learner system.

mod bench;
mod doctor;
mod env_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "apex",
    version,
    about = "Distributed actor-learner (Ape-X) training for Atari"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play and inspect Atari environments.
    #[command(subcommand)]
    Env(env_cmd::EnvCommand),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check that libtorch, CUDA and the ROMs are where apex expects them.
    Doctor(doctor::DoctorArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Env(c) => env_cmd::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Doctor(a) => doctor::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
