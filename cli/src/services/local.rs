//! `apex local`: every service in one process over loopback gRPC, under
//! one supervisor: any task that fails stops them all with one message;
//! Ctrl-C stops them cleanly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use apex_actor::{ActorConfig, ActorStats};
use apex_evaluator::{EnvSteps, EvalStats};
use apex_learner::{LearnerConfig, LearnerStats};
use apex_proto::auth::Token;
use apex_replay_server::store::Layout;
use apex_replay_server::{Replay, ReplayConfig};
use apex_telemetry::tensorboard::SummaryWriter;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::config::{actor_config, learner_config, net_config};
use super::settings::*;
use super::{bind, cancel_on_signals, serve_metrics};
use crate::env_cmd::GameArgs;
use crate::preset;
use crate::progress::Reporter;

#[derive(Args)]
pub struct LocalArgs {
    #[command(flatten)]
    pub preset: crate::preset::PresetArg,
    #[command(flatten)]
    game: GameArgs,
    #[command(flatten)]
    local: LocalSettings,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    net: NetArgs,
    #[command(flatten)]
    train: TrainArgs,
    #[command(flatten)]
    act: ActArgs,
    #[command(flatten)]
    checkpoint: CheckpointArgs,
    #[command(flatten)]
    eval: EvalArgs,
    /// Checkpoints, eval.csv, progress.csv, TensorBoard files and GIFs go here [default: runs/<game>-<protocol>-<time>].
    #[arg(long, env = "APEX_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Where Prometheus scrapes this process [default: 127.0.0.1:9100, or
    /// the next free port up to 9199 when another apex holds it].
    #[arg(long, env = "APEX_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

/// The ports `apex local` tries for its metrics, first to last: a second
/// run on the same machine takes the next one instead of failing.
const DEFAULT_METRICS_PORTS: std::ops::RangeInclusive<u16> = 9100..=9199;

/// The first loopback address on `ports` free now. Another process may take
/// it before the exporter binds it; the exporter then fails with its address.
fn free_metrics_addr(ports: std::ops::RangeInclusive<u16>) -> Result<SocketAddr> {
    let (first, last) = (*ports.start(), *ports.end());
    ports
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
        .find(|addr| std::net::TcpListener::bind(addr).is_ok())
        .with_context(|| {
            format!(
                "no free metrics port on 127.0.0.1 from {first} to {last}: stop another apex \
                 or give --metrics-addr 127.0.0.1:0"
            )
        })
}

/// Everything in this process, wired over loopback gRPC.
pub async fn local(a: LocalArgs, preset: &str) -> Result<()> {
    let actors = a.local.actors;
    anyhow::ensure!(actors > 0, "--actors must be at least 1");
    a.act.check()?;
    a.eval.check()?;
    // --cuda without a GPU stops here, before anything starts.
    apex_model::device(a.train.cuda)?;
    let spec = a.game.spec();
    // A missing ROM fails here, before anything starts.
    let (obs_shape, num_actions) = spec.probe()?;
    // Its own secret: only programs given run_dir/token may talk to its services.
    let token = Token::generate();
    let metrics_addr = match a.metrics_addr {
        Some(addr) => addr,
        None => free_metrics_addr(DEFAULT_METRICS_PORTS)?,
    };
    serve_metrics(Some(metrics_addr))?;
    let run_dir = a.run_dir.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("runs/{}-{secs}", spec.name()))
    });
    let resolved = Resolved {
        game: &a.game,
        local: Some(&a.local),
        net: &a.net,
        replay: Some(&a.store),
        learner: &a.train,
        actor: Some(&a.act),
        eval: Some(&a.eval),
    };
    preset::write_resolved(&run_dir, preset, &resolved)?;
    let token_file = run_dir.join("token");
    token.save(&token_file).with_context(|| {
        format!(
            "cannot write {}: check the run folder's permissions",
            token_file.display()
        )
    })?;
    let token = Some(token);
    let tensorboard = SummaryWriter::create(&run_dir)?;
    // Actors stop first (on a signal, a step budget reached or a failure),
    // so that their last batches reach a replay server that still takes
    // them; the other services stop once every actor has.
    let shutdown = CancellationToken::new();
    let stop_actors = CancellationToken::new();
    cancel_on_signals(stop_actors.clone());

    let replay_listener = bind("127.0.0.1:0".parse()?).await?;
    let learner_listener = bind("127.0.0.1:0".parse()?).await?;
    let replay_addr = format!("http://{}", replay_listener.local_addr()?);
    let learner_addr = format!("http://{}", learner_listener.local_addr()?);
    // The replay persists in the run folder: resuming a run keeps its data.
    let replay = Replay::open(&ReplayConfig {
        layout: Some(Layout {
            shape: obs_shape,
            codec: a.act.frame_codec.into(),
            num_actions: num_actions as u32,
        }),
        token: token.clone(),
        ..a.store
            .replay_config(a.game.seed, &a.checkpoint, Some(run_dir.join("replay")))
    })?;
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (replay, stop) = (replay.clone(), shutdown.clone());
        tasks.spawn(async move {
            let r = replay.serve(replay_listener, stop).await;
            ("replay server", r.map_err(anyhow::Error::from))
        });
    }
    let learner_stats = Arc::new(LearnerStats::default());
    {
        let config = learner_config(
            &a.game,
            &a.net,
            &a.train,
            replay_addr.clone(),
            Some(run_dir.clone()),
        )?;
        let config = LearnerConfig {
            token: token.clone(),
            ..config
        };
        let (stop, stats) = (shutdown.clone(), learner_stats.clone());
        tasks.spawn(async move {
            let r = apex_learner::run(config, learner_listener, stop, stats).await;
            ("learner", r.map(|_| ()).map_err(anyhow::Error::from))
        });
    }
    let actor_stats: Vec<Arc<ActorStats>> = (0..actors)
        .map(|_| Arc::new(ActorStats::default()))
        .collect();
    for (i, stats) in actor_stats.iter().enumerate() {
        let config = ActorConfig {
            token: token.clone(),
            ..actor_config(
                &a.game,
                &a.net,
                &a.act,
                i,
                actors,
                replay_addr.clone(),
                learner_addr.clone(),
            )?
        };
        let (stop, stats) = (stop_actors.clone(), stats.clone());
        tasks.spawn(async move {
            let r = apex_actor::run(config, stop, stats).await;
            ("actor", r.map(|_| ()).map_err(anyhow::Error::from))
        });
    }
    let eval_stats = Arc::new(EvalStats::default());
    if a.eval.enabled() {
        let steps = {
            let actors = actor_stats.clone();
            EnvSteps::Local(Arc::new(move || {
                actors
                    .iter()
                    .map(|a| a.env_steps.load(Ordering::Relaxed))
                    .sum()
            }))
        };
        let config = apex_evaluator::EvaluatorConfig {
            token: token.clone(),
            ..a.eval.evaluator_config(
                &a.game,
                net_config(&spec, a.net.dueling.into())?,
                learner_addr.clone(),
                steps,
                Some(run_dir.clone()),
                Some(tensorboard.clone()),
            )
        };
        let (stop, stats) = (shutdown.clone(), eval_stats.clone());
        tasks.spawn(async move {
            let r = apex_evaluator::run(config, stop, stats).await;
            ("evaluator", r.map_err(anyhow::Error::from))
        });
    }
    println!(
        "apex local: {} ({} actors x {} envs), replay {replay_addr}, learner {learner_addr}, run dir {}, metrics http://{metrics_addr}/metrics",
        spec.name(),
        actors,
        a.act.envs,
        run_dir.display(),
    );
    let progress = tokio::spawn(
        Reporter {
            replay,
            learner: learner_stats,
            actors: actor_stats,
            eval: eval_stats,
            every: Duration::from_secs(a.log_every.max(1)),
            frame_skip: apex_evaluator::frame_skip(&spec),
            run_dir: run_dir.clone(),
            tensorboard: Some(tensorboard),
        }
        .run(shutdown.clone()),
    );

    // Any part that stops (a failure, actors reaching their step budget, the
    // learner its update budget) stops the rest; the first failure is the
    // one reported.
    let mut failure = None;
    let mut actors_running = actors;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = match joined {
            Ok(done) => done,
            Err(e) => ("a service", Err(anyhow::anyhow!("it panicked: {e}"))),
        };
        if name == "actor" {
            actors_running -= 1;
        }
        stop_actors.cancel();
        if let Err(e) = result {
            if failure.is_none() {
                eprintln!("error: {name} failed: {e:#}; stopping everything");
            }
            failure.get_or_insert(e.context(format!("{name} failed")));
            shutdown.cancel();
        }
        if actors_running == 0 {
            shutdown.cancel();
        }
    }
    progress.await?;
    if let Some(e) = failure {
        return Err(e);
    }
    println!(
        "stopped cleanly; checkpoint in {}",
        run_dir.join("checkpoint.ot").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_metrics_port_gives_way_to_the_next_free_one() {
        // Two ports in a row, the first held as another apex would hold it.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let Some(next) = port.checked_add(1) else {
            return;
        };
        let free_next = std::net::TcpListener::bind(("127.0.0.1", next)).is_ok();
        let found = free_metrics_addr(port..=next);
        if free_next {
            assert_eq!(found.unwrap().port(), next);
        }
        let e = free_metrics_addr(port..=port).unwrap_err();
        assert!(e.to_string().contains("--metrics-addr"), "{e}");
    }
}
