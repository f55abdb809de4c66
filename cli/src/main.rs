//! `apex`: the command line of the apex actor-learner system.

// Without the `torch` feature (the replay server's image) apex links no
// libtorch: the commands that need it are left out (see Cargo.toml).
#[cfg(feature = "torch")]
mod bench;
#[cfg(feature = "torch")]
mod bench_input;
#[cfg(feature = "torch")]
mod bench_learner;
#[cfg(feature = "torch")]
mod doctor;
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
mod env_cmd;
#[cfg(feature = "torch")]
mod evaluate;
#[cfg(feature = "torch")]
mod export;
mod health;
mod plot;
#[cfg_attr(not(feature = "torch"), allow(dead_code))]
mod preset;
#[cfg(feature = "torch")]
mod progress;
#[cfg(feature = "torch")]
mod replay_load;
// Without libtorch only the replay server's part of the services is built;
// the other services' settings stay, so that presets still resolve.
#[cfg_attr(not(feature = "torch"), allow(dead_code, unused_imports))]
mod services;

use clap::{Parser, Subcommand};

/// jemalloc serves Rust's allocations and, exported as the process's
/// `malloc` (tikv-jemallocator's unprefixed symbols, on Linux), libtorch's
/// too: activations and gradients then reuse pages instead of faulting in
/// fresh ones every update (BENCHMARKS.md, "The learner's update").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's boot options. By default it gives freed pages back only while a
/// thread allocates, so a replay server whose insert streams closed kept their
/// frame windows (4 GB for 32 streams of incompressible frames) while idle,
/// as glibc did; background threads give them back within about a second
/// (BENCHMARKS.md, "Allocators"). `MALLOC_CONF` overrides them (where
/// jemalloc stays prefixed, on macOS, `_RJEM_MALLOC_CONF`).
#[used]
#[cfg_attr(
    any(
        target_os = "android",
        target_os = "dragonfly",
        target_vendor = "apple"
    ),
    export_name = "_rjem_malloc_conf"
)]
#[cfg_attr(
    not(any(
        target_os = "android",
        target_os = "dragonfly",
        target_vendor = "apple"
    )),
    export_name = "malloc_conf"
)]
static MALLOC_CONF: Option<&std::ffi::c_char> =
    // SAFETY: a NUL-terminated string that lives as long as the program.
    Some(unsafe { &*c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr() });

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
    #[cfg(feature = "torch")]
    Local(services::LocalArgs),
    /// Needs libtorch: not in this build. Its settings keep presets valid.
    #[cfg(not(feature = "torch"))]
    #[command(hide = true)]
    Local(services::LocalSettings),
    /// Serve the replay (one per training run).
    ReplayServer(services::ReplayArgs),
    /// Train and publish weights (one per training run).
    #[cfg_attr(not(feature = "torch"), command(hide = true))]
    Learner(services::LearnerArgs),
    /// Play and stream transitions (as many as you like, on any machines).
    #[cfg_attr(not(feature = "torch"), command(hide = true))]
    Actor(services::ActorArgs),
    /// Evaluate the learner's newest weights, round after round, under v4 and v5.
    #[cfg(feature = "torch")]
    Evaluator(evaluate::EvaluatorArgs),
    /// Score a checkpoint: whole games under one protocol (--protocol v4|v5).
    #[cfg(feature = "torch")]
    Eval(evaluate::EvalCmdArgs),
    /// Watch a checkpoint (or a random agent) play, as an animated GIF.
    #[cfg(feature = "torch")]
    Play(evaluate::PlayArgs),
    /// Play and inspect Atari environments.
    #[command(subcommand)]
    Env(env_cmd::EnvCommand),
    /// Measure throughput.
    #[cfg(feature = "torch")]
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Ask a replay server or learner whether it is serving (exit 0) or stuck
    /// (exit 1): the probe for container health checks.
    Health(health::HealthArgs),
    /// Check that libtorch, CUDA and the ROMs are where apex expects them.
    #[cfg(feature = "torch")]
    Doctor(doctor::DoctorArgs),
    /// Plot evaluation and training curves of a run folder as a PNG.
    Plot(plot::PlotArgs),
    /// Export a checkpoint's weights as safetensors for PyTorch (see scripts/apex_qnet.py).
    #[cfg(feature = "torch")]
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
    #[cfg(feature = "torch")]
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
        Command::ReplayServer(a) => runtime().block_on(services::replay_server(a)),
        #[cfg(feature = "torch")]
        Command::Local(a) => runtime().block_on(services::local(a, &preset)),
        #[cfg(feature = "torch")]
        Command::Learner(a) => runtime().block_on(services::learner(a, &preset)),
        #[cfg(feature = "torch")]
        Command::Actor(a) => runtime().block_on(services::actor(a)),
        #[cfg(not(feature = "torch"))]
        Command::Local(_) | Command::Learner(_) | Command::Actor(_) => Err(anyhow::anyhow!(
            "this apex was built without libtorch (the replay server's image): run this command \
             from the apex-learner or apex-actor image, or build apex with its default features"
        )),
        #[cfg(feature = "torch")]
        Command::Evaluator(a) => runtime().block_on(evaluate::evaluator(a)),
        #[cfg(feature = "torch")]
        Command::Eval(a) => evaluate::eval(a),
        #[cfg(feature = "torch")]
        Command::Play(a) => evaluate::play_cmd(a),
        Command::Env(c) => env_cmd::run(c),
        #[cfg(feature = "torch")]
        Command::Bench(c) => bench::run(c),
        Command::Health(a) => runtime().block_on(health::run(a)),
        #[cfg(feature = "torch")]
        Command::Doctor(a) => doctor::run(a),
        Command::Plot(a) => plot::run(a),
        #[cfg(feature = "torch")]
        Command::Export(a) => export::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
