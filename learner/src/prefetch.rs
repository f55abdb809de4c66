//! Keeps batches ready, decoded into tensors on the training device, so the
//! training loop waits neither on the network nor on decompression; rides
//! out replay-server outages and drops batches that do not fit the network.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use apex_proto::auth::Channel;
use apex_proto::transport::{with_deadline, UNARY_DEADLINE};
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::SampleRequest;
use tch::Device;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchError};
use crate::retry::Retry;
use crate::throttle::Throttle;
use crate::{metrics, LearnerConfig, LearnerError, LearnerStats};

/// A replay holding a bad transition can make every batch bad.
const BAD_BATCH_LOG_EVERY: Duration = Duration::from_secs(10);

/// Sends batches to `out` until `stop`, or until `out` closes; sends an
/// error (and stops) only when no retry can help.
pub async fn prefetch(
    mut client: ReplayClient<Channel>,
    config: LearnerConfig,
    device: Device,
    stats: Arc<LearnerStats>,
    out: mpsc::Sender<Result<Batch, LearnerError>>,
    stop: CancellationToken,
) {
    let mut retry = Retry::new("Sample", &config.replay_addr);
    let mut bad_log = Throttle::new(BAD_BATCH_LOG_EVERY);
    loop {
        let request = SampleRequest {
            batch_size: config.batch_size as u32,
            beta: config.beta(stats.updates.load(Ordering::Relaxed)) as f32,
        };
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.sample(with_deadline(request, UNARY_DEADLINE)) => r,
        };
        let response = match r {
            Ok(response) => {
                retry.succeeded();
                response.into_inner()
            }
            Err(_) if stop.is_cancelled() => return,
            Err(status) => match retry.failed(&status) {
                Ok(pause) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            },
        };
        let (shape, actions) = (config.obs_shape.clone(), config.num_actions);
        let decoded = tokio::task::spawn_blocking(move || {
            Batch::from_response(response, &shape, actions, device)
        })
        .await
        .expect("batch decoding does not panic");
        match decoded {
            Ok(batch) => {
                if out.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
            Err(e) => drop_bad_batch(&e, &stats, &mut bad_log),
        }
    }
}

fn drop_bad_batch(e: &BatchError, stats: &LearnerStats, log: &mut Throttle) {
    let total = stats.bad_batches.fetch_add(1, Ordering::Relaxed) + 1;
    ::metrics::counter!(metrics::BAD_BATCHES).increment(1);
    if log.ready() {
        tracing::warn!(error = %e, dropped_total = total, "dropped a bad batch from the replay server");
    }
}
