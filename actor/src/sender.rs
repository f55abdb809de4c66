//! Streams transition batches to the replay server, with at most
//! `max_in_flight` batches unacknowledged: when the server falls behind,
//! `send` waits, and so does the actor that calls it.
//!
//! Nothing acknowledged is lost and nothing is stored twice when the
//! connection breaks or the server restarts: a task keeps every batch until
//! it is acknowledged, reconnects with jittered backoff, restates the frames
//! the unacknowledged batches may refer to, and resends them under their
//! original (stream id, sequence), which the server stores once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use apex_proto::auth::Channel;
use apex_proto::transport::{pause_or_stop, Retry};
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{Codec, Frame, InsertRequest, Shape, Transition};
use apex_proto::STREAM_FRAME_WINDOW;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

/// What every batch of one sender declares.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub shape: Vec<usize>,
    pub num_actions: usize,
    pub codec: Codec,
    pub actor_id: u32,
    pub max_in_flight: usize,
}

/// New frames and the transitions that refer to them (or to earlier frames).
struct Batch {
    frames: Vec<Frame>,
    transitions: Vec<Transition>,
}

pub struct Sender {
    /// Closed (taken) by `finish`, which tells the pump no more will come.
    batches: Option<mpsc::Sender<Batch>>,
    pump: Pump,
}

/// The task that owns the connection; its outcome is kept once read, since
/// both a failed `send` and `finish` ask for it.
enum Pump {
    Running(tokio::task::JoinHandle<Result<(), tonic::Status>>),
    Ended(Result<(), tonic::Status>),
}

impl Pump {
    async fn outcome(&mut self) -> Result<(), tonic::Status> {
        if let Pump::Running(task) = self {
            let r = task.await.unwrap_or_else(|e| {
                Err(tonic::Status::internal(format!(
                    "the insert stream task failed: {e}"
                )))
            });
            *self = Pump::Ended(r);
        }
        match self {
            Pump::Ended(r) => r.clone(),
            Pump::Running(_) => unreachable!("just awaited"),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if let Pump::Running(task) = &self.pump {
            task.abort();
        }
    }
}

impl Sender {
    /// A sender on `client` (the replay server at `addr`). It connects when
    /// the first batch comes and again whenever the connection fails with a
    /// transient error; once `stop` is cancelled it no longer reconnects.
    pub fn open(
        client: ReplayClient<Channel>,
        addr: &str,
        spec: StreamSpec,
        acknowledged: Arc<AtomicU64>,
        stop: CancellationToken,
    ) -> Sender {
        let (batches, input) = mpsc::channel(1);
        let state = Connection::new(client, spec, acknowledged);
        let retry = Retry::new("Insert", addr);
        Sender {
            batches: Some(batches),
            pump: Pump::Running(tokio::spawn(state.run(input, retry, stop))),
        }
    }

    /// Sends a batch, with the new frames its transitions (or later ones)
    /// refer to, once fewer than `max_in_flight` are unacknowledged.
    pub async fn send(
        &mut self,
        frames: Vec<Frame>,
        transitions: Vec<Transition>,
    ) -> Result<(), tonic::Status> {
        let batch = Batch {
            frames,
            transitions,
        };
        let batches = self
            .batches
            .as_ref()
            .expect("a sender is open until finish");
        if batches.send(batch).await.is_err() {
            return Err(match self.pump.outcome().await {
                Err(status) => status,
                Ok(()) => tonic::Status::unavailable("the insert stream ended"),
            });
        }
        Ok(())
    }

