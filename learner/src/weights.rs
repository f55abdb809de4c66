//! Versioned weights and the `apex.v1.Parameters` service that streams them
//! to actors in chunks (the Nature CNN's 6.8 MB exceeds one default message).

use std::pin::Pin;
use std::sync::{Arc, RwLock};

use apex_proto::v1::parameters_server::Parameters;
use apex_proto::v1::{WeightsChunk, WeightsRequest};
use apex_proto::WEIGHTS_CHUNK_BYTES;
use bytes::Bytes;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The newest published weights; version 0 means none yet.
#[derive(Clone, Default)]
pub struct Published {
    inner: Arc<RwLock<(u64, Bytes)>>,
}

impl Published {
    pub fn publish(&self, version: u64, weights: Vec<u8>) {
        *self.inner.write().expect("weights lock poisoned") = (version, Bytes::from(weights));
    }

    pub fn current(&self) -> (u64, Bytes) {
        self.inner.read().expect("weights lock poisoned").clone()
    }
}

#[derive(Clone)]
pub struct ParametersService {
    published: Published,
}

impl ParametersService {
    pub fn new(published: Published) -> Self {
        ParametersService { published }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<WeightsChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Parameters for ParametersService {
    type GetWeightsStream = ChunkStream;

    async fn get_weights(
        &self,
        request: Request<WeightsRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let have = request.into_inner().have_version;
        let (version, data) = self.published.current();
        let chunks: Vec<Result<WeightsChunk, Status>> = if version > have {
            let total = data.len() as u64;
            (0..data.len())
                .step_by(WEIGHTS_CHUNK_BYTES)
                .map(|at| {
                    Ok(WeightsChunk {
                        version,
                        total_bytes: total,
                        data: data.slice(at..(at + WEIGHTS_CHUNK_BYTES).min(data.len())),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
