//! The learner survives faults around it: a replay server that goes away
//! and comes back on the same address, and batches that do not fit its
//! network.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tokio::net::TcpListener;

/// Binds `addr` again once the old server has let go of it.
async fn rebind(addr: &str) -> TcpListener {
    let socket = addr.trim_start_matches("http://");
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(socket).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind {socket} again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_learner_rides_out_a_replay_restart() {
    let replay = start_replay(TcpListener::bind("127.0.0.1:0").await.unwrap(), 1000);
    let addr = replay.addr.clone();
    fill(&addr, 64, NUM_ACTIONS as u32, |t| (t % 3) as u32).await;
    let learner = start_learner(learner_config(&addr, None, None)).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            learner.updates() >= 20
        })
        .await
    );

    replay.stop().await;
    let stopped_at = learner.updates();
    // Long enough for several failed tries and a few backoff doublings.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !learner.task.is_finished(),
        "the learner exited while the replay was away"
    );
    let during = learner.updates();
    assert!(
        during <= stopped_at + 4,
        "the outage was real: at most the prefetched batches were trained on ({stopped_at} -> {during})"
    );

    let replay = start_replay(rebind(&addr).await, 1000);
    fill(&addr, 64, NUM_ACTIONS as u32, |t| (t % 3) as u32).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            learner.updates() >= during + 20
        })
        .await,
        "training did not resume after the replay came back: {} updates",
        learner.updates()
    );
    assert!(!learner.task.is_finished());
    let report = learner.stop().await;
    assert!(report.updates >= during + 20);
    replay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_with_an_action_out_of_range_does_not_stop_the_learner() {
    // The replay takes 10 actions, the learner's network has 3: every
    // transition with action 7 makes a batch the learner cannot use.
    let capacity = 32;
    let replay = start_replay(TcpListener::bind("127.0.0.1:0").await.unwrap(), capacity);
    fill(&replay.addr, capacity as u64, 10, |_| 7).await;
    let learner = start_learner(learner_config(&replay.addr, None, Some(20))).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            learner.stats.bad_batches.load(Ordering::Relaxed) >= 3
        })
        .await
    );
    assert_eq!(learner.updates(), 0, "no update from a bad batch");
    assert!(
        !learner.task.is_finished(),
        "a bad batch stopped the learner"
    );

    // Good transitions push the bad ones out (FIFO): training starts.
    fill(&replay.addr, 8 * capacity as u64, 10, |t| (t % 3) as u32).await;
    let bad = learner.stats.bad_batches.load(Ordering::Relaxed);
    let report = learner.finished().await;
    assert_eq!(report.updates, 20);
    assert!(bad >= 3);
    replay.stop().await;
}