    /// Waits until every sent batch is acknowledged, then closes the stream.
    pub async fn finish(mut self) -> Result<(), tonic::Status> {
        self.batches = None;
        self.pump.outcome().await
    }
}

/// A batch sent and not yet acknowledged, with where the stream's frame
/// numbering stood before it (its transitions may refer to the
/// STREAM_FRAME_WINDOW frames before that).
struct Unacked {
    end_before: u64,
    request: InsertRequest,
}

struct Connection {
    client: ReplayClient<Channel>,
    spec: StreamSpec,
    acknowledged: Arc<AtomicU64>,
    stream_id: u64,
    next_sequence: u64,
    /// One past the newest frame id sent.
    frames_end: u64,
    /// The frames unacknowledged batches may still refer to, oldest first.
    window: VecDeque<Frame>,
    unacked: VecDeque<Unacked>,
}

/// How the current connection ended.
enum Ended {
    /// Every batch is acknowledged and no more will come.
    Done,
    /// Broken: connect again.
    Broken(tonic::Status),
}

impl Connection {
    fn new(client: ReplayClient<Channel>, spec: StreamSpec, acknowledged: Arc<AtomicU64>) -> Self {
        let stream_id = rand::random::<u64>().max(1);
        // The replay counts what each stream stored (Info with streams):
        // this line ties a stream to its actor.
        tracing::info!(stream_id, actor = spec.actor_id, "insert stream opened");
        Connection {
            client,
            spec,
            acknowledged,
            stream_id,
            next_sequence: 1,
            frames_end: 0,
            window: VecDeque::new(),
            unacked: VecDeque::new(),
        }
    }

    fn request(
        &self,
        frames: Vec<Frame>,
        transitions: Vec<Transition>,
        sequence: u64,
    ) -> InsertRequest {
        InsertRequest {
            obs_shape: Some(Shape::of(&self.spec.shape)),
            transitions,
            actor_id: self.spec.actor_id,
            frames,
            codec: self.spec.codec as i32,
            num_actions: self.spec.num_actions as u32,
            stream_id: self.stream_id,
            sequence,
        }
    }

    /// Numbers a new batch and keeps it (and its frames) until acknowledged.
    fn number(&mut self, batch: Batch) -> InsertRequest {
        let end_before = self.frames_end;
        if let Some(last) = batch.frames.last() {
            self.frames_end = last.id + 1;
        }
        self.window.extend(batch.frames.iter().cloned());
        let request = self.request(batch.frames, batch.transitions, self.next_sequence);
        self.next_sequence += 1;
        self.unacked.push_back(Unacked {
            end_before,
            request: request.clone(),
        });
        request
    }

    /// Where the server's frame window must begin for the oldest
    /// unacknowledged batch to be accepted again.
    fn base(&self) -> u64 {
        self.unacked
            .front()
            .map_or(self.frames_end, |u| u.end_before)
    }

    fn forget_old_frames(&mut self) {
        let oldest = self.base().saturating_sub(STREAM_FRAME_WINDOW);
        while self.window.front().is_some_and(|f| f.id < oldest) {
            self.window.pop_front();
        }
    }

    /// The requests that bring a new server stream to where this sender is:
    /// the frames before the oldest unacknowledged batch, then every
    /// unacknowledged batch as it was first sent.
    fn resume(&self) -> Vec<InsertRequest> {
        let base = self.base();
        let restated: Vec<Frame> = self
            .window
            .iter()
            .take_while(|f| f.id < base)
            .cloned()
            .collect();
        let restate = (!restated.is_empty()).then(|| self.request(restated, Vec::new(), 0));
        restate
            .into_iter()
            .chain(self.unacked.iter().map(|u| u.request.clone()))
            .collect()
    }

    fn acknowledge(&mut self, sequence: u64) -> Result<(), tonic::Status> {
        if sequence == 0 {
            return Ok(()); // a restatement of frames
        }
        let Some(u) = self.unacked.pop_front() else {
            return Err(tonic::Status::internal(format!(
                "the replay acknowledged batch {sequence}, but none is in flight"
            )));
        };
        if u.request.sequence != sequence {
            return Err(tonic::Status::internal(format!(
                "the replay acknowledged batch {sequence}, but batch {} was next",
                u.request.sequence
            )));
        }
        let n = u.request.transitions.len() as u64;
        self.acknowledged.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(crate::metrics::TRANSITIONS_SENT, "actor" => self.spec.actor_id.to_string())
            .increment(n);
        self.forget_old_frames();
        Ok(())
    }

