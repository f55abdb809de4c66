//! `apex local`'s progress: a line every few seconds, the same figures as
//! rows of `progress.csv` and as TensorBoard scalars (CleanRL's and
//! Stable-Baselines3's names, stepped by agent steps). Training scores come
//! from exploring actors; the evaluator's scores are shown apart.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apex_actor::ActorStats;
use apex_evaluator::EvalStats;
use apex_learner::LearnerStats;
use apex_replay_server::Replay;
use apex_run_folder::{ProgressRow, PROGRESS_CSV};
use apex_telemetry::tensorboard::SummaryWriter;
use tokio_util::sync::CancellationToken;

/// Training games behind the progress line's mean raw score.
const RECENT_GAMES: usize = 100;

pub struct Reporter {
    pub replay: Replay,
    pub learner: Arc<LearnerStats>,
    pub actors: Vec<Arc<ActorStats>>,
    pub eval: Arc<EvalStats>,
    pub every: Duration,
    /// Emulator frames per agent step.
    pub frame_skip: u64,
    pub run_dir: PathBuf,
    pub tensorboard: Option<SummaryWriter>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (n, sum) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    (n > 0).then(|| sum / n as f64)
}

impl Reporter {
    pub async fn run(self, shutdown: CancellationToken) {
        let start = Instant::now();
        let mut csv = true;
        let (mut last_steps, mut last_updates, mut last_time) = (0u64, 0u64, Instant::now());
        let mut recent = std::collections::VecDeque::with_capacity(RECENT_GAMES);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            let sum =
                |f: &dyn Fn(&ActorStats) -> u64| self.actors.iter().map(|a| f(a)).sum::<u64>();
            let steps = sum(&|a| a.env_steps.load(Ordering::Relaxed));
            let games = sum(&|a| a.episodes.load(Ordering::Relaxed));
            let finished: Vec<_> = self.actors.iter().flat_map(|a| a.take_finished()).collect();
            let episodic_return = mean(finished.iter().map(|g| g.raw_score as f64));
            let episodic_length = mean(finished.iter().map(|g| g.agent_steps as f64));
            for g in &finished {
                if recent.len() == RECENT_GAMES {
                    recent.pop_front();
                }
                recent.push_back(g.raw_score as f64);
            }
            let updates = self.learner.updates.load(Ordering::Relaxed);
            let dt = last_time.elapsed().as_secs_f64();
            let sps = (steps - last_steps) as f64 / dt;
            let ups = (updates - last_updates) as f64 / dt;
            let versions: Vec<u64> = self
                .actors
                .iter()
                .map(|a| a.weights_version.load(Ordering::Relaxed))
                .collect();
            let recent_mean =
                mean(recent.iter().copied()).map_or("-".to_owned(), |m| format!("{m:.1}"));
            let eval: Vec<String> = self
                .eval
                .latest()
                .iter()
                .map(|(p, s)| format!("{p} {:.1} (median {:.1})", s.mean, s.median))
                .collect();
            let wall = start.elapsed().as_secs_f64();
            // A closed terminal or pipe must not stop training.
            let _ = writeln!(
                std::io::stdout(),
                "[{wall:>6.0}s] env steps {steps} ({sps:.0}/s) | training games {games}, mean raw score {recent_mean} | eval {} | replay {} | updates {updates} ({ups:.1}/s), loss {:.4}, mean Q {:.3} | weights v{} (actors v{}-v{})",
                if eval.is_empty() { "-".to_owned() } else { eval.join(", ") },
                self.replay.size(),
                self.learner.loss(),
                self.learner.mean_q(),
                self.learner.version.load(Ordering::Relaxed),
                versions.iter().min().unwrap_or(&0),
                versions.iter().max().unwrap_or(&0),
            );
            if csv {
                let row = ProgressRow {
                    wall_seconds: wall,
                    env_steps: steps,
                    env_frames: steps * self.frame_skip,
                    games,
                    episodic_return,
                    episodic_length,
                    updates,
                    loss: Some(self.learner.loss()),
                    mean_q: Some(self.learner.mean_q()),
                    sps,
                };
                if let Err(e) = apex_run_folder::append(&self.run_dir, &row) {
                    tracing::warn!(error = %e, "cannot write {PROGRESS_CSV}; progress goes to the terminal only");
                    csv = false;
                }
            }
            if let Some(tb) = &self.tensorboard {
                let step = steps as i64;
                let mut scalars = vec![
                    ("charts/SPS", sps),
                    ("charts/updates_per_second", ups),
                    ("charts/learner_updates", updates as f64),
                    ("charts/replay_size", self.replay.size() as f64),
                ];
                if updates > 0 {
                    scalars.push(("losses/td_loss", self.learner.loss()));
                    scalars.push(("losses/q_values", self.learner.mean_q()));
                }
                if let (Some(r), Some(l)) = (episodic_return, episodic_length) {
                    scalars.push(("charts/episodic_return", r));
                    scalars.push(("charts/episodic_length", l));
                }
                for (tag, v) in scalars {
                    if let Err(e) = tb.scalar(tag, v, step) {
                        tracing::warn!(error = %e, "tensorboard write failed");
                    }
                }
                let _ = tb.flush();
            }
            (last_steps, last_updates, last_time) = (steps, updates, Instant::now());
        }
    }
}
