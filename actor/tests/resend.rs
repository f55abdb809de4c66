//! An actor streams through a TCP proxy that cuts its connections, and the
//! replay server behind it restarts (from its checkpoint, on the same port)
//! and refuses a wrong token: every acknowledged transition is stored
//! exactly once, and the actor never gives up while the server is away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use apex_actor::policy::Exploration;
use apex_actor::{ActorConfig, ActorError, ActorStats};
use apex_env::{CatchConfig, EnvSpec};
use apex_learner::io::weights::{ParametersService, Published};
use apex_model::{Arch, QNet, QNetConfig};
use apex_proto::auth::Token;
use apex_proto::v1::parameters_server::ParametersServer;
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{Codec, InfoRequest};
use apex_replay_server::ReplayConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const ARCH: Arch = Arch::Mlp { hidden: 32 };

/// Forwards connections to `upstream`; each `cut` closes every open one.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<u64>,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cuts) = watch::channel(0u64);
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                let mut cuts = cuts.clone();
                cuts.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return; // the server is down: the client sees a closed connection
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            cut,
            connections,
        }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

fn net() -> QNetConfig {
    let spec = EnvSpec::Catch(CatchConfig::default());
    let (shape, actions) = spec.probe().unwrap();
    QNetConfig::new(ARCH, &shape, actions, false)
}

/// A weights service with fresh weights, as a learner would serve them.
async fn weights_service(token: Option<Token>) -> String {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _ = QNet::new(&vs.root(), net());
    let published = Published::default();
    published.publish(1, 0, apex_model::save_weights(&vs).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let service = apex_proto::auth::guard(
        ParametersServer::new(ParametersService::new(published)),
        token,
    );
    tokio::spawn(
        apex_proto::transport::server(&Default::default())
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn actor_config(replay: String, learner: String, steps: u64, token: Option<Token>) -> ActorConfig {
    ActorConfig {
        replay_addr: replay,
        learner_addr: learner,
        env: EnvSpec::Catch(CatchConfig::default()),
        arch: ARCH,
        dueling: false,
        quantiles: None,
        actor_index: 0,
        actor_count: 1,
        envs: 4,
        exploration: Exploration::APE_X,
        n_step: 3,
        gamma: 0.99,
        send_batch: 16,
        max_in_flight: 3,
        weights_refresh_steps: 50,
        max_env_steps: Some(steps),
        seed: 5,
        codec: Codec::Lz4,
        token,
        tls: Default::default(),
        inference_groups: 2,
        torch_threads: 1,
    }
}

fn replay_config(dir: &std::path::Path, token: Option<Token>) -> ReplayConfig {
    ReplayConfig {
        checkpoint_dir: Some(dir.to_owned()),
        token,
        tls: Default::default(),
        ..ReplayConfig::in_memory(1_000_000, 1, 0.6, 0)
    }
}

async fn inserted_total(addr: SocketAddr, token: Option<&Token>) -> u64 {
    let shutdown = CancellationToken::new();
    let channel = apex_proto::connect(
        &format!("http://{addr}"),
        token,
        &Default::default(),
        &shutdown,
    )
    .await
    .unwrap()
    .unwrap();
    let mut client = ReplayClient::new(channel);
    client
        .info(InfoRequest::default())
        .await
        .unwrap()
        .into_inner()
        .inserted_total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_transitions_survive_cuts_and_a_restart_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let token = Some(Token::generate());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replay_addr = listener.local_addr().unwrap();
    let first_stop = CancellationToken::new();
    let first = tokio::spawn(apex_replay_server::run(
        replay_config(dir.path(), token.clone()),
        listener,
        first_stop.clone(),
    ));
    let proxy = Proxy::start(replay_addr).await;
    let learner = weights_service(token.clone()).await;
    let stats = Arc::new(ActorStats::default());
    let steps = 12_000;
    let actor = tokio::spawn(apex_actor::run(
        actor_config(
            format!("http://{}", proxy.addr),
            learner,
            steps,
            token.clone(),
        ),
        CancellationToken::new(),
        stats.clone(),
    ));
    let acked = || stats.transitions_acknowledged.load(Ordering::Relaxed);
    let wait_for_more = |than: u64| {
        let stats = stats.clone();
        async move {
            for _ in 0..400 {
                if stats.transitions_acknowledged.load(Ordering::Relaxed) > than {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("no acknowledgement beyond {than} in 10 s");
        }
    };
    wait_for_more(0).await;
    for _ in 0..3 {
        proxy.cut();
        wait_for_more(acked()).await;
    }
    // The server stops (checkpointing everything it acknowledged) and comes
    // back on the same port a little later; meanwhile the actor retries.
    first_stop.cancel();
    first.await.unwrap().unwrap();
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listener = TcpListener::bind(replay_addr).await.unwrap();
    let second_stop = CancellationToken::new();
    let second = tokio::spawn(apex_replay_server::run(
        replay_config(dir.path(), token.clone()),
        listener,
        second_stop.clone(),
    ));
    wait_for_more(acked()).await;
    proxy.cut();
    let report = tokio::time::timeout(Duration::from_secs(60), actor)
        .await
        .expect("the actor finishes")
        .unwrap()
        .expect("the actor rode out every fault");
    assert!(report.env_steps >= steps);
    let acknowledged = acked();
    let stored = inserted_total(replay_addr, token.as_ref()).await;
    assert_eq!(
        stored, acknowledged,
        "every acknowledged transition stored once (neither lost nor duplicated)"
    );
    // n-step transitions: one per agent step but the last few of each environment.
    assert!(
        acknowledged + 4 * 4 >= report.env_steps,
        "{acknowledged} of {} steps",
        report.env_steps
    );
    assert!(
        proxy.connections.load(Ordering::Relaxed) >= 5,
        "the actor reconnected after each cut"
    );
    second_stop.cancel();
    second.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_stops_the_actor_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let token = Some(Token::generate());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replay_addr = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let replay = tokio::spawn(apex_replay_server::run(
        replay_config(dir.path(), token.clone()),
        listener,
        stop.clone(),
    ));
    let learner = weights_service(token.clone()).await;
    for wrong in [None, Some(Token::generate())] {
        let r = tokio::time::timeout(
            Duration::from_secs(30),
            apex_actor::run(
                actor_config(replay_addr.clone(), learner.clone(), 1000, wrong),
                CancellationToken::new(),
                Arc::new(ActorStats::default()),
            ),
        )
        .await
        .expect("refused at once, not retried forever");
        match r {
            Err(ActorError::Learner { status, .. }) | Err(ActorError::Replay { status, .. }) => {
                assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
                assert!(status.message().contains("token"), "{status}");
            }
            other => panic!("expected UNAUTHENTICATED, got {other:?}"),
        }
    }
    stop.cancel();
    replay.await.unwrap().unwrap();
}
