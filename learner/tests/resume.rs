//! The learner resumes its whole state: a checkpoint round-trips every
//! tensor and counter, a restarted learner continues its update count and
//! weights versions, and a damaged checkpoint falls back to the previous one.

mod common;

use apex_learner::dqn::{Dqn, DqnConfig, Optimizer};
use apex_learner::io::batch::Batch;
use apex_learner::persist::checkpoint::{self, CheckpointError};
use apex_learner::persist::state::NamedTensors;
use apex_model::{Arch, QNetConfig};
use common::*;
use tch::{Device, Tensor};
use tokio::net::TcpListener;

fn batch() -> Batch {
    let obs = Tensor::from_slice(&[0u8, 255, 0, 255, 9, 8, 7, 6])
        .view([2, 1, 2, 2])
        .repeat([2, 1, 1, 1]);
    Batch {
        ids: vec![0, 1, 2, 3],
        next_obs: obs.flip([0]),
        obs,
        actions: Tensor::from_slice(&[1i64, 0, 2, 1]),
        rewards: Tensor::from_slice(&[1.0f32, 0.0, 0.5, 1.0]),
        discounts: Tensor::from_slice(&[0.9f32, 0.0, 0.9, 0.9]),
        weights: Tensor::from_slice(&[1f32; 4]),
        staging: None,
    }
}

fn dqn(optimizer: Optimizer) -> Dqn {
    let net = QNetConfig::new(Arch::Mlp { hidden: 8 }, &[1, 2, 2], 3, true);
    let config = DqnConfig {
        optimizer,
        learning_rate: 1e-2,
        learning_rate_decay: None,
        max_grad_norm: 10.0,
        // Syncs at 4: after 6 updates the target is neither the initial
        // network nor the online one.
        target_update_every: 4,
        double: true,
        loss: apex_learner::dqn::TdLoss::Huber,
        munchausen: None,
    };
    Dqn::new(net, config, Device::Cpu).unwrap()
}

fn assert_same(what: &str, a: &NamedTensors, b: &NamedTensors) {
    let names = |t: &NamedTensors| t.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "{what} names");
    for ((name, x), (_, y)) in a.iter().zip(b) {
        assert!(x.equal(y), "{what} '{name}' differs after the round trip");
    }
}

