//! `apex`: the command line of the apex actor-learner system.

mod bench;
mod doctor;
mod env_cmd;
mod evaluate;
mod export;
mod plot;
mod preset;
mod progress;
mod replay_load;
mod services;

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
    /// Hyperparameters: a preset in presets/ (apex-breakout, apex-breakout-gpu,
    /// dqn-nature) or a .toml file [default: apex-breakout, or apex-breakout-gpu
    /// with --cuda]; flags and APEX_* variables override its values.
    #[arg(long, global = true, env = "APEX_PRESET")]
    preset: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Train on this machine: replay server, learner and actors in one
    /// process over loopback gRPC. Ctrl-C stops it and leaves a checkpoint.
    Local(services::LocalArgs),
    /// Serve the replay (one per training run).
    ReplayServer(services::ReplayArgs),
    /// Train and publish weights (one per training run).
    Learner(services::LearnerArgs),
    /// Play and stream transitions (as many as you like, on any machines).
    Actor(services::ActorArgs),
    /// Evaluate the learner's newest weights, round after round, under v4 and v5.
    Evaluator(evaluate::EvaluatorArgs),
    /// Score a checkpoint: whole games under one protocol (--protocol v4|v5).
    Eval(evaluate::EvalCmdArgs),
    /// Watch a checkpoint (or a random agent) play, as an animated GIF.
    Play(evaluate::PlayArgs),
    /// Play and inspect Atari environments.
    #[command(subcommand)]
    Env(env_cmd::EnvCommand),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Check that libtorch, CUDA and the ROMs are where apex expects them.
    Doctor(doctor::DoctorArgs),
    /// Plot evaluation and training curves of a run folder as a PNG.
    Plot(plot::PlotArgs),
    /// Export a checkpoint's weights as safetensors for PyTorch (see scripts/apex_qnet.py).
    Export(export::ExportArgs),
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = preset::apply::<Cli>(&args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let cli = Cli::parse();
    // What apply() used: --preset, APEX_PRESET, or the default for the device.
    let preset = cli.preset.clone().unwrap_or_else(|| preset::chosen(&args));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = || tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = match cli.command {
        Command::Local(a) => runtime().block_on(services::local(a, &preset)),
        Command::ReplayServer(a) => runtime().block_on(services::replay_server(a)),
        Command::Learner(a) => runtime().block_on(services::learner(a, &preset)),
        Command::Actor(a) => runtime().block_on(services::actor(a)),
        Command::Evaluator(a) => runtime().block_on(evaluate::evaluator(a)),
        Command::Eval(a) => evaluate::eval(a),
        Command::Play(a) => evaluate::play_cmd(a),
        Command::Env(c) => env_cmd::run(c),
        Command::Bench(c) => bench::run(c),
        Command::Doctor(a) => doctor::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Export(a) => export::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
