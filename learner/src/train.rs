//! The training loop: one gradient step per batch, priorities back to the
//! replay server, versioned weights out to actors, checkpoints to the run
//! folder. Runs on a blocking thread.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use apex_proto::priority::clamp_priority;
use apex_proto::v1::UpdatePrioritiesRequest;
use tokio::sync::mpsc;

use crate::dqn::Dqn;
use crate::io::batch::Batch;
use crate::io::weights::Published;
use crate::persist::checkpoint;
use crate::throttle::Throttle;
use crate::{metrics, LearnerConfig, LearnerError, LearnerStats};

const NON_FINITE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Where the loop's results go.
pub struct Outputs<'a> {
    pub priorities: mpsc::Sender<UpdatePrioritiesRequest>,
    pub published: &'a Published,
    pub stats: &'a LearnerStats,
    /// Where checkpoints go, if anywhere.
    pub run_dir: Option<&'a Path>,
}

/// Trains on `batches` until they end or `max_updates`; `version` is the
/// weights version already published. Publishes and checkpoints what is
/// new before it returns, also when it stops on an error.
pub fn train(
    dqn: &mut Dqn,
    config: &LearnerConfig,
    mut batches: mpsc::Receiver<Result<Batch, LearnerError>>,
    out: Outputs<'_>,
    version: u64,
) -> Result<(), LearnerError> {
    let mut progress = Progress {
        version,
        published_at: dqn.updates(),
        saved: None,
    };
    let outcome = train_loop(dqn, config, &mut batches, &out, &mut progress);
    // Diverged weights are neither published nor saved; the error says so.
    if !dqn.is_finite() {
        return outcome;
    }
    let finished = progress.finish(dqn, &out);
    outcome.and(finished)
}

/// What has been published and saved so far.
struct Progress {
    version: u64,
    /// The updates behind the newest published weights.
    published_at: u64,
    /// (updates, version) of the last checkpoint this loop wrote.
    saved: Option<(u64, u64)>,
}

fn train_loop(
    dqn: &mut Dqn,
    config: &LearnerConfig,
    batches: &mut mpsc::Receiver<Result<Batch, LearnerError>>,
    out: &Outputs<'_>,
    progress: &mut Progress,
) -> Result<(), LearnerError> {
    let stats = out.stats;
    let mut non_finite_log = Throttle::new(NON_FINITE_LOG_EVERY);
    loop {
        if config.max_updates.is_some_and(|m| dqn.updates() >= m) {
            return Ok(());
        }
        let waited = Instant::now();
        let batch = match batches.blocking_recv() {
            Some(b) => b?,
            None => return Ok(()),
        };
        ::metrics::histogram!(metrics::DATA_WAIT).record(waited.elapsed().as_secs_f64());
        let _busy = stats.busy.begin();
        let update = match dqn.update(&batch) {
            Ok(update) => update,
            Err(e) => {
                let total = stats.nonfinite_updates.fetch_add(1, Ordering::Relaxed) + 1;
                ::metrics::counter!(metrics::NONFINITE_UPDATES).increment(1);
                if non_finite_log.ready() {
                    tracing::warn!(error = %e, skipped_total = total, "skipped an update");
                }
                continue;
            }
        };
        let updates = dqn.updates();
        stats.updates.store(updates, Ordering::Relaxed);
        stats
            .loss_bits
            .store(update.loss.to_bits(), Ordering::Relaxed);
        stats
            .mean_q_bits
            .store(update.mean_q.to_bits(), Ordering::Relaxed);
        ::metrics::counter!(metrics::UPDATES).increment(1);
        ::metrics::counter!(metrics::SAMPLED).increment(batch.len() as u64);
        ::metrics::gauge!(metrics::LOSS).set(update.loss);
        ::metrics::gauge!(metrics::MEAN_Q).set(update.mean_q);
        let _ = out.priorities.blocking_send(UpdatePrioritiesRequest {
            ids: batch.ids,
            // A |TD| past the replay's range (a diverging moment) is
            // clamped into it, not sent to be refused as fatal.
            priorities: update.td_abs.into_iter().map(clamp_priority).collect(),
        });
        if updates.is_multiple_of(config.publish_every) {
            progress.publish(dqn, out)?;
        }
        if updates.is_multiple_of(config.checkpoint_every) {
            // A failed checkpoint (a full disk) must not end training: the
            // previous one is intact, and the next try may succeed.
            if let Err(e) = progress.save(dqn, out) {
                ::metrics::counter!(metrics::CHECKPOINT_FAILURES).increment(1);
                tracing::error!(error = %e, "checkpoint failed; training goes on");
            }
        }
    }
}

impl Progress {
    fn publish(&mut self, dqn: &Dqn, out: &Outputs<'_>) -> Result<(), LearnerError> {
        self.version += 1;
        publish(dqn, self.version, out.published, out.stats)?;
        self.published_at = dqn.updates();
        Ok(())
    }

    fn save(&mut self, dqn: &Dqn, out: &Outputs<'_>) -> Result<(), LearnerError> {
        let Some(dir) = out.run_dir else {
            return Ok(());
        };
        checkpoint::save(dir, dqn, self.version)?;
        self.saved = Some((dqn.updates(), self.version));
        ::metrics::counter!(metrics::CHECKPOINTS).increment(1);
        Ok(())
    }

