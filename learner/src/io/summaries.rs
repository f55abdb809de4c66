//! TensorBoard scalars of a learner running on its own (`apex learner`):
//! losses and update rate, stepped, as CleanRL and Stable-Baselines3 step
//! theirs, by agent steps, which the learner reads from the replay
//! server's count of inserted transitions. (`apex local` writes these from
//! its progress reporter instead.)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apex_proto::auth::Channel;
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::InfoRequest;
use apex_telemetry::tensorboard::SummaryWriter;
use tokio_util::sync::CancellationToken;

use crate::io::retry::Retry;
use crate::LearnerStats;

/// Writes every `every` until `stop`; gives up (logged) only when the
/// replay server refuses its calls for good, without stopping training.
pub async fn write(
    mut replay: ReplayClient<Channel>,
    addr: String,
    writer: SummaryWriter,
    stats: Arc<LearnerStats>,
    every: Duration,
    stop: CancellationToken,
) {
    let (mut last_updates, mut last_time) = (stats.updates.load(Ordering::Relaxed), Instant::now());
    let mut retry = Retry::new("Info", &addr);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        // The step comes from the replay server: while it is away, skip
        // (the next try is one period later anyway).
        let info = match replay.info(InfoRequest::default()).await {
            Ok(info) => {
                retry.succeeded();
                info
            }
            Err(_) if stop.is_cancelled() => return,
            Err(status) => match retry.failed(&status) {
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "tensorboard summaries stop");
                    return;
                }
            },
        };
        let step = info.into_inner().inserted_total as i64;
        let updates = stats.updates.load(Ordering::Relaxed);
        let rate = (updates - last_updates) as f64 / last_time.elapsed().as_secs_f64();
        (last_updates, last_time) = (updates, Instant::now());
        let mut scalars = vec![
            ("charts/learner_updates", updates as f64),
            ("charts/updates_per_second", rate),
        ];
        if updates > 0 {
            scalars.push(("losses/td_loss", stats.loss()));
            scalars.push(("losses/q_values", stats.mean_q()));
        }
        for (tag, value) in scalars {
            if let Err(e) = writer.scalar(tag, value, step) {
                tracing::warn!(error = %e, "tensorboard write failed");
            }
        }
        let _ = writer.flush();
    }
}