#[test]
fn a_checkpoint_round_trips_every_tensor_and_counter() {
    for optimizer in [
        Optimizer::Adam { eps: 1e-8 },
        Optimizer::CentredRmsProp {
            decay: 0.95,
            eps: 1e-5,
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut a = dqn(optimizer);
        for _ in 0..6 {
            a.update(&batch()).unwrap();
        }
        checkpoint::save(dir.path(), &a, 17).unwrap();
        let mut b = dqn(optimizer);
        let fresh = b.optimizer_state();
        let resumed = checkpoint::load(&dir.path().join(checkpoint::FILE), &mut b).unwrap();
        assert_eq!((resumed.updates, resumed.version), (6, 17), "{optimizer:?}");
        assert!(resumed.optimizer);
        assert_eq!(b.updates(), 6);
        assert_same("online", &a.online_state(), &b.online_state());
        assert_same("target", &a.target_state(), &b.target_state());
        assert_same("optimizer", &a.optimizer_state(), &b.optimizer_state());
        // The comparison means something: target, online and a fresh
        // optimizer all differ from what was saved.
        assert!(!a.online_state()[0].1.equal(&a.target_state()[0].1));
        assert!(!fresh[0].1.equal(&a.optimizer_state()[0].1));
        // And the two learners go on identically.
        let (x, y) = (a.update(&batch()).unwrap(), b.update(&batch()).unwrap());
        assert_eq!(x.td_abs, y.td_abs, "{optimizer:?}");
    }
}

#[test]
fn a_truncated_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = dqn(Optimizer::Adam { eps: 1e-8 });
    a.update(&batch()).unwrap();
    checkpoint::save(dir.path(), &a, 2).unwrap();
    let previous = a.online_state();
    let previous: Vec<Tensor> = previous.iter().map(|(_, t)| t.copy()).collect();
    a.update(&batch()).unwrap();
    checkpoint::save(dir.path(), &a, 3).unwrap();
    let path = dir.path().join(checkpoint::FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let mut b = dqn(Optimizer::Adam { eps: 1e-8 });
    assert!(matches!(
        checkpoint::load(&path, &mut b),
        Err(CheckpointError::Damaged { .. })
    ));
    let resumed = checkpoint::resume(dir.path(), &mut b).unwrap().unwrap();
    assert_eq!(resumed.path, dir.path().join(checkpoint::PREVIOUS));
    assert_eq!((resumed.updates, resumed.version), (1, 2));
    for ((name, now), was) in b.online_state().iter().zip(&previous) {
        assert!(now.equal(was), "{name} is not the previous checkpoint's");
    }
    assert!(!path.exists(), "the damaged checkpoint is moved aside");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint.ot.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let kept = std::fs::read(dir.path().join(&aside[0])).unwrap();
    assert_eq!(
        kept.len(),
        bytes.len() / 2,
        "kept as it was, for inspection"
    );

    // Nothing readable left: a fresh start, not an error.
    std::fs::write(dir.path().join(checkpoint::PREVIOUS), b"junk").unwrap();
    let mut c = dqn(Optimizer::Adam { eps: 1e-8 });
    assert_eq!(checkpoint::resume(dir.path(), &mut c).unwrap(), None);
    assert_eq!(c.updates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_learner_continues_its_updates_and_versions() {
    let run_dir = tempfile::tempdir().unwrap();
    let replay = start_replay(TcpListener::bind("127.0.0.1:0").await.unwrap(), 1000);
    fill(&replay.addr, 64, NUM_ACTIONS as u32, |t| (t % 3) as u32).await;
    let first = start_learner(learner_config(&replay.addr, Some(run_dir.path()), Some(30)))
        .await
        .finished()
        .await;
    assert_eq!(first.updates, 30);
    // Version 1 at the start, then one per 10 updates.
    assert_eq!(first.version, 4);
    replay.stop().await;

    // Against an empty replay the second learner cannot train: what it
    // serves is what it resumed.
    let replay = start_replay(TcpListener::bind("127.0.0.1:0").await.unwrap(), 1000);
    let second = start_learner(learner_config(&replay.addr, Some(run_dir.path()), Some(45))).await;
    let (version, updates) = second.published().await;
    assert_eq!(updates, 30, "the update count goes on from the checkpoint");
    assert_eq!(
        version,
        first.version + 1,
        "versions keep rising across restarts"
    );
    assert_eq!(second.updates(), 30);
    fill(&replay.addr, 64, NUM_ACTIONS as u32, |t| (t % 3) as u32).await;
    let report = second.finished().await;
    assert_eq!(report.updates, 45);
    assert!(report.version > first.version + 1);
    // It trained 15 updates, not 45 (a few batches more were prefetched).
    let sampled = replay.info().await.sampled_total;
    assert!(
        sampled <= (15 + 4) * BATCH as u64,
        "{sampled} transitions sampled for 15 updates"
    );
    replay.stop().await;

    // Its newest checkpoint truncated, a third learner falls back to the
    // one before (written at update 40) and sets the damaged one aside.
    let path = run_dir.path().join(checkpoint::FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let replay = start_replay(TcpListener::bind("127.0.0.1:0").await.unwrap(), 1000);
    let third = start_learner(learner_config(&replay.addr, Some(run_dir.path()), Some(60))).await;
    let (_, updates) = third.published().await;
    assert_eq!(updates, 40);
    let aside = std::fs::read_dir(run_dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("checkpoint.ot.corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
    let report = third.stop().await;
    assert_eq!(report.updates, 40);
    replay.stop().await;
}
