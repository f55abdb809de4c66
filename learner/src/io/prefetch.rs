//! Keeps batches ready, decoded into tensors on the training device, so the
//! training loop waits neither on the network nor on decompression; rides
//! out replay-server outages, drops batches that do not fit the network,
//! and turns any other failure into the learner's error.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use apex_proto::auth::Channel;
use apex_proto::transport::{with_deadline, UNARY_DEADLINE};
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::SampleRequest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::io::batch::{Batch, BatchError};
use crate::io::retry::Retry;
use crate::io::upload::Uploader;
use crate::throttle::Throttle;
use crate::{metrics, LearnerConfig, LearnerError, LearnerStats};

/// A replay holding a bad transition can make every batch bad.
const BAD_BATCH_LOG_EVERY: Duration = Duration::from_secs(10);

/// Runs `workers` input workers into `out` until `stop`, or until `out`
/// closes. Each keeps one Sample call in flight and decodes its answers
/// on a blocking thread of its own, so the pipeline scales with cores: a
/// GPU learner's batches of 512 take tens of milliseconds to decode.
/// Errors that no retry can help go to `out` (the training loop stops on
/// them); a worker that panics is an error too.
pub async fn prefetch(
    client: ReplayClient<Channel>,
    config: LearnerConfig,
    uploader: Uploader,
    stats: Arc<LearnerStats>,
    out: mpsc::Sender<Result<Batch, LearnerError>>,
    stop: CancellationToken,
) {
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..config.input_workers.max(1) {
        workers.spawn(worker(
            client.clone(),
            config.clone(),
            uploader.clone(),
            stats.clone(),
            out.clone(),
            stop.clone(),
        ));
    }
    while let Some(ended) = workers.join_next().await {
        if let Err(e) = ended {
            let _ = out.send(Err(LearnerError::task("batch prefetch", e))).await;
            return;
        }
    }
}

/// One Sample call at a time, decoded, then sent to `out`.
async fn worker(
    mut client: ReplayClient<Channel>,
    config: LearnerConfig,
    uploader: Uploader,
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
        let (shape, actions, to) = (
            config.obs_shape.clone(),
            config.num_actions,
            uploader.clone(),
        );
        let decoded = tokio::task::spawn_blocking(move || {
            // Where a device error (CUDA's are sticky) would surface.
            fail::fail_point!("learner::decode");
            Batch::from_response(response, &shape, actions, &to)
        })
        .await;
        match decoded {
            Ok(Ok(batch)) => {
                if out.send(Ok(batch)).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => drop_bad_batch(&e, &stats, &mut bad_log),
            Err(e) => {
                let _ = out.send(Err(LearnerError::task("batch decoding", e))).await;
                return;
            }
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
