//! The replay server: a bounded, prioritized store of transitions that
//! actors stream into and the learner samples from, over gRPC (`apex.v1.Replay`). It never
//! links libtorch.

mod metrics;
pub mod service;
pub mod store;
pub mod sum_tree;

use std::future::Future;
use std::sync::{Arc, Mutex};

use apex_proto::v1::replay_server::ReplayServer;
use apex_proto::MAX_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use service::ReplayService;
pub use store::Store;

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    /// Transitions held before the oldest are evicted.
    pub capacity: usize,
    /// Sampling is refused below this many transitions.
    pub min_size: usize,
    /// Priority exponent: items are drawn with probability p^alpha / sum p^alpha; 0 is uniform.
    pub alpha: f64,
    pub seed: u64,
}

/// A running replay's shared state, for in-process progress reports.
#[derive(Clone)]
pub struct Replay {
    store: Arc<Mutex<Store>>,
}

impl Replay {
    pub fn new(config: &ReplayConfig) -> Self {
        ::metrics::gauge!(metrics::CAPACITY).set(config.capacity as f64);
        metrics::describe();
        Replay {
            store: Arc::new(Mutex::new(Store::new(
                config.capacity,
                config.min_size,
                config.alpha,
                config.seed,
            ))),
        }
    }

    pub fn size(&self) -> usize {
        self.store.lock().expect("replay store lock poisoned").len()
    }

    /// Serves `apex.v1.Replay` and gRPC health on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ReplayServer<ReplayService>>().await;
        let service = ReplayServer::new(ReplayService::new(self.store))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
    }
}

/// Runs a replay server on `listener` until `shutdown`.
pub async fn run(
    config: ReplayConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    Replay::new(&config).serve(listener, shutdown).await
}
