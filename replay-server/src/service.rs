//! The `apex.v1.Replay` gRPC service over a shared [`Store`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use apex_proto::v1::replay_server::Replay;
use apex_proto::v1::{
    InfoRequest, InfoResponse, InsertRequest, InsertResponse, SampleRequest, SampleResponse, Shape,
    UpdatePrioritiesRequest, UpdatePrioritiesResponse,
};
use apex_telemetry::grpc_error;
use bytes::BytesMut;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics as m;
use crate::store::{Item, Store, StoreError};

#[derive(Clone)]
pub struct ReplayService {
    store: Arc<Mutex<Store>>,
}

impl ReplayService {
    pub fn new(store: Arc<Mutex<Store>>) -> Self {
        ReplayService { store }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("replay store lock poisoned")
    }
}

fn status(e: StoreError) -> Status {
    match e {
        StoreError::NotEnough { .. } => Status::failed_precondition(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

/// Returns the result, counting a failure under `method`.
fn counted<T>(method: &'static str, r: Result<T, Status>) -> Result<T, Status> {
    if let Err(s) = &r {
        grpc_error(method, s);
    }
    r
}

fn insert_batch(store: &Mutex<Store>, req: InsertRequest) -> Result<InsertResponse, Status> {
    let shape = req.obs_shape.ok_or_else(|| {
        Status::invalid_argument("obs_shape is missing: send the observation shape")
    })?;
    let items: Vec<Item> = req
        .transitions
        .into_iter()
        .map(|t| Item {
            obs: t.obs,
            action: t.action,
            reward: t.reward,
            discount: t.discount,
            next_obs: t.next_obs,
            priority: t.priority,
        })
        .collect();
    let mut store = store.lock().expect("replay store lock poisoned");
    let inserted = store.insert(&shape.dims(), items).map_err(status)?;
    let size = store.len();
    drop(store);
    metrics::counter!(m::INSERTED, "actor" => req.actor_id.to_string()).increment(inserted as u64);
    metrics::gauge!(m::SIZE).set(size as f64);
    Ok(InsertResponse {
        inserted: inserted as u64,
        size: size as u64,
    })
}

type InsertStream = Pin<Box<dyn Stream<Item = Result<InsertResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Replay for ReplayService {
    type InsertStream = InsertStream;

    async fn insert(
        &self,
        request: Request<Streaming<InsertRequest>>,
    ) -> Result<Response<InsertStream>, Status> {
        let mut inbound = request.into_inner();
        // One response slot: a client that stops reading stops our reading too.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let store = self.store.clone();
        tokio::spawn(async move {
            let streams = metrics::gauge!(m::INSERT_STREAMS);
            streams.increment(1.0);
            while let Some(next) = inbound.next().await {
                let reply = match next {
                    Ok(req) => counted("Insert", insert_batch(&store, req)),
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
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn sample(
        &self,
        request: Request<SampleRequest>,
    ) -> Result<Response<SampleResponse>, Status> {
        let request = request.into_inner();
        let n = request.batch_size as usize;
        if !(0.0..=1.0).contains(&request.beta) {
            let s = Status::invalid_argument(format!("beta {} must be in [0, 1]", request.beta));
            return counted("Sample", Err(s));
        }
        let (sample, shape) = {
            let mut store = self.store();
            let sample = counted(
                "Sample",
                store.sample(n, request.beta as f64).map_err(status),
            )?;
            (
                sample,
                store
                    .obs_shape()
                    .expect("a non-empty store has a shape")
                    .to_vec(),
            )
        };
        // Copy the batch out of the lock.
        let per = shape.iter().product::<usize>();
        let mut obs = BytesMut::with_capacity(n * per);
        let mut next_obs = BytesMut::with_capacity(n * per);
        let mut r = SampleResponse {
            obs_shape: Some(Shape::of(&shape)),
            ..Default::default()
        };
        for item in &sample.items {
            obs.extend_from_slice(&item.obs);
            next_obs.extend_from_slice(&item.next_obs);
            r.actions.push(item.action);
            r.rewards.push(item.reward);
            r.discounts.push(item.discount);
        }
        r.ids = sample.ids;
        r.weights = sample.weights;
        r.obs = obs.freeze();
        r.next_obs = next_obs.freeze();
        metrics::counter!(m::SAMPLED).increment(n as u64);
        Ok(Response::new(r))
    }

    async fn update_priorities(
        &self,
        request: Request<UpdatePrioritiesRequest>,
    ) -> Result<Response<UpdatePrioritiesResponse>, Status> {
        let req = request.into_inner();
        if req.ids.len() != req.priorities.len() {
            let s = Status::invalid_argument(format!(
                "{} ids but {} priorities: send one priority per id",
                req.ids.len(),
                req.priorities.len()
            ));
            return counted("UpdatePriorities", Err(s));
        }
        if let Some(p) = req.priorities.iter().find(|p| !p.is_finite() || **p < 0.0) {
            return counted(
                "UpdatePriorities",
                Err(Status::invalid_argument(format!(
                    "priority {p} is not a finite non-negative number"
                ))),
            );
        }
        let (updated, missing) = self.store().update_priorities(&req.ids, &req.priorities);
        metrics::counter!(m::PRIORITY_UPDATES, "outcome" => "updated").increment(updated as u64);
        metrics::counter!(m::PRIORITY_UPDATES, "outcome" => "missing").increment(missing as u64);
        Ok(Response::new(UpdatePrioritiesResponse {
            updated: updated as u64,
            missing: missing as u64,
        }))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let store = self.store();
        Ok(Response::new(InfoResponse {
            size: store.len() as u64,
            capacity: store.capacity() as u64,
            inserted_total: store.inserted_total(),
            sampled_total: store.sampled_total(),
            obs_shape: store.obs_shape().map(Shape::of),
        }))
    }
}
