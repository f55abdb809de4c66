//! `apex local`: every service in one process over loopback gRPC, under
//! one supervisor: any task that fails stops them all with one message;
//! Ctrl-C stops them cleanly, and so does a spent budget
//! (`--total-env-steps`, `--minutes`), which then evaluates the checkpoint
//! once more.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use apex_actor::{ActorConfig, ActorStats};
use apex_evaluator::play::{play, PlayConfig, Player};
use apex_evaluator::{EnvSteps, EvalStats, Summary};
use apex_learner::{LearnerConfig, LearnerStats};
use apex_proto::auth::Token;
use apex_replay_server::store::Layout;
use apex_replay_server::{Replay, ReplayConfig};
use apex_telemetry::tensorboard::SummaryWriter;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::config::{actor_config, learner_config};
use super::settings::*;
use super::{bind, cancel_on_signals, on_signals, serve_metrics};
use super::{EVAL_SEED_OFFSET, PARALLEL_GAMES};
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
    /// Checkpoints, eval.csv, progress.csv, TensorBoard files and GIFs go
    /// here [default: runs/<game>-<time>]. A folder with a config.toml
    /// resumes that run with its settings (unless --preset names others):
    /// flags given change them, and resumes.log records what changed.
    #[arg(long, env = "APEX_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, env = "APEX_LOG_EVERY", default_value_t = 10, value_parser = at_least_one::<u64>)]
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

