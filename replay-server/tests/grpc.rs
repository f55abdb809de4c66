//! The replay server over real gRPC on 127.0.0.1:0: inserts come back as
//! samples, and bad requests get the right status codes with messages that
//! say what to do.

use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{
    InfoRequest, InsertRequest, SampleRequest, Shape, Transition, UpdatePrioritiesRequest,
};
use apex_replay_server::ReplayConfig;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;

fn transition(tag: u8, len: usize) -> Transition {
    Transition {
        obs: vec![tag; len].into(),
        action: tag as u32,
        reward: 1.0,
        discount: 0.5,
        next_obs: vec![tag + 1; len].into(),
        priority: 0.0,
    }
}

fn batch(tags: std::ops::Range<u8>, dims: &[usize], len: usize) -> InsertRequest {
    InsertRequest {
        obs_shape: Some(Shape::of(dims)),
        transitions: tags.map(|t| transition(t, len)).collect(),
        actor_id: 0,
    }
}

#[tokio::test]
async fn inserts_samples_and_status_codes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let config = ReplayConfig {
        capacity: 100,
        min_size: 4,
        alpha: 0.6,
        seed: 0,
    };
    let server = tokio::spawn(apex_replay_server::run(
        config,
        listener,
        shutdown.clone().cancelled_owned(),
    ));
    let mut client = ReplayClient::connect(addr.clone()).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(addr)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "apex.v1.Replay".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Too little data to sample yet.
    let err = client
        .sample(SampleRequest {
            batch_size: 2,
            beta: 0.4,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("wait for the actors"),
        "{}",
        err.message()
    );

    // Two good batches on one stream, one answer each.
    let requests = tokio_stream::iter(vec![batch(0..3, &[2, 3], 6), batch(3..6, &[2, 3], 6)]);
    let answers = client.insert(requests).await.unwrap().into_inner();
    let sizes: Vec<u64> = answers.map(|r| r.unwrap().size).collect().await;
    assert_eq!(sizes, vec![3, 6]);

    let s = client
        .sample(SampleRequest {
            batch_size: 5,
            beta: 0.4,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.obs_shape.unwrap().dims, vec![2, 3]);
    assert_eq!((s.obs.len(), s.next_obs.len(), s.ids.len()), (30, 30, 5));
    for (i, &a) in s.actions.iter().enumerate() {
        assert!(
            s.obs[i * 6..(i + 1) * 6].iter().all(|&p| p == a as u8),
            "obs travel with their actions"
        );
        assert!(s.next_obs[i * 6..(i + 1) * 6]
            .iter()
            .all(|&p| p == a as u8 + 1));
    }
    assert_eq!(s.weights, vec![1.0; 5]);

    // A malformed batch is refused whole, with INVALID_ARGUMENT, and the stream ends.
    let bad = tokio_stream::iter(vec![batch(6..8, &[2, 3], 5)]);
    let mut answers = client.insert(bad).await.unwrap().into_inner();
    let err = answers.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("needs 6"), "{}", err.message());
    let wrong_shape = tokio_stream::iter(vec![batch(6..8, &[3, 2], 6)]);
    let err = client
        .insert(wrong_shape)
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let info = client.info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (info.size, info.inserted_total, info.sampled_total),
        (6, 6, 5)
    );

    let err = client
        .sample(SampleRequest {
            batch_size: 0,
            beta: 0.4,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .update_priorities(UpdatePrioritiesRequest {
            ids: vec![1, 2],
            priorities: vec![1.0],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let ok = client
        .update_priorities(UpdatePrioritiesRequest {
            ids: vec![1, 99],
            priorities: vec![2.0, 3.0],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ok.updated, ok.missing), (1, 1));

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
