//! The command line's grammar: every command and its settings. The `apex`
//! binary parses it and hands each command to the code that runs it;
//! presets are checked against it (`preset.rs`).

use clap::{Parser, Subcommand};

#[cfg(feature = "torch")]
use crate::{doctor, evaluate, export};
use crate::{env_cmd, health, plot, services};

#[derive(Parser)]
#[command(
    name = "apex",
    version,
    about = "Distributed actor-learner (Ape-X) training for Atari"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Train on this machine: replay server, learner and actors in one
    /// process over loopback gRPC. Ctrl-C stops it and leaves a checkpoint;
    /// so does a budget (--total-env-steps, --minutes), then evaluates it.
    #[cfg(feature = "torch")]
    #[command(display_order = 1)]
    Local(services::LocalArgs),
    /// Needs libtorch: not in this build. Its settings keep presets valid.
    #[cfg(not(feature = "torch"))]
    #[command(hide = true)]
    #[command(display_order = 1)]
    Local(services::LocalSettings),
    /// Serve the replay (one per training run).
    #[command(display_order = 2)]
    ReplayServer(services::ReplayArgs),
    /// Train and publish weights (one per training run).
    #[cfg_attr(not(feature = "torch"), command(hide = true))]
    #[command(display_order = 3)]
    Learner(services::LearnerArgs),
    /// Play and stream transitions (as many as you like, on any machines).
    #[cfg_attr(not(feature = "torch"), command(hide = true))]
    #[command(display_order = 4)]
    Actor(services::ActorArgs),
    #[cfg(feature = "torch")]
    #[command(flatten)]
    Torch(TorchCommand),
    /// Play and inspect Atari environments.
    #[command(subcommand)]
    #[command(display_order = 8)]
    Env(env_cmd::EnvCommand),
    /// Ask a replay server or learner whether it is serving (exit 0) or stuck
    /// (exit 1): the probe for container health checks.
    #[command(display_order = 10)]
    Health(health::HealthArgs),
    /// Plot evaluation and training curves of a run folder as a PNG.
    #[command(display_order = 12)]
    Plot(plot::PlotArgs),
}

/// The tools that need libtorch (left out of the replay server's image).
#[cfg(feature = "torch")]
#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum TorchCommand {
    /// Evaluate the learner's newest weights, round after round, under v4 and v5.
    #[command(display_order = 5)]
    Evaluator(services::EvaluatorArgs),
    /// Score a checkpoint: whole games under one protocol (--protocol v4|v5).
    #[command(display_order = 6)]
    Eval(evaluate::EvalCmdArgs),
    /// Watch a checkpoint (or a random agent) play, as an animated GIF.
    #[command(display_order = 7)]
    Play(evaluate::PlayArgs),
    /// Check that libtorch, CUDA and the ROMs are where apex expects them.
    #[command(display_order = 11)]
    Doctor(doctor::DoctorArgs),
    /// Export a checkpoint's weights as safetensors for PyTorch (see scripts/apex_qnet.py).
    #[command(display_order = 13)]
    Export(export::ExportArgs),
}
