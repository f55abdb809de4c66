//! Sends new priorities back to the replay server, retrying through its
//! outages: a lost update leaves items at stale priorities.

use apex_proto::auth::Channel;
use apex_proto::transport::{pause_or_stop, with_deadline, UNARY_DEADLINE};
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::UpdatePrioritiesRequest;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::io::retry::Retry;
use crate::LearnerError;

/// Sends every update from `updates` until the channel closes; `stop` cuts
/// short only the pauses between retries, so that a clean shutdown still
/// delivers the last updates.
pub async fn send(
    mut client: ReplayClient<Channel>,
    mut updates: mpsc::Receiver<UpdatePrioritiesRequest>,
    addr: String,
    stop: CancellationToken,
) -> Result<(), LearnerError> {
    let mut retry = Retry::new("UpdatePriorities", &addr);
    while let Some(update) = updates.recv().await {
        loop {
            match client
                .update_priorities(with_deadline(update.clone(), UNARY_DEADLINE))
                .await
            {
                Ok(_) => {
                    retry.succeeded();
                    break;
                }
                // Shutting down: the replay server is likely stopping too,
                // and no outage is worth reporting.
                Err(_) if stop.is_cancelled() => return Ok(()),
                Err(status) => {
                    let pause = retry.failed(&status)?;
                    if pause_or_stop(pause, &stop).await {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}
