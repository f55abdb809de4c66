//! TensorBoard scalars of a learner running on its own (`apex learner`):
//! losses and update rate, stepped, as CleanRL and Stable-Baselines3 step
//! theirs, by agent steps, which the learner reads from the replay
//! server's count of inserted transitions. (`apex local` writes these from
//! its progress reporter instead.)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::InfoRequest;
use apex_telemetry::tensorboard::SummaryWriter;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::LearnerStats;

pub async fn write(
    mut replay: ReplayClient<Channel>,
    writer: SummaryWriter,
    stats: Arc<LearnerStats>,
    every: Duration,
    stop: CancellationToken,
) {
    let (mut last_updates, mut last_time) = (stats.updates.load(Ordering::Relaxed), Instant::now());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Ok(info) = replay.info(InfoRequest {}).await else {
            continue; // the replay server may be restarting
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
