//! The `apex.v1.Replay` gRPC service over a [`Replay`].

use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

use apex_proto::v1::replay_server::Replay as ReplayRpc;
use apex_proto::v1::{
    CheckpointRequest, CheckpointResponse, Frame as WireFrame, InfoRequest, InfoResponse,
    InsertRequest, InsertResponse, SampleRequest, SampleResponse, Shape, UpdatePrioritiesRequest,
    UpdatePrioritiesResponse,
};
use apex_telemetry::grpc_error;
use bytes::Bytes;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::frame::{FrameData, SharedFrame};
use crate::limiter::{Side, Waited};
use crate::metrics as m;
use crate::store::{StoreError, MAX_BATCH};
use crate::stream::{StreamError, StreamFrames};
use crate::Replay;

/// Actor ids beyond this share one metrics label, so a sender cannot make
/// Prometheus series without bound.
const MAX_ACTOR_LABEL: u32 = 1024;

/// The most frame bytes one Sample response carries (below the message limit).
pub const MAX_SAMPLE_BYTES: usize = 192 << 20;

fn actor_label(id: u32) -> String {
    if id < MAX_ACTOR_LABEL {
        id.to_string()
    } else {
        "other".into()
    }
}

fn stream_status(e: StreamError) -> Status {
    match e {
        StreamError::WindowBudget { .. } => Status::resource_exhausted(e.to_string()),
        e => invalid(e),
    }
}

/// An insert waiting on the rate limiter adds its wait to the limiter's
/// metrics this often, so dashboards see a long wait as it happens.
const INSERT_WAIT_SLICE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct ReplayService {
    replay: Replay,
}

impl ReplayService {
    pub fn new(replay: Replay) -> Self {
        ReplayService { replay }
    }
}

