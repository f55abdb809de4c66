//! A replay server and learners in the test process on 127.0.0.1, and a
//! tiny environment's transitions to feed them: observations of one 2x2
//! frame, 3 actions.

#![allow(dead_code)] // each test file uses its own part

use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apex_learner::dqn::{DqnConfig, Optimizer};
use apex_learner::{LearnerConfig, LearnerError, LearnerReport, LearnerStats};
use apex_model::Arch;
use apex_proto::v1::parameters_client::ParametersClient;
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{
    Codec, Frame, InfoRequest, InfoResponse, InsertRequest, Shape, Transition, WeightsRequest,
};
use apex_replay_server::{ReplayConfig, ReplayError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

pub const OBS_SHAPE: [usize; 3] = [1, 2, 2];
pub const NUM_ACTIONS: usize = 3;
pub const BATCH: usize = 8;

pub struct Replay {
    pub addr: String,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), ReplayError>>,
}

/// A replay server on `listener` holding at most `capacity` transitions
/// (the oldest go first: one shard, one FIFO), sampling from 8.
pub fn start_replay(listener: TcpListener, capacity: usize) -> Replay {
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let mut config = ReplayConfig::in_memory(capacity, BATCH, 0.6, 1);
    config.store.shards = 1;
    config.sample_timeout = Duration::from_millis(200);
    let task = tokio::spawn(apex_replay_server::run(config, listener, shutdown.clone()));
    Replay {
        addr,
        shutdown,
        task,
    }
}

impl Replay {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the replay server stops")
            .unwrap()
            .unwrap();
    }

    pub async fn info(&self) -> InfoResponse {
        let mut client = ReplayClient::connect(self.addr.clone()).await.unwrap();
        client
            .info(InfoRequest::default())
            .await
            .unwrap()
            .into_inner()
    }
}

/// Inserts `n` transitions of one stream: step t goes from frame t to
/// t + 1 with `action(t)`, declaring `num_actions` to the replay.
pub async fn fill(addr: &str, n: u64, num_actions: u32, action: impl Fn(u64) -> u32) {
    let frame = |id: u64| Frame {
        id,
        data: Codec::Lz4.encode(&[(id * 37 % 256) as u8; 4]).into(),
    };
    let request = InsertRequest {
        obs_shape: Some(Shape::of(&OBS_SHAPE)),
        codec: Codec::Lz4 as i32,
        frames: (0..=n).map(frame).collect(),
        transitions: (0..n)
            .map(|t| Transition {
                obs: vec![t],
                next_obs: vec![t + 1],
                action: action(t),
                reward: (t % 2) as f32,
                discount: if t % 5 == 4 { 0.0 } else { 0.9 },
                priority: 1.0,
            })
            .collect(),
        num_actions,
        ..Default::default()
    };
    let mut client = ReplayClient::connect(addr.to_owned()).await.unwrap();
    let answers: Vec<_> = client
        .insert(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    for a in answers {
        a.expect("the replay takes the transitions");
    }
}

pub fn learner_config(
    replay_addr: &str,
    run_dir: Option<&Path>,
    max_updates: Option<u64>,
) -> LearnerConfig {
    LearnerConfig {
        replay_addr: replay_addr.to_owned(),
        obs_shape: OBS_SHAPE.to_vec(),
        num_actions: NUM_ACTIONS,
        arch: Arch::Mlp { hidden: 16 },
        dueling: true,
        quantiles: None,
        dqn: DqnConfig {
            optimizer: Optimizer::Adam { eps: 1e-8 },
            learning_rate: 1e-3,
            learning_rate_decay: None,
            max_grad_norm: 10.0,
            target_update_every: 7,
            double: true,
            loss: apex_learner::dqn::TdLoss::Huber,
            munchausen: None,
        },
        batch_size: BATCH,
        publish_every: 10,
        checkpoint_every: 10,
        run_dir: run_dir.map(Path::to_owned),
        cuda: false,
        max_updates,
        prefetch: 2,
        input_workers: 1,
        batch_slices: 1,
        torch_threads: 1,
        beta_start: 0.4,
        beta_end: 1.0,
        beta_anneal_updates: 100,
        tensorboard: None,
        token: None,
        tls: Default::default(),
    }
}

pub struct Learner {
    pub addr: String,
    pub shutdown: CancellationToken,
    pub stats: Arc<LearnerStats>,
    pub task: JoinHandle<Result<LearnerReport, LearnerError>>,
}

pub async fn start_learner(config: LearnerConfig) -> Learner {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let stats = Arc::new(LearnerStats::default());
    let task = tokio::spawn(apex_learner::run(
        config,
        listener,
        shutdown.clone(),
        stats.clone(),
    ));
    Learner {
        addr,
        shutdown,
        stats,
        task,
    }
}

impl Learner {
    pub fn updates(&self) -> u64 {
        self.stats.updates.load(Ordering::Relaxed)
    }

    /// The version and updates of the weights it serves.
    pub async fn published(&self) -> (u64, u64) {
        let mut client = ParametersClient::connect(self.addr.clone()).await.unwrap();
        let mut chunks = client
            .get_weights(WeightsRequest { have_version: 0 })
            .await
            .unwrap()
            .into_inner();
        let chunk = chunks.next().await.expect("weights are published").unwrap();
        (chunk.version, chunk.updates)
    }

    /// Waits for it to end by itself.
    pub async fn finished(self) -> LearnerReport {
        tokio::time::timeout(Duration::from_secs(120), self.task)
            .await
            .expect("the learner finishes")
            .unwrap()
            .unwrap()
    }

    pub async fn stop(self) -> LearnerReport {
        self.shutdown.cancel();
        self.finished().await
    }
}

/// Polls `done` until it holds; false after `limit`.
pub async fn eventually<F: Future<Output = bool>>(
    limit: Duration,
    mut done: impl FnMut() -> F,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
