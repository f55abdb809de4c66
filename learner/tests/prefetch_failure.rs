//! A prefetch that fails (here a panic while decoding, where a sticky CUDA
//! error would surface) stops the learner with an error naming it, after
//! it has trained: never a clean stop. Its own test binary, because fault
//! points are the whole process's.

mod common;

use std::time::Duration;

use apex_learner::LearnerError;
use common::*;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_prefetch_is_the_learners_error() {
    let scenario = fail::FailScenario::setup();
    let capacity = 64;
    let replay = start_replay(TcpListener::bind("127.0.0.1:0").await.unwrap(), capacity);
    fill(&replay.addr, capacity as u64, NUM_ACTIONS as u32, |t| {
        (t % 3) as u32
    })
    .await;
    let mut config = learner_config(&replay.addr, None, None);
    config.input_workers = 2;
    let learner = start_learner(config).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            learner.updates() >= 10
        })
        .await,
        "the learner trains before the fault"
    );
    fail::cfg("learner::decode", "panic(the device is gone)").unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), learner.task)
        .await
        .expect("a failed prefetch ends the learner")
        .unwrap();
    let e = match ended {
        Err(e) => e,
        Ok(report) => panic!("a failed prefetch ended as a clean stop: {report:?}"),
    };
    assert!(
        matches!(
            e,
            LearnerError::Task {
                task: "batch decoding",
                ..
            }
        ),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(message.contains("the device is gone"), "{message}");
    assert!(message.contains("--run-dir"), "{message}");
    scenario.teardown();
    replay.stop().await;
}