    async fn run(
        mut self,
        mut input: mpsc::Receiver<Batch>,
        mut retry: Retry,
        stop: CancellationToken,
    ) -> Result<(), tonic::Status> {
        let mut input_open = true;
        loop {
            let status = match self
                .connection(&mut input, &mut input_open, &mut retry)
                .await?
            {
                Ended::Done => return Ok(()),
                Ended::Broken(status) => status,
            };
            apex_telemetry::grpc_error("Insert", &status);
            let wait = retry.failed(&status)?;
            // Shutting down: the peer may be stopping too.
            if stop.is_cancelled() || pause_or_stop(wait, &stop).await {
                return Err(status);
            }
        }
    }

    /// One connection: resends what is unacknowledged, then streams new
    /// batches until every batch is acknowledged and the input closed, or
    /// the connection breaks.
    async fn connection(
        &mut self,
        input: &mut mpsc::Receiver<Batch>,
        input_open: &mut bool,
        retry: &mut Retry,
    ) -> Result<Ended, tonic::Status> {
        if !*input_open && self.unacked.is_empty() {
            return Ok(Ended::Done);
        }
        let room = self.spec.max_in_flight.max(1);
        let (tx, rx) = mpsc::channel(room + 1);
        for request in self.resume() {
            tx.try_send(request)
                .expect("room for every unacknowledged batch");
        }
        let mut responses = match self.client.insert(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Ok(Ended::Broken(status)),
        };
        loop {
            if !*input_open && self.unacked.is_empty() {
                return Ok(Ended::Done);
            }
            let has_room = self.unacked.len() < room;
            tokio::select! {
                r = responses.next() => match r {
                    Some(Ok(answer)) => {
                        self.acknowledge(answer.sequence)?;
                        retry.succeeded();
                    }
                    Some(Err(status)) => return Ok(Ended::Broken(status)),
                    None => {
                        return Ok(Ended::Broken(tonic::Status::unavailable(
                            "the replay server closed the insert stream",
                        )))
                    }
                },
                b = input.recv(), if *input_open && has_room => match b {
                    Some(batch) => {
                        let request = self.number(batch);
                        // The server stopped reading: the answer says why.
                        let _ = tx.try_send(request);
                    }
                    None => *input_open = false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(ids: std::ops::Range<u64>) -> Vec<Frame> {
        ids.map(|id| Frame {
            id,
            data: vec![id as u8].into(),
        })
        .collect()
    }

    fn connection() -> Connection {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let channel = Channel::new(channel, Default::default());
        let spec = StreamSpec {
            shape: vec![1, 1],
            num_actions: 2,
            codec: Codec::None,
            actor_id: 0,
            max_in_flight: 4,
        };
        Connection::new(ReplayClient::new(channel), spec, Arc::default())
    }

    fn batch(ids: std::ops::Range<u64>) -> Batch {
        Batch {
            frames: frames(ids),
            transitions: vec![Transition::default()],
        }
    }

    #[tokio::test]
    async fn a_resumed_stream_restates_the_frames_before_its_oldest_unacknowledged_batch() {
        let mut c = connection();
        let w = STREAM_FRAME_WINDOW;
        let first = c.number(batch(0..w));
        let second = c.number(batch(w..w + 10));
        assert_eq!((first.sequence, second.sequence), (1, 2));
        assert!(first.stream_id != 0 && first.stream_id == second.stream_id);
        c.acknowledge(1).unwrap();
        let resume = c.resume();
        assert_eq!(resume.len(), 2, "the frames, then batch 2");
        let restated: Vec<u64> = resume[0].frames.iter().map(|f| f.id).collect();
        assert_eq!(
            restated,
            (0..w).collect::<Vec<_>>(),
            "the window before batch 2"
        );
        assert!(resume[0].transitions.is_empty() && resume[0].sequence == 0);
        assert_eq!(resume[1], second, "batch 2 as first sent");
        c.acknowledge(2).unwrap();
        assert!(
            c.resume()[0].frames.first().unwrap().id == 10,
            "older frames are forgotten"
        );
        assert_eq!(c.window.len() as u64, w);
        assert!(c.acknowledge(3).is_err(), "nothing is in flight");
    }

    #[tokio::test]
    async fn acknowledgements_must_come_in_order() {
        let mut c = connection();
        c.number(batch(0..2));
        c.number(batch(2..3));
        let e = c.acknowledge(2).unwrap_err();
        assert!(e.message().contains("batch 1 was next"), "{e}");
    }
}