/// Serves metrics on the first port of `ports` it can bind. Two runs
/// started together both find the same port free; the one that loses the
/// race to bind it moves on to the next instead of failing.
fn serve_metrics_on_a_free_port(ports: std::ops::RangeInclusive<u16>) -> Result<SocketAddr> {
    let last = *ports.end();
    let mut ports = ports;
    loop {
        let addr = free_metrics_addr(ports.clone())?;
        match serve_metrics(Some(addr)) {
            Ok(()) => return Ok(addr),
            Err(e) if addr.port() < last => {
                tracing::debug!(%addr, error = %e, "metrics port taken meanwhile; trying the next");
                ports = addr.port() + 1..=last;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The services' tasks: each ends with its name and how it ended.
type Tasks = tokio::task::JoinSet<(&'static str, Result<()>)>;

/// Everything in this process, wired over loopback gRPC.
pub async fn local(a: LocalArgs, preset: &str) -> Result<()> {
    let started = Instant::now();
    let actors = a.local.actors;
    a.act.check()?;
    a.eval.check()?;
    // --cuda without a GPU stops here, before anything starts.
    apex_model::device(a.train.cuda)?;
    let spec = a.game.spec();
    // A missing ROM fails here, before anything starts.
    let (obs_shape, num_actions) = spec.probe()?;
    // A head the update cannot train (--quantiles with --loss mse) too.
    a.train.dqn()?.check_head(&a.net.for_game(&spec)?)?;
    let metrics_addr = match a.metrics_addr {
        Some(addr) => {
            serve_metrics(Some(addr))?;
            addr
        }
        None => serve_metrics_on_a_free_port(DEFAULT_METRICS_PORTS)?,
    };
    let run_dir = a
        .run_dir
        .clone()
        .unwrap_or_else(|| default_run_dir(&spec.name()));
    let token = Some(start_run_folder(&a, preset, &run_dir)?);
    let tensorboard = SummaryWriter::create(&run_dir)?;
    // Actors stop first (on a signal, a step budget reached or a failure),
    // so that their last batches reach a replay server that still takes
    // them; the other services stop once every actor has.
    let shutdown = CancellationToken::new();
    let stop_actors = CancellationToken::new();
    cancel_on_signals(stop_actors.clone());

    let replay_listener = bind("127.0.0.1:0".parse()?).await?;
    let learner_listener = bind("127.0.0.1:0".parse()?).await?;
    let mut wiring = Wiring {
        args: &a,
        token,
        replay_addr: format!("http://{}", replay_listener.local_addr()?),
        learner_addr: format!("http://{}", learner_listener.local_addr()?),
        run_dir: run_dir.clone(),
        tasks: Tasks::new(),
    };
    let replay = wiring.spawn_replay(replay_listener, obs_shape, num_actions, &shutdown)?;
    let learner = wiring.spawn_learner(learner_listener, &shutdown)?;
    let actor_stats = wiring.spawn_actors(&stop_actors)?;
    let eval = wiring.spawn_evaluator(&actor_stats, &tensorboard, &shutdown)?;
    let Wiring {
        replay_addr,
        learner_addr,
        tasks,
        ..
    } = wiring;
    println!(
        "apex local: {} ({} actors x {} envs), replay {replay_addr}, learner {learner_addr}, run dir {}, metrics http://{metrics_addr}/metrics",
        spec.name(),
        actors,
        a.act.envs,
        run_dir.display(),
    );
    let budget = watch_budget(&a.local, &actor_stats, &stop_actors);
    let steps = local_steps(&actor_stats);
    let progress = tokio::spawn(
        Reporter {
            replay,
            learner: learner.clone(),
            actors: actor_stats,
            eval,
            every: Duration::from_secs(a.log_every),
            frame_skip: apex_evaluator::frame_skip(&spec),
            run_dir: run_dir.clone(),
            tensorboard: Some(tensorboard),
        }
        .run(shutdown.clone()),
    );
    let outcome = supervise(tasks, actors, &stop_actors, &shutdown).await;
    progress.await?;
    outcome?;
    println!(
        "stopped cleanly; checkpoint in {}",
        run_dir.join("checkpoint.ot").display()
    );
    let spent = match budget {
        Some(watch) => watch.await?,
        None => None,
    };
    if spent.is_some() && a.eval.enabled() {
        final_evaluation(&a, &run_dir, steps(), &learner, started).await?;
    }
    Ok(())
}

/// Stops the actors, as Ctrl-C does, once `--total-env-steps` or
/// `--minutes` is spent, and ends with the budget it spent; with no budget,
/// nothing. The rest of the run then stops as after Ctrl-C.
fn watch_budget(
    local: &LocalSettings,
    actors: &[Arc<ActorStats>],
    stop_actors: &CancellationToken,
) -> Option<tokio::task::JoinHandle<Option<String>>> {
    let (total, minutes) = (local.total_env_steps, local.minutes);
    if total.is_none() && minutes.is_none() {
        return None;
    }
    let steps = local_steps(actors);
    let stop = stop_actors.clone();
    let deadline = minutes.map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0));
    Some(tokio::spawn(async move {
        // Often enough that actors overshoot the step budget by little.
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                // Stopped otherwise (Ctrl-C, a failure, a per-actor budget).
                _ = stop.cancelled() => return None,
                _ = tick.tick() => {}
            }
            let done = steps();
            let spent = match (total, deadline) {
                (Some(n), _) if done >= n => {
                    format!("--total-env-steps {n} ({done} agent steps of all actors)")
                }
                (_, Some(d)) if Instant::now() >= d => {
                    format!(
                        "--minutes {} ({done} agent steps)",
                        minutes.unwrap_or_default()
                    )
                }
                _ => continue,
            };
            println!("budget spent: {spent}; stopping as on Ctrl-C");
            stop.cancel();
            return Some(spent);
        }
    }))
}

/// The agent steps of all `actors` together, now.
fn local_steps(actors: &[Arc<ActorStats>]) -> impl Fn() -> u64 + Send + 'static {
    let actors = actors.to_vec();
    move || {
        actors
            .iter()
            .map(|a| a.env_steps.load(Ordering::Relaxed))
            .sum()
    }
}

