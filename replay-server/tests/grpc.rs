//! The replay server over real gRPC on 127.0.0.1:0: inserts come back as
//! samples with each frame once, the rate limiter holds sampling back with a
//! clear status, bad requests get the right codes with messages that say
//! what to do, and a checkpoint survives a restart with contents and
//! priorities intact.

use std::time::Duration;

use apex_proto::sample_frames::observations;
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{
    CheckpointRequest, Codec, Frame, InfoRequest, InsertRequest, SampleRequest, Shape, Transition,
    UpdatePrioritiesRequest,
};
use apex_replay_server::limiter::RateLimit;
use apex_replay_server::store::StoreConfig;
use apex_replay_server::stream::MAX_ACTIONS;
use apex_replay_server::{Replay, ReplayConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

fn config(min_size: usize, dir: Option<&std::path::Path>) -> ReplayConfig {
    ReplayConfig {
        store: StoreConfig {
            capacity: 100,
            shards: 4,
            alpha: 0.6,
            seed: 0,
        },
        limit: RateLimit {
            min_size,
            samples_per_insert: None,
            error_buffer: 0.0,
        },
        sample_timeout: Duration::from_millis(200),
        checkpoint_dir: dir.map(|d| d.to_owned()),
        ..ReplayConfig::in_memory(100, min_size, 0.6, 0)
    }
}

struct Server {
    client: ReplayClient<Channel>,
    addr: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), apex_replay_server::ReplayError>>,
}

async fn serve(config: ReplayConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(apex_replay_server::run(config, listener, shutdown.clone()));
    let client = ReplayClient::connect(addr.clone()).await.unwrap();
    Server {
        client,
        addr,
        shutdown,
        task,
    }
}

/// Observations of 2 channels of 3 bytes; frame `f` is three bytes of `f`.
fn request(frames: std::ops::Range<u64>, transitions: Vec<Transition>) -> InsertRequest {
    InsertRequest {
        obs_shape: Some(Shape::of(&[2, 3])),
        codec: Codec::Lz4 as i32,
        frames: frames
            .map(|id| Frame {
                id,
                data: Codec::Lz4.encode(&[id as u8; 3]).into(),
            })
            .collect(),
        transitions,
        num_actions: MAX_ACTIONS,
        ..Default::default()
    }
}

/// Steps t = 0, 1, ... of one environment: obs (t, t+1), next obs (t+1, t+2).
fn step(t: u64) -> Transition {
    Transition {
        obs: vec![t, t + 1],
        next_obs: vec![t + 1, t + 2],
        action: t as u32,
        reward: 1.0,
        discount: 0.5,
        priority: 1.0 + t as f32,
    }
}

/// Requests of a stream playing `steps` steps, `per` transitions each.
fn episode(steps: u64, per: u64) -> Vec<InsertRequest> {
    (0..steps)
        .step_by(per as usize)
        .map(|t0| {
            let t1 = (t0 + per).min(steps);
            let first_frame = if t0 == 0 { 0 } else { t0 + 2 };
            request(first_frame..t1 + 2, (t0..t1).map(step).collect())
        })
        .collect()
}