/// Returns the result, counting a failure under `method`.
fn counted<T>(method: &'static str, r: Result<T, Status>) -> Result<T, Status> {
    if let Err(s) = &r {
        grpc_error(method, s);
    }
    r
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn shutting_down() -> Status {
    Status::unavailable("the replay server is shutting down: resend this batch when it is back")
}

async fn insert_batch(
    replay: &Replay,
    frames: &mut StreamFrames,
    req: InsertRequest,
    client: &tokio::sync::mpsc::Sender<Result<InsertResponse, Status>>,
) -> Result<InsertResponse, Status> {
    let start = Instant::now();
    let layout = StreamFrames::layout(&req).map_err(invalid)?;
    let store = replay.store();
    store.check_layout(&layout).map_err(invalid)?;
    let items = frames
        .accept(&req, &layout, store.ledger())
        .map_err(stream_status)?;
    metrics::gauge!(m::WINDOW_BYTES).set(replay.window_budget().used() as f64);
    let sequence = req.sequence;
    let answer = |inserted: usize, duplicate: bool| InsertResponse {
        inserted: inserted as u64,
        size: store.len() as u64,
        sequence,
        duplicate,
    };
    // A request that only restates frames stores nothing and waits for nothing.
    if items.is_empty() {
        return Ok(answer(0, false));
    }
    let stream =
        (req.stream_id != 0 && sequence != 0).then(|| replay.sequences().stream(req.stream_id));
    let duplicate = || {
        metrics::counter!(m::DUPLICATES).increment(1);
        Ok(answer(0, true))
    };
    if stream.as_ref().is_some_and(|s| s.lock().last >= sequence) {
        return duplicate();
    }
    loop {
        let waited = tokio::select! {
            w = replay.limiter().wait(Side::Insert, || store.len(), INSERT_WAIT_SLICE) => w,
            // Nobody is left to read the answer: stop holding the batch.
            _ = client.closed() => return Err(Status::cancelled("the client went away")),
        };
        match waited {
            Waited::Go => break,
            Waited::TimedOut => continue,
            Waited::Closed => return Err(shutting_down()),
        }
    }
    let Some(_open) = replay.insert_gate().await else {
        return Err(shutting_down());
    };
    let inserted = match &stream {
        // Checked again under the stream's lock: another connection of the
        // same sender may have stored this batch while this one waited.
        Some(s) => {
            let mut last = s.lock();
            if last.last >= sequence {
                drop(last);
                return duplicate();
            }
            let n = store.insert(items);
            last.last = sequence;
            last.transitions += n as u64;
            n
        }
        None => store.insert(items),
    };
    replay.limiter().inserted(inserted);
    replay.report_size();
    metrics::counter!(m::INSERTED, "actor" => actor_label(req.actor_id)).increment(inserted as u64);
    metrics::histogram!(m::INSERT_LATENCY).record(start.elapsed().as_secs_f64());
    apex_telemetry::grpc_handled("Insert", start);
    Ok(answer(inserted, false))
}

type InsertStream = Pin<Box<dyn Stream<Item = Result<InsertResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ReplayRpc for ReplayService {
    type InsertStream = InsertStream;

    async fn insert(
        &self,
        request: Request<Streaming<InsertRequest>>,
    ) -> Result<Response<InsertStream>, Status> {
        let Some(slot) = self.replay.open_insert_stream() else {
            let s = Status::resource_exhausted(format!(
                "this replay server serves {} insert streams at most: try again later, or raise --max-insert-streams",
                self.replay.config().max_insert_streams
            ));
            return counted("Insert", Err(s));
        };
        let mut inbound = request.into_inner();
        // One response slot: a client that stops reading stops our reading too.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let replay = self.replay.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let streams = metrics::gauge!(m::INSERT_STREAMS);
            streams.increment(1.0);
            let mut frames = StreamFrames::new(replay.window_budget().clone());
            while let Some(next) = inbound.next().await {
                let reply = match next {
                    Ok(req) => {
                        counted("Insert", insert_batch(&replay, &mut frames, req, &tx).await)
                    }
                    Err(s) => {
                        // The actor went away; nothing to answer.
                        tracing::debug!(status = %s, "insert stream ended with an error");
                        break;
                    }
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
            streams.decrement(1.0);
            drop(frames);
            metrics::gauge!(m::WINDOW_BYTES).set(replay.window_budget().used() as f64);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn sample(
        &self,
        request: Request<SampleRequest>,
    ) -> Result<Response<SampleResponse>, Status> {
        let start = Instant::now();
        let request = request.into_inner();
        let n = request.batch_size as usize;
        if !(0.0..=1.0).contains(&request.beta) {
            let s = Status::invalid_argument(format!("beta {} must be in [0, 1]", request.beta));
            return counted("Sample", Err(s));
        }
        if n == 0 || n > MAX_BATCH {
            let e = StoreError::BadBatchSize {
                got: n,
                max: MAX_BATCH,
            };
            return counted("Sample", Err(invalid(e)));
        }
        let replay = &self.replay;
        let store = replay.store();
        let limit = replay.limiter().limit();
        let waited = replay
            .limiter()
            .wait(Side::Sample, || store.len(), replay.config().sample_timeout)
            .await;
        if waited == Waited::Closed {
            return counted("Sample", Err(shutting_down()));
        }
        if waited == Waited::TimedOut {
            let size = store.len();
            let why = if size < limit.min_size {
                format!("the replay holds {size} transitions and sampling starts at {}: wait for the actors", limit.min_size)
            } else {
                format!(
                    "the rate limiter holds sampling back: {} samples per insert (tolerance {}) and inserts are behind; wait for the actors or raise --samples-per-insert",
                    limit.samples_per_insert.unwrap_or(0.0),
                    limit.error_buffer
                )
            };
            return counted("Sample", Err(Status::failed_precondition(why)));
        }
        let sample = counted(
            "Sample",
            store.sample(n, request.beta as f64).map_err(|e| match e {
                StoreError::Empty => Status::failed_precondition(e.to_string()),
                _ => invalid(e),
            }),
        )?;
        let layout = store.layout().expect("a store that sampled has a layout");
        let channels = layout.channels();
        // Each distinct frame once.
        let mut index: HashMap<*const FrameData, u32> = HashMap::new();
        let mut frame_bytes = 0;
        let mut r = SampleResponse {
            obs_shape: Some(Shape::of(&layout.shape)),
            codec: layout.codec as i32,
            obs_frames: Vec::with_capacity(n * channels),
            next_obs_frames: Vec::with_capacity(n * channels),
            ..Default::default()
        };
        for item in &sample.items {
            for (k, f) in item.frames.iter().enumerate() {
                let next = index.len() as u32;
                let i = *index.entry(std::sync::Arc::as_ptr(f)).or_insert_with(|| {
                    frame_bytes += f.bytes().len();
                    r.frames.push(WireFrame {
                        id: next as u64,
                        data: Bytes::from_owner(SharedFrame(f.clone())),
                    });
                    next
                });
                if k < channels {
                    r.obs_frames.push(i);
                } else {
                    r.next_obs_frames.push(i);
                }
            }
            r.actions.push(item.action);
            r.rewards.push(item.reward);
            r.discounts.push(item.discount);
        }
        if frame_bytes > MAX_SAMPLE_BYTES {
            let s = Status::resource_exhausted(format!(
                "a batch of {n} carries {frame_bytes} frame bytes, more than the {MAX_SAMPLE_BYTES} a response may: ask for a smaller batch"
            ));
            return counted("Sample", Err(s));
        }
        // Counted for the rate limiter only once the batch goes out.
        replay.limiter().sampled(n);
        r.ids = sample.ids;
        r.weights = sample.weights;
        metrics::counter!(m::SAMPLED).increment(n as u64);
        metrics::histogram!(m::SAMPLE_LATENCY).record(start.elapsed().as_secs_f64());
        apex_telemetry::grpc_handled("Sample", start);
        Ok(Response::new(r))
    }

    async fn update_priorities(
        &self,
        request: Request<UpdatePrioritiesRequest>,
    ) -> Result<Response<UpdatePrioritiesResponse>, Status> {
        let start = Instant::now();
        let req = request.into_inner();
        if req.ids.len() != req.priorities.len() {
            let s = Status::invalid_argument(format!(
                "{} ids but {} priorities: send one priority per id",
                req.ids.len(),
                req.priorities.len()
            ));
            return counted("UpdatePriorities", Err(s));
        }
        if req.ids.len() > MAX_BATCH {
            let s = Status::invalid_argument(format!(
                "{} ids in one update, more than {MAX_BATCH}: send the priorities of one sampled batch per call",
                req.ids.len()
            ));
            return counted("UpdatePriorities", Err(s));
        }
        if let Some(p) = req.priorities.iter().find(|p| !crate::valid_priority(**p)) {
            return counted(
                "UpdatePriorities",
                Err(Status::invalid_argument(format!(
                    "priority {p} is not a number in [0, {}]: send |TD error|",
                    crate::MAX_PRIORITY
                ))),
            );
        }
        let (updated, missing) = self
            .replay
            .store()
            .update_priorities(&req.ids, &req.priorities);
        metrics::counter!(m::PRIORITY_UPDATES, "outcome" => "updated").increment(updated as u64);
        metrics::counter!(m::PRIORITY_UPDATES, "outcome" => "missing").increment(missing as u64);
        apex_telemetry::grpc_handled("UpdatePriorities", start);
        Ok(Response::new(UpdatePrioritiesResponse {
            updated: updated as u64,
            missing: missing as u64,
        }))
    }

    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let streams = match req.get_ref().streams {
            true => self.replay.sequences().snapshot(),
            false => Vec::new(),
        };
        let store = self.replay.store();
        let c = store.counters();
        let size = store.len();
        let bytes = store.stored_bytes();
        Ok(Response::new(InfoResponse {
            size: size as u64,
            capacity: store.capacity() as u64,
            inserted_total: c.inserted_total,
            sampled_total: c.sampled_total,
            obs_shape: store.layout().map(|l| Shape::of(&l.shape)),
            stored_bytes: bytes as u64,
            bytes_per_transition: if size == 0 {
                0.0
            } else {
                bytes as f64 / size as f64
            },
            checkpoints_total: self.replay.checkpoints(),
            num_actions: store.layout().map_or(0, |l| l.num_actions),
            streams: streams
                .into_iter()
                .map(|s| apex_proto::v1::StreamTotal {
                    stream_id: s.id,
                    sequence: s.last,
                    transitions: s.transitions,
                })
                .collect(),
        }))
    }

    async fn checkpoint(
        &self,
        _: Request<CheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        match self.replay.checkpoint().await {
            Ok(Some(r)) => Ok(Response::new(CheckpointResponse {
                path: r.path.display().to_string(),
                transitions: r.transitions as u64,
                bytes: r.bytes,
            })),
            Ok(None) => counted(
                "Checkpoint",
                Err(Status::failed_precondition(
                    "this replay server has no checkpoint folder: start it with --checkpoint-dir",
                )),
            ),
            Err(e) => counted("Checkpoint", Err(Status::internal(e.to_string()))),
        }
    }
}