/// One more evaluation round, of the checkpoint the stopped run left, into
/// eval.csv, so that a run that spent its budget ends with its score.
/// Ctrl-C skips what is left of it.
async fn final_evaluation(
    a: &LocalArgs,
    run_dir: &std::path::Path,
    env_steps: u64,
    learner: &LearnerStats,
    started: Instant,
) -> Result<()> {
    let spec = a.game.spec();
    let checkpoint = run_dir.join("checkpoint.ot");
    let stop = CancellationToken::new();
    on_signals(stop.clone(), "stopping the final evaluation");
    for &protocol in &a.eval.eval_protocols {
        let Some(spec) = apex_evaluator::spec_for(&spec, protocol) else {
            continue;
        };
        let player = Player::Greedy {
            net: crate::evaluate::load_checkpoint(&checkpoint, &spec)?,
            epsilon: a.eval.eval_epsilon,
        };
        let config = PlayConfig {
            games: a.eval.eval_episodes,
            seed: a.game.seed + EVAL_SEED_OFFSET,
            parallel: PARALLEL_GAMES,
        };
        let games = {
            let (spec, stop) = (spec.clone(), stop.clone());
            tokio::task::spawn_blocking(move || {
                play(&spec, &player, &config, &|| stop.is_cancelled())
            })
            .await
            .context("the final evaluation's games panicked")??
        };
        if games.len() < config.games {
            println!("final evaluation stopped before its games ended: nothing written");
            return Ok(());
        }
        let scores: Vec<f64> = games.iter().map(|g| g.score as f64).collect();
        let summary = Summary::of(&scores).context("the final evaluation played no games")?;
        let row = summary.eval_row(
            protocol,
            Some(env_steps * apex_evaluator::frame_skip(&spec)),
            started.elapsed().as_secs_f64(),
            learner.version.load(Ordering::Relaxed),
            learner.updates.load(Ordering::Relaxed),
        );
        let path = apex_run_folder::append(run_dir, &row).with_context(|| {
            format!(
                "cannot append to {}: check the run folder's permissions",
                run_dir.join(apex_run_folder::EVAL_CSV).display()
            )
        })?;
        println!(
            "final evaluation of the checkpoint, in {}: {}",
            path.display(),
            crate::evaluate::describe(&spec, protocol, a.eval.eval_epsilon, &summary)
        );
    }
    Ok(())
}

/// What the services of one `apex local` share while they are started,
/// and the tasks they run as.
struct Wiring<'a> {
    args: &'a LocalArgs,
    token: Option<Token>,
    replay_addr: String,
    learner_addr: String,
    run_dir: PathBuf,
    tasks: Tasks,
}

