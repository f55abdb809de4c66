//! `apex-bench actor`: the actor loop against a live replay server, beside
//! stepping the same environments alone.

use std::time::Duration;

use anyhow::Result;
use apex::env_cmd::GameArgs;
use clap::Args;

#[derive(Args)]
pub struct ActorBenchArgs {
    #[command(flatten)]
    game: GameArgs,
    /// Environments the actor steps together.
    #[arg(long, default_value_t = 8)]
    envs: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// libtorch threads of the actor's inference thread (0: libtorch's default).
    #[arg(long, default_value_t = 1)]
    torch_threads: usize,
    /// Groups of environments valued on an inference thread while the others
    /// step (1: the stepping thread runs every pass itself).
    #[arg(long, default_value_t = 1)]
    inference_groups: usize,
}

/// Env-alone steps/s on one thread, stepping `envs` environments in turn.
fn envs_alone(spec: &apex_env::EnvSpec, envs: usize, duration: Duration) -> Result<f64> {
    use rand::Rng;
    let mut all = (0..envs)
        .map(|i| spec.make(i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    for e in all.iter_mut() {
        e.reset();
    }
    let mut rng = rand::thread_rng();
    let actions = all[0].num_actions();
    let start = std::time::Instant::now();
    let mut steps = 0u64;
    while start.elapsed() < duration {
        for e in all.iter_mut() {
            if e.step(rng.gen_range(0..actions)).done() {
                e.reset();
            }
        }
        steps += envs as u64;
    }
    Ok(steps as f64 / start.elapsed().as_secs_f64())
}

pub async fn run(a: ActorBenchArgs) -> Result<()> {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    let spec = a.game.spec();
    let duration = Duration::from_secs_f64(a.seconds);
    let alone = {
        let spec = spec.clone();
        let envs = a.envs;
        tokio::task::spawn_blocking(move || envs_alone(&spec, envs, duration)).await??
    };
    println!("env_alone_steps_per_sec envs={} {alone:.0}", a.envs);

    // A live replay server, and the learner's weights service with freshly
    // initialised weights (no training competes for the CPU).
    let net = apex::services::net_config(&spec, true)?;
    let arch = net.arch;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _ = apex_model::QNet::new(&vs.root(), net);
    let published = apex_learner::io::weights::Published::default();
    published.publish(1, 0, apex_model::save_weights(&vs)?);
    let shutdown = CancellationToken::new();
    let replay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let params_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let replay_addr = format!("http://{}", replay_listener.local_addr()?);
    let params_addr = format!("http://{}", params_listener.local_addr()?);
    let config = apex_replay_server::ReplayConfig::in_memory(20_000, 1, 0.6, 0);
    let replay = tokio::spawn(apex_replay_server::run(
        config,
        replay_listener,
        shutdown.clone(),
    ));
    let params = tokio::spawn(
        apex_proto::transport::server(&Default::default())
            .add_service(
                apex_proto::v1::parameters_server::ParametersServer::new(
                    apex_learner::io::weights::ParametersService::new(published),
                )
                .max_encoding_message_size(apex_proto::MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(
                apex_proto::transport::incoming(params_listener),
                shutdown.clone().cancelled_owned(),
            ),
    );
    let stats = Arc::new(apex_actor::ActorStats::default());
    let config = apex_actor::ActorConfig {
        replay_addr,
        learner_addr: params_addr,
        env: spec,
        arch,
        dueling: true,
        quantiles: None,
        actor_index: 0,
        actor_count: 1,
        envs: a.envs,
        exploration: apex_actor::policy::Exploration::APE_X,
        n_step: 3,
        gamma: 0.99,
        send_batch: 64,
        max_in_flight: 4,
        weights_refresh_steps: 100,
        max_env_steps: None,
        seed: 0,
        codec: apex_proto::v1::Codec::Lz4,
        token: None,
        tls: Default::default(),
        inference_groups: a.inference_groups,
        torch_threads: a.torch_threads,
    };
    // The actor stops first, while the replay server still takes its last
    // batches; a server that stops first refuses them.
    let actor_stop = CancellationToken::new();
    let actor = tokio::spawn(apex_actor::run(config, actor_stop.clone(), stats.clone()));
    // Measure from a warm-up second after the first step (making emulators takes a while).
    while stats.env_steps.load(Ordering::Relaxed) == 0 && !actor.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s0, t0) = (
        stats.env_steps.load(Ordering::Relaxed),
        std::time::Instant::now(),
    );
    tokio::time::sleep(duration).await;
    let rate = (stats.env_steps.load(Ordering::Relaxed) - s0) as f64 / t0.elapsed().as_secs_f64();
    actor_stop.cancel();
    actor.await??;
    shutdown.cancel();
    replay.await??;
    params.await??;
    println!("actor_loop_steps_per_sec envs={} {rate:.0}", a.envs);
    println!("actor loop / env alone = {:.2}", rate / alone);
    Ok(())
}
