//! Streams transition batches to the replay server over one `Insert` call,
//! with at most `max_in_flight` batches unacknowledged: when the server falls
//! behind, `send` waits, and so does the actor that calls it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{Codec, Frame, InsertRequest, Shape, Transition};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

pub struct Sender {
    requests: mpsc::Sender<InsertRequest>,
    in_flight: Arc<Semaphore>,
    shape: Shape,
    codec: Codec,
    actor_id: u32,
    acks: Acks,
}

/// The task reading acknowledgements; its outcome is kept once read, since
/// both a failed `send` and `finish` ask for it.
enum Acks {
    Running(tokio::task::JoinHandle<Result<(), tonic::Status>>),
    Ended(Result<(), tonic::Status>),
}

impl Acks {
    fn is_finished(&self) -> bool {
        match self {
            Acks::Running(task) => task.is_finished(),
            Acks::Ended(_) => true,
        }
    }

    async fn outcome(&mut self) -> Result<(), tonic::Status> {
        if let Acks::Running(task) = self {
            let r = task.await.unwrap_or_else(|e| {
                Err(tonic::Status::internal(format!(
                    "insert acknowledgements task failed: {e}"
                )))
            });
            *self = Acks::Ended(r);
        }
        match self {
            Acks::Ended(r) => r.clone(),
            Acks::Running(_) => unreachable!("just awaited"),
        }
    }
}

impl Sender {
    pub async fn open(
        mut client: ReplayClient<Channel>,
        shape: &[usize],
        codec: Codec,
        actor_id: u32,
        max_in_flight: usize,
        acknowledged: Arc<AtomicU64>,
    ) -> Result<Sender, tonic::Status> {
        let (requests, rx) = mpsc::channel(max_in_flight.max(1));
        let mut responses = client.insert(ReceiverStream::new(rx)).await?.into_inner();
        let in_flight = Arc::new(Semaphore::new(max_in_flight.max(1)));
        let permits = in_flight.clone();
        let actor = actor_id.to_string();
        let acks = tokio::spawn(async move {
            let result = async {
                while let Some(r) = responses.next().await {
                    let r = r?;
                    permits.add_permits(1);
                    acknowledged.fetch_add(r.inserted, Ordering::Relaxed);
                    metrics::counter!(crate::metrics::TRANSITIONS_SENT, "actor" => actor.clone())
                        .increment(r.inserted);
                }
                Ok(())
            }
            .await;
            // Wakes a sender waiting for a permit that will never come.
            permits.close();
            result
        });
        Ok(Sender {
            requests,
            in_flight,
            shape: Shape::of(shape),
            codec,
            actor_id,
            acks: Acks::Running(acks),
        })
    }

    /// Sends a batch, with the new frames its transitions (or later ones)
    /// refer to, once fewer than `max_in_flight` are unacknowledged.
    pub async fn send(
        &mut self,
        frames: Vec<Frame>,
        transitions: Vec<Transition>,
    ) -> Result<(), tonic::Status> {
        let acquired = self.in_flight.acquire().await.map(|p| p.forget()).is_ok();
        if !acquired {
            return Err(self.failure().await);
        }
        let request = InsertRequest {
            obs_shape: Some(self.shape.clone()),
            transitions,
            actor_id: self.actor_id,
            frames,
            codec: self.codec as i32,
        };
        if self.requests.send(request).await.is_err() || self.acks.is_finished() {
            return Err(self.failure().await);
        }
        Ok(())
    }

    /// Why the stream ended.
    async fn failure(&mut self) -> tonic::Status {
        self.in_flight.close();
        match self.acks.outcome().await {
            Err(status) => status,
            Ok(()) => tonic::Status::unavailable("the replay server closed the insert stream"),
        }
    }

    /// Waits until every sent batch is acknowledged, then closes the stream.
    pub async fn finish(self) -> Result<(), tonic::Status> {
        let Sender {
            requests, mut acks, ..
        } = self;
        drop(requests);
        acks.outcome().await
    }
}