    /// Publishes and saves what the last publication and checkpoint lack.
    fn finish(&mut self, dqn: &Dqn, out: &Outputs<'_>) -> Result<(), LearnerError> {
        if dqn.updates() != self.published_at {
            self.publish(dqn, out)?;
        }
        if self.saved != Some((dqn.updates(), self.version)) {
            self.save(dqn, out)?;
        }
        Ok(())
    }
}

/// Publishes the online weights as `version`; weights that are no longer
/// finite are never handed to actors.
pub fn publish(
    dqn: &Dqn,
    version: u64,
    published: &Published,
    stats: &LearnerStats,
) -> Result<(), LearnerError> {
    if !dqn.is_finite() {
        return Err(LearnerError::Diverged {
            updates: dqn.updates(),
        });
    }
    published.publish(version, dqn.updates(), dqn.weights()?);
    stats.version.store(version, Ordering::Relaxed);
    ::metrics::gauge!(metrics::WEIGHTS_VERSION).set(version as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dqn::{DqnConfig, Optimizer};
    use apex_model::{Arch, QNetConfig};
    use tch::Device;

    fn config() -> LearnerConfig {
        LearnerConfig {
            replay_addr: "http://127.0.0.1:1".into(),
            obs_shape: vec![1, 2, 2],
            num_actions: 2,
            arch: Arch::Mlp { hidden: 8 },
            dueling: true,
            quantiles: None,
            dqn: DqnConfig {
                optimizer: Optimizer::Adam { eps: 1e-8 },
                learning_rate: 1e-3,
                learning_rate_decay: None,
                max_grad_norm: 10.0,
                target_update_every: 100,
                double: true,
                loss: crate::dqn::TdLoss::Huber,
                munchausen: None,
            },
            batch_size: 4,
            publish_every: 2,
            checkpoint_every: 1000,
            run_dir: None,
            cuda: false,
            max_updates: None,
            prefetch: 1,
            input_workers: 1,
            batch_slices: 1,
            torch_threads: 1,
            beta_start: 0.4,
            beta_end: 1.0,
            beta_anneal_updates: 100,
            tensorboard: None,
            token: None,
            tls: Default::default(),
        }
    }

    fn batch(reward: f32) -> Batch {
        crate::io::batch::tiny_batch([1, 0, 1, 0], reward, 0.0)
    }

    #[test]
    fn non_finite_batches_are_skipped_and_training_goes_on() {
        let config = config();
        let net = QNetConfig::new(config.arch, &config.obs_shape, 2, true);
        let mut dqn = {
            let _rng = crate::test_rng::seeded(11);
            Dqn::new(net, config.dqn, Device::Cpu).unwrap()
        };
        let (tx, rx) = mpsc::channel(16);
        for reward in [1.0, f32::NAN, 1.0, f32::INFINITY, 1.0, 1.0] {
            tx.try_send(Ok(batch(reward))).unwrap();
        }
        drop(tx);
        let (prio_tx, mut prio_rx) = mpsc::channel(16);
        let (published, stats) = (Published::default(), LearnerStats::default());
        let out = Outputs {
            priorities: prio_tx,
            published: &published,
            stats: &stats,
            run_dir: None,
        };
        train(&mut dqn, &config, rx, out, 1).unwrap();
        assert_eq!(dqn.updates(), 4);
        assert_eq!(stats.nonfinite_updates.load(Ordering::Relaxed), 2);
        assert!(dqn.is_finite());
        // Versions 2 and 3 at updates 2 and 4; nothing new at the end.
        assert_eq!(published.current().version, 3);
        assert_eq!(published.current().updates, 4);
        let mut sent = 0;
        while let Ok(p) = prio_rx.try_recv() {
            assert!(p.priorities.iter().all(|p| p.is_finite()));
            sent += 1;
        }
        assert_eq!(sent, 4, "no priorities from skipped updates");
    }

    #[test]
    fn a_fatal_error_still_saves_what_was_learned() {
        let dir = tempfile::tempdir().unwrap();
        let config = config();
        let net = QNetConfig::new(config.arch, &config.obs_shape, 2, true);
        let rng = crate::test_rng::seeded(12);
        let mut dqn = Dqn::new(net, config.dqn, Device::Cpu).unwrap();
        let mut resumed = Dqn::new(net, config.dqn, Device::Cpu).unwrap();
        drop(rng);
        let (tx, rx) = mpsc::channel(16);
        for _ in 0..3 {
            tx.try_send(Ok(batch(1.0))).unwrap();
        }
        tx.try_send(Err(LearnerError::Address("x".into()))).unwrap();
        let (prio_tx, _prio_rx) = mpsc::channel(16);
        let (published, stats) = (Published::default(), LearnerStats::default());
        let out = Outputs {
            priorities: prio_tx,
            published: &published,
            stats: &stats,
            run_dir: Some(dir.path()),
        };
        assert!(matches!(
            train(&mut dqn, &config, rx, out, 1),
            Err(LearnerError::Address(_))
        ));
        let r = checkpoint::resume(dir.path(), &mut resumed)
            .unwrap()
            .unwrap();
        assert_eq!((r.updates, r.version), (3, 3));
    }
}
