//! `apex bench ...`: throughput figures for BENCHMARKS.md.

use std::time::Duration;

use anyhow::Result;
use apex_env::bench;
use clap::{Args, Subcommand};

use crate::env_cmd::GameArgs;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Environment agent steps/s (preprocessing and frame stack, no policy)
    /// and bare emulator frames/s, for each thread count.
    Env(EnvBenchArgs),
    /// The actor loop (environments, batched inference, streaming to a live
    /// replay server over loopback gRPC) against stepping the same
    /// environments alone, both on one stepping thread (the actor's forward
    /// passes run on its inference thread).
    Actor(ActorBenchArgs),
    /// Prioritized replay in-process: sampling (batches with importance
    /// weights) and priority updates per second, at each store size.
    Replay(ReplayBenchArgs),
    /// A replay server process under actor-like writers and a sampler over
    /// loopback gRPC: inserts/s, samples/s, insert latency, memory per transition.
    ReplayService(crate::replay_load::ReplayServiceBenchArgs),
    /// DQN updates/s of the learner (dueling Nature CNN, batches decoded from
    /// compressed frames) for each batch size, thread count and optimizer.
    Learner(crate::bench_learner::LearnerBenchArgs),
    /// Batches/s the learner's input pipeline (Sample calls, decoding, the
    /// upload) delivers from a replay server with no training, for each
    /// count of input workers.
    LearnerInput(crate::bench_input::InputBenchArgs),
}

#[derive(Args)]
pub struct ReplayBenchArgs {
    /// Items held, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000000,2000000")]
    items: Vec<usize>,
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

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

#[derive(Args)]
pub struct EnvBenchArgs {
    #[command(flatten)]
    game: GameArgs,
    /// Thread counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Actor(a) => tokio::runtime::Runtime::new()?.block_on(actor(a)),
        BenchCommand::Replay(a) => replay(a),
        BenchCommand::Learner(a) => crate::bench_learner::run(a),
        BenchCommand::LearnerInput(a) => {
            tokio::runtime::Runtime::new()?.block_on(crate::bench_input::run(a))
        }
        BenchCommand::ReplayService(a) => {
            tokio::runtime::Runtime::new()?.block_on(crate::replay_load::run(a))
        }
        BenchCommand::Env(a) => {
            let config = a.game.config();
            let duration = Duration::from_secs_f64(a.seconds);
            for &t in &a.threads {
                let raw = bench::raw_frames_per_sec(&config, t, duration)?;
                let env = bench::env_steps_per_sec(&config, t, duration)?;
                // One line per figure, machine-readable for the bench script.
                println!("apex_raw_ale_frames_per_sec threads={t} {raw:.0}");
                println!("apex_env_steps_per_sec threads={t} {env:.0}");
            }
            Ok(())
        }
    }
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

async fn actor(a: ActorBenchArgs) -> Result<()> {
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
    let net = crate::evaluate::net_config(&spec, true)?;
    let arch = net.arch;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _ = apex_model::QNet::new(&vs.root(), net);
    let published = apex_learner::weights::Published::default();
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
        shutdown.clone().cancelled_owned(),
    ));
    let params = tokio::spawn(
        apex_proto::transport::server()
            .add_service(
                apex_proto::v1::parameters_server::ParametersServer::new(
                    apex_learner::weights::ParametersService::new(published),
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

fn replay(a: ReplayBenchArgs) -> Result<()> {
    use apex_replay_server::frame::new_frame;
    use apex_replay_server::shard::Item;
    use apex_replay_server::store::{NewItem, Store, StoreConfig};
    use rand::{Rng, SeedableRng};

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let duration = Duration::from_secs_f64(a.seconds);
    for &n in &a.items {
        // One shard: this measures the sum tree and the bookkeeping against
        // cpprb's single buffer, not locking or copies.
        let store = Store::new(StoreConfig {
            capacity: n,
            shards: 1,
            alpha: 0.6,
            seed: 0,
        });
        let frame = new_frame(&[0u8; 4], store.ledger());
        for start in (0..n).step_by(10_000) {
            let items = (start..(start + 10_000).min(n))
                .map(|i| NewItem {
                    item: Item {
                        frames: vec![frame.clone(), frame.clone()].into(),
                        action: (i % 4) as u32,
                        reward: 0.0,
                        discount: 0.99,
                    },
                    priority: rng.gen_range(0.01..10.0),
                })
                .collect();
            store.insert(items);
        }
        let t = std::time::Instant::now();
        let mut batches = 0u64;
        while t.elapsed() < duration {
            std::hint::black_box(store.sample(a.batch, 0.4)?);
            batches += 1;
        }
        let sample_rate = batches as f64 / t.elapsed().as_secs_f64();
        let ids: Vec<Vec<u64>> = (0..64)
            .map(|_| (0..a.batch).map(|_| rng.gen_range(0..n as u64)).collect())
            .collect();
        let priorities: Vec<f32> = (0..a.batch).map(|_| rng.gen_range(0.01..10.0)).collect();
        let t = std::time::Instant::now();
        let mut updates = 0u64;
        while t.elapsed() < duration {
            store.update_priorities(&ids[updates as usize % ids.len()], &priorities);
            updates += 1;
        }
        let update_rate = updates as f64 / t.elapsed().as_secs_f64();
        println!("apex_sample_batches_per_sec items={n} {sample_rate:.0}");
        println!("apex_update_batches_per_sec items={n} {update_rate:.0}");
    }
    Ok(())
}