impl Wiring<'_> {
    /// The replay server, persisting in the run folder: resuming a run
    /// keeps its data.
    fn spawn_replay(
        &mut self,
        listener: tokio::net::TcpListener,
        obs_shape: Vec<usize>,
        num_actions: usize,
        stop: &CancellationToken,
    ) -> Result<Replay> {
        let a = self.args;
        let replay = Replay::open(&ReplayConfig {
            layout: Some(Layout {
                shape: obs_shape,
                codec: a.act.frame_codec.into(),
                num_actions: num_actions as u32,
            }),
            token: self.token.clone(),
            ..a.store.replay_config(
                a.game.seed,
                &a.checkpoint,
                Some(self.run_dir.join("replay")),
            )
        })?;
        let (serving, stop) = (replay.clone(), stop.clone());
        self.tasks.spawn(async move {
            let r = serving.serve(listener, stop).await;
            ("replay server", r.map_err(anyhow::Error::from))
        });
        Ok(replay)
    }

    fn spawn_learner(
        &mut self,
        listener: tokio::net::TcpListener,
        stop: &CancellationToken,
    ) -> Result<Arc<LearnerStats>> {
        let a = self.args;
        let config = LearnerConfig {
            token: self.token.clone(),
            ..learner_config(
                &a.game,
                &a.net,
                &a.train,
                self.replay_addr.clone(),
                Some(self.run_dir.clone()),
            )?
        };
        let stats = Arc::new(LearnerStats::default());
        let (stop, learner) = (stop.clone(), stats.clone());
        self.tasks.spawn(async move {
            let r = apex_learner::run(config, listener, stop, learner).await;
            ("learner", r.map(|_| ()).map_err(anyhow::Error::from))
        });
        Ok(stats)
    }

    /// `--actors` actors, each its own rungs of the exploration ladder.
    fn spawn_actors(&mut self, stop: &CancellationToken) -> Result<Vec<Arc<ActorStats>>> {
        let a = self.args;
        let actors = a.local.actors;
        let mut all = Vec::with_capacity(actors);
        for i in 0..actors {
            let config = ActorConfig {
                token: self.token.clone(),
                ..actor_config(
                    &a.game,
                    &a.net,
                    &a.act,
                    i,
                    actors,
                    self.replay_addr.clone(),
                    self.learner_addr.clone(),
                )?
            };
            let stats = Arc::new(ActorStats::default());
            all.push(stats.clone());
            let stop = stop.clone();
            self.tasks.spawn(async move {
                let r = apex_actor::run(config, stop, stats).await;
                ("actor", r.map(|_| ()).map_err(anyhow::Error::from))
            });
        }
        Ok(all)
    }

    /// The evaluator, timed by these actors' agent steps; its stats stay
    /// empty when evaluation is off.
    fn spawn_evaluator(
        &mut self,
        actors: &[Arc<ActorStats>],
        tensorboard: &SummaryWriter,
        stop: &CancellationToken,
    ) -> Result<Arc<EvalStats>> {
        let a = self.args;
        let stats = Arc::new(EvalStats::default());
        if !a.eval.enabled() {
            return Ok(stats);
        }
        let config = apex_evaluator::EvaluatorConfig {
            token: self.token.clone(),
            ..a.eval.evaluator_config(
                &a.game,
                a.net.for_game(&a.game.spec())?,
                self.learner_addr.clone(),
                local_env_steps(actors),
                Some(self.run_dir.clone()),
                Some(tensorboard.clone()),
            )
        };
        let (stop, eval) = (stop.clone(), stats.clone());
        self.tasks.spawn(async move {
            let r = apex_evaluator::run(config, stop, eval).await;
            ("evaluator", r.map_err(anyhow::Error::from))
        });
        Ok(stats)
    }
}

/// `runs/<game>-<unix seconds>`.
fn default_run_dir(game: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from(format!("runs/{game}-{secs}"))
}

/// Writes what the run resolved to (`config.toml`) and its own secret
/// (`token`: only programs given it may talk to its services).
fn start_run_folder(a: &LocalArgs, preset: &str, run_dir: &std::path::Path) -> Result<Token> {
    let resolved = Resolved {
        game: &a.game,
        local: Some(&a.local),
        net: &a.net,
        replay: Some(&a.store),
        learner: &a.train,
        actor: Some(&a.act),
        eval: Some(&a.eval),
    };
    if let Some(changed) = preset::write_resolved(run_dir, preset, &resolved)? {
        let what = if changed.is_empty() {
            "no setting changed".to_owned()
        } else {
            format!("changed {}", changed.join(", "))
        };
        println!(
            "resuming {} with preset {preset}: {what} (see {})",
            run_dir.display(),
            preset::RESUMES_LOG
        );
    }
    let token = Token::generate();
    let token_file = run_dir.join("token");
    token.save(&token_file).with_context(|| {
        format!(
            "cannot write {}: check the run folder's permissions",
            token_file.display()
        )
    })?;
    Ok(token)
}

/// The evaluator's clock: the agent steps of this process's actors.
fn local_env_steps(actors: &[Arc<ActorStats>]) -> EnvSteps {
    let actors = actors.to_vec();
    EnvSteps::Local(Arc::new(move || {
        actors
            .iter()
            .map(|a| a.env_steps.load(Ordering::Relaxed))
            .sum()
    }))
}

/// Waits for every service. Any part that stops (a failure, actors
/// reaching their step budget, the learner its update budget) stops the
/// rest, actors first; the first failure is the one reported.
async fn supervise(
    mut tasks: Tasks,
    actors: usize,
    stop_actors: &CancellationToken,
    shutdown: &CancellationToken,
) -> Result<()> {
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
    failure.map_or(Ok(()), Err)
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
