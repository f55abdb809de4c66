//! `apex evaluator`: the evaluation service beside a learner, on its own
//! (one per training run); `apex local` starts the same service in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use apex_evaluator::{EnvSteps, EvalStats, EvaluatorConfig};
use apex_telemetry::tensorboard::SummaryWriter;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{cancel_on_signals, serve_metrics, AuthArgs, EvalArgs, NetArgs};
use crate::env_cmd::GameArgs;

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
    auth: AuthArgs,
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
    let net = a.net.for_game(&spec)?;
    let tensorboard = SummaryWriter::create(&a.run_dir)?;
    let steps = a.replay.map_or(EnvSteps::Unknown, EnvSteps::Replay);
    let access = a.auth.load()?;
    let config = EvaluatorConfig {
        token: access.token,
        tls: access.tls,
        ..a.eval.evaluator_config(
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
