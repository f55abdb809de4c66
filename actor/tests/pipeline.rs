//! The three services in this process on 127.0.0.1:0, over real gRPC:
//! transitions arrive intact, the learner trains, actors get newer weights,
//! everything stops cleanly, and the unchanged pipeline learns Catch.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use apex_actor::policy::Exploration;
use apex_actor::{ActorConfig, ActorStats};
use apex_env::{CatchConfig, EnvSpec, Environment};
use apex_learner::dqn::{DqnConfig, Optimizer};
use apex_learner::{LearnerConfig, LearnerStats};
use apex_model::{Arch, QNetConfig};
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::Codec;
use apex_proto::v1::{InfoRequest, SampleRequest};
use apex_replay_server::ReplayConfig;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const ARCH: Arch = Arch::Mlp { hidden: 128 };
const GAMMA: f32 = 0.99;

/// A replay server and a learner running in this process.
struct Services {
    replay_addr: String,
    learner_addr: String,
    shutdown: CancellationToken,
    replay: JoinHandle<Result<(), apex_replay_server::ReplayError>>,
    learner: JoinHandle<Result<apex_learner::LearnerReport, apex_learner::LearnerError>>,
}

async fn start(replay: ReplayConfig, max_updates: u64, run_dir: &std::path::Path) -> Services {
    let replay_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let learner_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replay_addr = format!("http://{}", replay_listener.local_addr().unwrap());
    let learner_addr = format!("http://{}", learner_listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let replay = tokio::spawn(apex_replay_server::run(
        replay,
        replay_listener,
        shutdown.clone(),
    ));
    let learner = tokio::spawn(apex_learner::run(
        learner_config(&replay_addr, max_updates, run_dir),
        learner_listener,
        shutdown.clone(),
        Arc::new(LearnerStats::default()),
    ));
    Services {
        replay_addr,
        learner_addr,
        shutdown,
        replay,
        learner,
    }
}

fn learner_config(replay_addr: &str, max_updates: u64, run_dir: &std::path::Path) -> LearnerConfig {
    LearnerConfig {
        replay_addr: replay_addr.to_owned(),
        obs_shape: vec![1, 10, 5],
        num_actions: 3,
        arch: ARCH,
        dueling: true,
        quantiles: None,
        dqn: DqnConfig {
            optimizer: Optimizer::Adam { eps: 1e-8 },
            learning_rate: 1e-3,
            learning_rate_decay: None,
            max_grad_norm: 40.0,
            target_update_every: 200,
            double: true,
            loss: apex_learner::dqn::TdLoss::Huber,
            munchausen: None,
        },
        batch_size: 64,
        publish_every: 10,
        checkpoint_every: 1000,
        run_dir: Some(run_dir.to_owned()),
        cuda: false,
        max_updates: Some(max_updates),
        prefetch: 2,
        input_workers: 1,
        batch_slices: 1,
        torch_threads: 1,
        beta_start: 0.4,
        beta_end: 1.0,
        beta_anneal_updates: max_updates,
        tensorboard: None,
        token: None,
        tls: Default::default(),
    }
}

/// Catch has few environments per test, so the ladder is flattened
/// (alpha 2: epsilon 0.4 down to 0.064) to keep exploring the edges.
fn actor_config(
    s: &Services,
    index: usize,
    count: usize,
    envs: usize,
    steps: u64,
    n_step: usize,
    codec: Codec,
) -> ActorConfig {
    ActorConfig {
        replay_addr: s.replay_addr.clone(),
        learner_addr: s.learner_addr.clone(),
        env: EnvSpec::Catch(CatchConfig::default()),
        arch: ARCH,
        dueling: true,
        quantiles: None,
        actor_index: index,
        actor_count: count,
        envs,
        exploration: Exploration {
            base: 0.4,
            alpha: 2.0,
            start: 1.0,
            decay_steps: 0,
        },
        n_step,
        gamma: GAMMA,
        send_batch: 32,
        max_in_flight: 2,
        weights_refresh_steps: 10,
        max_env_steps: Some(steps),
        seed: 17 + index as u64,
        codec,
        token: None,
        tls: Default::default(),
        // Two actors of 3 or 4 environments: one in groups, one not.
        inference_groups: 1 + index,
        torch_threads: 1,
    }
}

fn replay_config(capacity: usize, min_size: usize, seed: u64) -> ReplayConfig {
    ReplayConfig::in_memory(capacity, min_size, 0.6, seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transitions_flow_weights_return_and_shutdown_is_clean() {
    let run_dir = tempfile::tempdir().unwrap();
    let replay = replay_config(5000, 200, 1);
    let s = start(replay, 100, run_dir.path()).await;
    let actor_stats: Vec<Arc<ActorStats>> =
        (0..2).map(|_| Arc::new(ActorStats::default())).collect();
    let actors: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(apex_actor::run(
                // Enough steps that the learner's 100 updates and their
                // publications come while the actors still play, however
                // fast the machine (3,000 could end before the first one).
                actor_config(&s, i, 2, 3, 20000, 1, Codec::Lz4),
                s.shutdown.clone(),
                actor_stats[i].clone(),
            ))
        })
        .collect();
    let mut reports = Vec::new();
    for a in actors {
        reports.push(a.await.unwrap().expect("actor ran"));
    }
    let learned = s.learner.await.unwrap().expect("learner ran");
    assert_eq!(learned.updates, 100);
    assert!(
        learned.version >= 10,
        "the learner published new weights: {learned:?}"
    );
    for (r, st) in reports.iter().zip(&actor_stats) {
        assert!(r.env_steps >= 3000 && r.episodes > 0, "{r:?}");
        assert!(
            st.weights_version.load(Ordering::Relaxed) > 1,
            "the actor picked up newer weights"
        );
    }
    assert!(
        run_dir.path().join("checkpoint.ot").exists(),
        "a checkpoint on shutdown"
    );

    // Everything the actors had acknowledged is in the replay, intact.
    let mut client = ReplayClient::connect(s.replay_addr.clone()).await.unwrap();
    let info = client
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let acked: u64 = actor_stats
        .iter()
        .map(|a| a.transitions_acknowledged.load(Ordering::Relaxed))
        .sum();
    // n = 1: one transition per step, all sent by the end.
    let steps: u64 = reports.iter().map(|r| r.env_steps).sum();
    assert_eq!((info.inserted_total, acked), (steps, steps));
    assert_eq!(info.obs_shape.unwrap().dims, vec![1, 10, 5]);
    let batch = client
        .sample(SampleRequest {
            batch_size: 256,
            beta: 0.4,
        })
        .await
        .unwrap()
        .into_inner();
    let (all_obs, all_next) = apex_proto::sample_frames::observations(&batch).unwrap();
    assert_eq!(all_obs.len(), 256 * 50);
    for i in 0..256 {
        let (obs, next) = (
            &all_obs[i * 50..(i + 1) * 50],
            &all_next[i * 50..(i + 1) * 50],
        );
        assert!(obs.iter().chain(next).all(|&p| p == 0 || p == 255));
        let ball_row = |o: &[u8]| o[..45].iter().position(|&p| p == 255).map(|at| at / 5);
        let (r, d, a) = (batch.rewards[i], batch.discounts[i], batch.actions[i]);
        assert!(a < 3);
        if d == 0.0 {
            assert!(
                r == 1.0 || r == -1.0,
                "a Catch episode ends with a catch or a miss: {r}"
            );
        } else {
            assert_eq!((r, d), (0.0, GAMMA));
            // The ball fell exactly one row.
            assert_eq!(
                ball_row(next),
                ball_row(obs).map(|row| row + 1),
                "transition {i}"
            );
        }
    }
    s.shutdown.cancel();
    s.replay.await.unwrap().expect("replay stopped cleanly");
}

/// Greedy catch rate of the network saved at `path` over `episodes` games.
fn catch_rate(path: &std::path::Path, episodes: usize) -> f64 {
    let net = QNetConfig::new(ARCH, &[1, 10, 5], 3, true);
    let policy =
        apex_model::policy::PolicyNet::from_weights(net, &std::fs::read(path).unwrap(), 1).unwrap();
    let mut env = apex_env::Catch::new(CatchConfig::default(), 12345);
    let mut caught = 0;
    let mut by_column = [(0usize, 0usize); 5];
    for _ in 0..episodes {
        env.reset();
        let column = env.obs()[..5].iter().position(|&p| p == 255).unwrap();
        loop {
            let action = policy.greedy(env.obs(), 1)[0];
            let step = env.step(action);
            if step.done() {
                caught += (step.raw_reward > 0) as usize;
                by_column[column].0 += (step.raw_reward > 0) as usize;
                by_column[column].1 += 1;
                break;
            }
        }
    }
    println!("catches by starting column: {by_column:?}");
    caught as f64 / episodes as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_learns_catch() {
    let run_dir = tempfile::tempdir().unwrap();
    let replay = replay_config(50_000, 500, 2);
    let s = start(replay, 6000, run_dir.path()).await;
    // The budget: 50,000 environment steps over 2 actors of 4 environments.
    let actors: Vec<_> = (0..2)
        .map(|i| {
            tokio::spawn(apex_actor::run(
                actor_config(&s, i, 2, 4, 25_000, 3, Codec::Zstd),
                s.shutdown.clone(),
                Arc::new(ActorStats::default()),
            ))
        })
        .collect();
    for a in actors {
        a.await.unwrap().expect("actor ran");
    }
    s.learner.await.unwrap().expect("learner ran");
    s.shutdown.cancel();
    s.replay.await.unwrap().unwrap();
    let rate = catch_rate(&run_dir.path().join("checkpoint.ot"), 500);
    println!("greedy catch rate after 50,000 environment steps: {rate:.3}");
    assert!(rate >= 0.9, "catch rate {rate:.3} is below 0.9");
}
