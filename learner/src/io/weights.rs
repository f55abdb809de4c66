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

/// A publication: weights, their version, and the updates behind them.
#[derive(Clone, Default)]
pub struct Weights {
    pub version: u64,
    pub updates: u64,
    pub data: Bytes,
}

/// The newest published weights; version 0 means none yet.
#[derive(Clone, Default)]
pub struct Published {
    inner: Arc<RwLock<Weights>>,
}

impl Published {
    pub fn publish(&self, version: u64, updates: u64, weights: Vec<u8>) {
        *self.inner.write().expect("weights lock poisoned") = Weights {
            version,
            updates,
            data: Bytes::from(weights),
        };
    }

    pub fn current(&self) -> Weights {
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

    /// Streams the current weights whenever their version differs from the
    /// caller's `have_version`, not only when it is higher: a restarted
    /// learner numbers its versions from its checkpoint, which may be below
    /// what an actor got from the learner before it, and that actor must
    /// still get the current weights. Nothing is streamed when the versions
    /// match or before the first publication (version 0).
    async fn get_weights(
        &self,
        request: Request<WeightsRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let have = request.into_inner().have_version;
        let Weights {
            version,
            updates,
            data,
        } = self.published.current();
        let chunks: Vec<Result<WeightsChunk, Status>> = if version != have && version != 0 {
            let total = data.len() as u64;
            (0..data.len())
                .step_by(WEIGHTS_CHUNK_BYTES)
                .map(|at| {
                    Ok(WeightsChunk {
                        version,
                        updates,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    async fn fetch(service: &ParametersService, have: u64) -> (u64, Vec<u8>) {
        let mut stream = service
            .get_weights(Request::new(WeightsRequest { have_version: have }))
            .await
            .unwrap()
            .into_inner();
        let (mut version, mut data) = (0, Vec::new());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            version = chunk.version;
            data.extend_from_slice(&chunk.data);
        }
        (version, data)
    }

    #[tokio::test]
    async fn any_other_version_gets_the_current_weights() {
        let published = Published::default();
        let service = ParametersService::new(published.clone());
        assert_eq!(
            fetch(&service, 0).await,
            (0, vec![]),
            "nothing published yet"
        );
        let weights = vec![7u8; WEIGHTS_CHUNK_BYTES + 5];
        published.publish(4, 100, weights.clone());
        assert_eq!(fetch(&service, 0).await, (4, weights.clone()));
        assert_eq!(fetch(&service, 3).await, (4, weights.clone()));
        assert_eq!(fetch(&service, 4).await, (0, vec![]), "up to date");
        // An actor that saw version 9 from an earlier learner incarnation.
        assert_eq!(fetch(&service, 9).await, (4, weights));
    }
}