async fn insert(
    client: &mut ReplayClient<Channel>,
    requests: Vec<InsertRequest>,
) -> Vec<Result<u64, tonic::Status>> {
    let answers = client
        .insert(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    answers.map(|r| r.map(|a| a.size)).collect().await
}

#[tokio::test]
async fn inserts_samples_and_status_codes() {
    let mut s = serve(config(4, None)).await;
    let health = apex_proto::health::check(
        Channel::from_shared(s.addr.clone()).unwrap(),
        "apex.v1.Replay",
    );
    assert_eq!(
        health.await.unwrap(),
        apex_proto::health::ProbedStatus::Serving
    );

    // Too little data to sample: the rate limiter waits, then says why.
    let err = s
        .client
        .sample(SampleRequest {
            batch_size: 2,
            beta: 0.4,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("sampling starts at 4: wait for the actors"),
        "{}",
        err.message()
    );

    // 12 steps in requests of 3: one answer each.
    let sizes: Vec<u64> = insert(&mut s.client, episode(12, 3))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sizes, vec![3, 6, 9, 12]);

    let batch = s
        .client
        .sample(SampleRequest {
            batch_size: 64,
            beta: 0.4,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.ids.len(), 64);
    assert!(
        batch.frames.len() <= 14,
        "each of the 14 frames travels at most once: {}",
        batch.frames.len()
    );
    let (obs, next) = observations(&batch).unwrap();
    for (i, &a) in batch.actions.iter().enumerate() {
        let t = a as u8;
        assert_eq!(
            &obs[i * 6..(i + 1) * 6],
            &[t, t, t, t + 1, t + 1, t + 1],
            "obs travel with their actions"
        );
        assert_eq!(
            &next[i * 6..(i + 1) * 6],
            &[t + 1, t + 1, t + 1, t + 2, t + 2, t + 2]
        );
    }

    // A malformed request is refused whole, with INVALID_ARGUMENT, and the stream ends.
    let mut short = request(0..3, vec![step(0)]);
    short.transitions[0].obs.pop();
    let err = insert(&mut s.client, vec![short])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("obs names 1 frames but observations have 2 channels"),
        "{}",
        err.message()
    );
    let mut wrong_shape = request(0..3, vec![step(0)]);
    wrong_shape.obs_shape = Some(Shape::of(&[3, 2]));
    let err = insert(&mut s.client, vec![wrong_shape])
        .await
        .remove(0)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("start a new replay server"),
        "{}",
        err.message()
    );
    let unsent = request(0..1, vec![step(0)]);
    let err = insert(&mut s.client, vec![unsent])
        .await
        .remove(0)
        .unwrap_err();
    assert!(
        err.message().contains("frame 1 is unknown to this stream"),
        "{}",
        err.message()
    );

    let info = s
        .client
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.size, info.inserted_total, info.sampled_total),
        (12, 12, 64)
    );
    assert!(info.bytes_per_transition > 0.0 && info.stored_bytes > 0);

    let err = s
        .client
        .sample(SampleRequest {
            batch_size: 0,
            beta: 0.4,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = s
        .client
        .update_priorities(UpdatePrioritiesRequest {
            ids: vec![1, 2],
            priorities: vec![1.0],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let ok = s
        .client
        .update_priorities(UpdatePrioritiesRequest {
            ids: vec![batch.ids[0], 1 << 60],
            priorities: vec![2.0, 3.0],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ok.updated, ok.missing), (1, 1));
    let err = s.client.checkpoint(CheckpointRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("--checkpoint-dir"),
        "{}",
        err.message()
    );

    s.shutdown.cancel();
    s.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_checkpoint_survives_a_restart_with_contents_and_priorities() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = serve(config(1, Some(dir.path()))).await;
    for r in insert(&mut s.client, episode(40, 5)).await {
        r.unwrap();
    }
    let batch = s
        .client
        .sample(SampleRequest {
            batch_size: 8,
            beta: 0.4,
        })
        .await
        .unwrap()
        .into_inner();
    s.client
        .update_priorities(UpdatePrioritiesRequest {
            ids: batch.ids.clone(),
            priorities: vec![0.125; 8],
        })
        .await
        .unwrap();
    let written = s
        .client
        .checkpoint(CheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.transitions, 40);
    let before = Replay::open(&config(1, Some(dir.path())))
        .unwrap()
        .store()
        .contents();
    // Gone without a goodbye: no shutdown checkpoint.
    s.task.abort();
    let _ = s.task.await;

    let mut again = serve(config(1, Some(dir.path()))).await;
    let info = again
        .client
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (info.size, info.inserted_total, info.sampled_total),
        (40, 40, 8)
    );
    let restored = Replay::open(&config(1, Some(dir.path())))
        .unwrap()
        .store()
        .contents();
    assert_eq!(
        restored, before,
        "items, frames and sampling weights come back"
    );
    let weight = |c: &apex_replay_server::store::Contents, action: u32| {
        c.shards
            .iter()
            .flat_map(|s| &s.items)
            .find(|(it, _)| it.action == action)
            .map(|(_, w)| *w)
            .unwrap()
    };
    let updated = batch.actions[0];
    assert!((weight(&restored, updated) - 0.125f64.powf(0.6)).abs() < 1e-6);
    // The restored replay goes on: new frames on a new stream.
    for r in insert(&mut again.client, episode(5, 5)).await {
        r.unwrap();
    }
    again.shutdown.cancel();
    again.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn limits_answer_resource_exhausted_and_a_resend_is_stored_once() {
    let one_frame = Codec::Lz4.encode(&[0u8; 3]).len();
    let mut s = serve(ReplayConfig {
        max_insert_streams: 1,
        stream_window_bytes: 4 * one_frame,
        ..config(1, None)
    })
    .await;
    // One stream open (its requests wait in a channel), a second refused.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut first = s
        .client
        .insert(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let second = s.client.insert(tokio_stream::iter(Vec::new())).await;
    let Err(e) = second else {
        panic!("a second stream is over the cap")
    };
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("--max-insert-streams"), "{e}");

    // Batch 1 of stream 7, then the same batch again (a resend): stored once.
    let batch = InsertRequest {
        stream_id: 7,
        sequence: 1,
        ..request(0..3, vec![step(0)])
    };
    tx.send(batch.clone()).await.unwrap();
    let a = first.next().await.unwrap().unwrap();
    assert_eq!((a.inserted, a.sequence, a.duplicate), (1, 1, false));
    tx.send(batch).await.unwrap();
    let b = first.next().await.unwrap().unwrap();
    assert_eq!((b.inserted, b.sequence, b.duplicate), (0, 1, true));
    assert_eq!(b.size, 1, "the resend was not stored again");

    // Two more frames take the window over its 4-frame budget.
    tx.send(InsertRequest {
        stream_id: 7,
        sequence: 2,
        ..request(3..5, vec![step(1)])
    })
    .await
    .unwrap();
    let e = first.next().await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("--stream-window-mb"), "{e}");
    drop(tx);
    s.shutdown.cancel();
    s.task.await.unwrap().unwrap();
}
