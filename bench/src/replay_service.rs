//! `apex-bench replay-service`: a replay server in its own process, loaded
//! over loopback gRPC the way a deployment loads it. Writers replay recorded
//! Atari frames as actors do (4-frame stacks, 3-step transitions, frames
//! compressed by the writer and sent once, batches of 64, 4 in flight) while
//! one sampler draws batches of 512 and decodes them into stacked
//! observations as the learner does. Prints one JSON line per measurement
//! for the side-by-side script.
//!
//! With `--window-streams`, a memory phase comes first: that many streams
//! fill their frame windows and hold them, then close, while the server's
//! resident set is sampled from /proc (scripts/bench-allocators.sh).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use apex_proto::frame_stream::{FrameStream, NamedObs};
use apex_proto::v1::replay_client::ReplayClient;
use apex_proto::v1::{
    CheckpointRequest, InfoRequest, InsertRequest, SampleRequest, Shape, Transition,
};
use apex_proto::{MAX_MESSAGE_BYTES, STREAM_FRAME_WINDOW};
use bytes::Bytes;
use clap::Args;
use rand::{RngCore, SeedableRng};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use apex::services::CodecName;

const STACK: usize = 4;
const N_STEP: usize = 3;
const SEND_BATCH: usize = 64;
const IN_FLIGHT: usize = 4;
pub(crate) const NUM_ACTIONS: u32 = 4;

#[derive(Args)]
pub struct ReplayServiceBenchArgs {
    /// Frames recorded by `apex env record` (obs.npy: steps x 84 x 84).
    #[arg(long)]
    frames: PathBuf,
    /// Concurrent writer streams per measurement, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    writers: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Transitions inserted before measuring memory; also the capacity.
    #[arg(long, default_value_t = 100_000)]
    fill: usize,
    #[arg(long, default_value_t = 512)]
    batch: u32,
    #[arg(long, default_value = "lz4")]
    codec: CodecName,
    #[arg(long, default_value_t = 8)]
    shards: usize,
    /// Concurrent sample requests (a learner keeps several batches prefetched).
    #[arg(long, default_value_t = 4)]
    sample_streams: usize,
    /// Replace the recording's pixels by seeded random bytes, so no codec
    /// shrinks them (the worst case for the server's memory).
    #[arg(long)]
    noise: bool,
    /// Streams that fill their frame windows, hold them and close, while the
    /// server's resident set is sampled; 0 skips this memory phase.
    #[arg(long, default_value_t = 0)]
    window_streams: usize,
    /// Seconds the memory phase watches the server after the streams close.
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
    /// Leave out the load with a checkpoint in the middle.
    #[arg(long)]
    no_checkpoint: bool,
    /// NAME=VALUE set for the server process only, e.g.
    /// LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2; repeatable.
    #[arg(long, value_parser = parse_env_pair)]
    server_env: Vec<(String, String)>,
    /// The apex binary that serves [default: the apex built beside this
    /// apex-bench], so two builds' servers meet the same load generator.
    #[arg(long)]
    server_bin: Option<PathBuf>,
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

/// The replay server as a child process, killed when dropped.
struct ServerProcess {
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    fn rss_bytes(&self) -> Result<u64> {
        self.status_bytes("VmRSS:")
    }

    /// The largest resident set the process has had.
    fn peak_rss_bytes(&self) -> Result<u64> {
        self.status_bytes("VmHWM:")
    }

    fn status_bytes(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {field} in /proc status"))?;
        Ok(kb * 1024)
    }
}

/// Recorded frames as the stacked observations an actor would see at each
/// step (built once, so writers spend no time copying).
pub(crate) struct Frames {
    stacks: Vec<Bytes>,
    side: usize,
}

impl Frames {
    pub(crate) fn load(path: &PathBuf, noise: bool) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| {
            format!(
                "cannot open {}: record one with `apex env record`",
                path.display()
            )
        })?;
        let (shape, mut data) = apex_media::npy::read_u8(std::io::BufReader::new(file))
            .with_context(|| format!("cannot read {}", path.display()))?;
        if noise {
            rand_chacha::ChaCha8Rng::seed_from_u64(7).fill_bytes(&mut data);
        }
        if shape.len() != 3 || shape[0] < 2 * STACK {
            bail!(
                "{} holds shape {shape:?}; expected steps x 84 x 84 frames",
                path.display()
            );
        }
        let (n, size) = (shape[0], shape[1] * shape[2]);
        let frame = |i: usize| &data[i * size..(i + 1) * size];
        let stacks = (0..n)
            .map(|t| {
                // Frames t-3..=t of the recording, wrapping.
                let mut out = Vec::with_capacity(STACK * size);
                for k in 0..STACK {
                    out.extend_from_slice(frame((t + n - (STACK - 1 - k)) % n));
                }
                Bytes::from(out)
            })
            .collect();
        Ok(Frames {
            stacks,
            side: shape[1],
        })
    }

    pub(crate) fn shape(&self) -> [usize; 3] {
        let size = self.stacks[0].len() / STACK;
        [STACK, self.side, size / self.side]
    }

    fn stack(&self, t: usize) -> Bytes {
        self.stacks[t % self.stacks.len()].clone()
    }
}

/// Figures shared by the tasks of one measurement.
#[derive(Default)]
pub(crate) struct Tally {
    inserted: AtomicU64,
    sampled: AtomicU64,
    /// Encoded sample responses, and how many.
    sample_bytes: AtomicU64,
    samples: AtomicU64,
    insert_latency: Mutex<Vec<f64>>,
    stop: AtomicBool,
}

/// When a writer stops sending.
pub(crate) enum Until {
    /// When the measurement ends (`Tally::stop`).
    Stopped,
    /// After this many transitions.
    Sent(u64),
    /// After this many transitions, keeping its stream (and so the server's
    /// window of its frames) open until cancelled.
    SentAndHeld(u64, CancellationToken),
}

/// One actor-like insert stream: steps through the recording from `offset`.
/// Returns its stream identity and how many transitions the server
/// acknowledged on it, to be reconciled with the server's own count.
pub(crate) async fn writer(
    mut client: ReplayClient<Channel>,
    frames: Arc<Frames>,
    codec: apex_proto::v1::Codec,
    id: u32,
    offset: usize,
    until: Until,
    tally: Arc<Tally>,
) -> Result<(u64, u64)> {
    let stream_id = rand::random::<u64>() | 1;
    let limit = match &until {
        Until::Stopped => None,
        Until::Sent(n) | Until::SentAndHeld(n, _) => Some(*n),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<InsertRequest>(IN_FLIGHT);
    let sent_at: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let mut responses = client
        .insert(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    // Answers come in order: each closes the oldest batch in flight.
    let acks = {
        let (sent_at, tally, permits) = (sent_at.clone(), tally.clone(), in_flight.clone());
        tokio::spawn(async move {
            let mut acknowledged = 0;
            while let Some(r) = responses.next().await {
                let r = r?;
                acknowledged += r.inserted;
                let started = sent_at.lock().expect("lock").pop_front();
                if let Some(t) = started {
                    tally
                        .insert_latency
                        .lock()
                        .expect("lock")
                        .push(t.elapsed().as_secs_f64());
                }
                tally.inserted.fetch_add(r.inserted, Ordering::Relaxed);
                permits.add_permits(1);
            }
            Ok::<_, tonic::Status>(acknowledged)
        })
    };
    let shape = Shape::of(&frames.shape());
    let mut stream = FrameStream::new(codec, STACK);
    let mut recent: VecDeque<NamedObs> = VecDeque::new();
    let mut pending = Vec::with_capacity(SEND_BATCH);
    let mut sent = 0u64;
    let mut sequence = 0u64;
    let mut t = offset;
    while !tally.stop.load(Ordering::Relaxed) && limit.is_none_or(|l| sent < l) {
        let named = stream.name(recent.back(), frames.stack(t));
        recent.push_back(named);
        t += 1;
        if recent.len() > N_STEP {
            let first = recent.pop_front().expect("n + 1 observations");
            pending.push(Transition {
                obs: first.ids,
                next_obs: recent
                    .back()
                    .expect("the bootstrap observation")
                    .ids
                    .clone(),
                action: (t % NUM_ACTIONS as usize) as u32,
                reward: 0.0,
                discount: 0.97,
                priority: 0.5 + (t % 7) as f32,
            });
        }
        if pending.len() == SEND_BATCH {
            in_flight.acquire().await?.forget();
            sent += pending.len() as u64;
            sequence += 1;
            sent_at.lock().expect("lock").push_back(Instant::now());
            let request = InsertRequest {
                obs_shape: Some(shape.clone()),
                transitions: std::mem::take(&mut pending),
                actor_id: id,
                frames: stream.take_frames(),
                codec: codec as i32,
                num_actions: NUM_ACTIONS,
                stream_id,
                sequence,
            };
            if tx.send(request).await.is_err() {
                break;
            }
        }
    }
    // A holding stream keeps its window on the server until told to close.
    if let Until::SentAndHeld(_, hold) = until {
        hold.cancelled().await;
    }
    drop(tx);
    let acknowledged = acks.await??;
    Ok((stream_id, acknowledged))
}

/// Draws batches and decodes them into stacked observations, as the learner does.
async fn sampler(mut client: ReplayClient<Channel>, batch: u32, tally: Arc<Tally>) -> Result<()> {
    while !tally.stop.load(Ordering::Relaxed) {
        let r = client
            .sample(SampleRequest {
                batch_size: batch,
                beta: 0.4,
            })
            .await?
            .into_inner();
        let n = r.ids.len() as u64;
        tally
            .sample_bytes
            .fetch_add(prost::Message::encoded_len(&r) as u64, Ordering::Relaxed);
        tally.samples.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            apex_proto::sample_frames::observations(&r).map(|_| ())
        })
        .await??;
        tally.sampled.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub async fn run(a: ReplayServiceBenchArgs) -> Result<()> {
    let frames = Arc::new(Frames::load(&a.frames, a.noise)?);
    let codec: apex_proto::v1::Codec = a.codec.into();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let exe = match &a.server_bin {
        Some(bin) => bin.clone(),
        None => {
            let apex = std::env::current_exe()?.with_file_name("apex");
            anyhow::ensure!(
                apex.is_file(),
                "no apex binary at {}: build it (cargo build --release -p apex) or name one \
                 with --server-bin",
                apex.display()
            );
            apex
        }
    };
    let checkpoints =
        std::env::temp_dir().join(format!("apex-bench-replay-{}", std::process::id()));
    let server = ServerProcess {
        child: Command::new(exe)
            .args(["replay-server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--capacity", &a.fill.to_string(), "--min-size", "1"])
            .args([
                "--shards",
                &a.shards.to_string(),
                "--samples-per-insert",
                "0",
            ])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args([
                "--checkpoint-dir",
                checkpoints.to_str().context("a UTF-8 temp path")?,
            ])
            .args(["--checkpoint-every-secs", "0"])
            .env("RUST_LOG", "warn")
            .envs(a.server_env.iter().map(|(k, v)| (k, v)))
            .env_remove(apex_proto::auth::TOKEN_VAR)
            .env_remove("APEX_TOKEN_FILE")
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the replay server")?,
    };
    let addr = format!("http://127.0.0.1:{port}");
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(addr.clone())?
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let client = ReplayClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    // Memory: the server's resident set before and after holding `fill` transitions.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_bytes()?;
    let tally = Arc::new(Tally::default());
    let per_writer = (a.fill as u64).div_ceil(8 * SEND_BATCH as u64) * SEND_BATCH as u64;
    let fillers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(writer(
                client.clone(),
                frames.clone(),
                codec,
                w,
                w as usize * 997,
                Until::Sent(per_writer),
                tally.clone(),
            ))
        })
        .collect();
    for f in fillers {
        f.await??;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_bytes()?;
    let info = client
        .clone()
        .info(InfoRequest::default())
        .await?
        .into_inner();
    println!(
        "{{\"system\": \"apex\", \"metric\": \"bytes_per_transition\", \"codec\": \"{}\", \"items\": {}, \"bytes_per_transition\": {:.0}, \"server_reported\": {:.0}}}",
        codec.label(),
        info.size,
        (after.saturating_sub(before)) as f64 / info.size as f64,
        info.bytes_per_transition
    );

    if a.window_streams > 0 {
        window_phase(&server, &client, &frames, codec, &a).await?;
    }
    for &writers in &a.writers {
        let m = measure(&server, &client, &frames, codec, writers, &a, false).await?;
        println!(
            "{{\"system\": \"apex\", \"writers\": {writers}, \"codec\": \"{}\", \"insert_per_sec\": {:.0}, \"sample_per_sec\": {:.0}, \"insert_p50_ms\": {:.2}, \"insert_p99_ms\": {:.2}, \"insert_max_ms\": {:.1}, \"seconds\": {:.1}, \"sample_wire_bytes\": {:.0}, \"sample_raw_bytes\": {}, \"rss_start_mb\": {:.0}, \"rss_peak_mb\": {:.0}, \"rss_end_mb\": {:.0}, \"acknowledged\": {}, \"stored\": {}, \"lost\": {}, \"extra\": {}}}",
            codec.label(),
            m.insert_per_sec,
            m.sample_per_sec,
            m.p50_ms,
            m.p99_ms,
            m.max_ms,
            m.seconds,
            m.sample_bytes,
            // The same batch as stacked observations, uncompressed.
            a.batch as usize * 2 * frames.stacks[0].len(),
            m.rss_start_mb,
            m.rss_peak_mb,
            m.rss_end_mb,
            m.reconciled.acknowledged,
            m.reconciled.stored,
            m.reconciled.lost,
            m.reconciled.extra,
        );
        if m.reconciled.lost > 0 || m.reconciled.extra > 0 {
            bail!(
                "the server lost or duplicated acknowledged transitions: {:?}",
                m.reconciled
            );
        }
    }
    if a.no_checkpoint {
        return Ok(());
    }
    // The same load with a checkpoint of the full replay in the middle.
    let writers = 8;
    let m = measure(&server, &client, &frames, codec, writers, &a, true).await?;
    println!(
        "{{\"system\": \"apex\", \"phase\": \"checkpoint\", \"writers\": {writers}, \"codec\": \"{}\", \"checkpoint_ms\": {:.0}, \"insert_per_sec\": {:.0}, \"sample_per_sec\": {:.0}, \"insert_p50_ms\": {:.2}, \"insert_p99_ms\": {:.2}, \"insert_max_ms\": {:.1}}}",
        codec.label(),
        m.checkpoint_ms,
        m.insert_per_sec,
        m.sample_per_sec,
        m.p50_ms,
        m.p99_ms,
        m.max_ms,
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&checkpoints);
    Ok(())
}

struct Measured {
    rss_start_mb: f64,
    rss_peak_mb: f64,
    rss_end_mb: f64,
    reconciled: Reconciled,
    /// Mean encoded size of a sampled batch.
    sample_bytes: f64,
    insert_per_sec: f64,
    sample_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    seconds: f64,
    checkpoint_ms: f64,
}

/// `writers` writers and the samplers for `a.seconds` after a warm-up
/// second; with `checkpoint`, a checkpoint is asked for halfway.
async fn measure(
    server: &ServerProcess,
    client: &ReplayClient<Channel>,
    frames: &Arc<Frames>,
    codec: apex_proto::v1::Codec,
    writers: usize,
    a: &ReplayServiceBenchArgs,
    checkpoint: bool,
) -> Result<Measured> {
    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            tokio::spawn(writer(
                client.clone(),
                frames.clone(),
                codec,
                w as u32,
                w * 389,
                Until::Stopped,
                tally.clone(),
            ))
        })
        .collect();
    let sampling: Vec<_> = (0..a.sample_streams)
        .map(|_| tokio::spawn(sampler(client.clone(), a.batch, tally.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (i0, s0, t0) = (
        tally.inserted.load(Ordering::Relaxed),
        tally.sampled.load(Ordering::Relaxed),
        Instant::now(),
    );
    tally.insert_latency.lock().expect("lock").clear();
    let window = Duration::from_secs_f64(a.seconds);
    let rss_start = server.rss_bytes()?;
    let mut rss_peak = rss_start;
    let mut checkpoint_ms = f64::NAN;
    // The server's resident set once a second, and the checkpoint halfway.
    while t0.elapsed() < window {
        let left = window.saturating_sub(t0.elapsed());
        if checkpoint && checkpoint_ms.is_nan() && left <= window / 2 {
            let c = Instant::now();
            client.clone().checkpoint(CheckpointRequest {}).await?;
            checkpoint_ms = c.elapsed().as_secs_f64() * 1e3;
            continue;
        }
        let next = if checkpoint && checkpoint_ms.is_nan() {
            left - window / 2
        } else {
            left
        };
        tokio::time::sleep(next.min(Duration::from_secs(1))).await;
        rss_peak = rss_peak.max(server.rss_bytes()?);
    }
    let seconds = t0.elapsed().as_secs_f64();
    let inserted = tally.inserted.load(Ordering::Relaxed) - i0;
    let sampled = tally.sampled.load(Ordering::Relaxed) - s0;
    let mut lat = tally.insert_latency.lock().expect("lock").clone();
    tally.stop.store(true, Ordering::Relaxed);
    let mut acknowledged = HashMap::new();
    for t in tasks {
        let (stream_id, acked) = t.await??;
        acknowledged.insert(stream_id, acked);
    }
    for s in sampling {
        s.await??;
    }
    let rss_end = server.rss_bytes()?;
    let reconciled = reconcile(client, &acknowledged).await?;
    lat.sort_by(f64::total_cmp);
    Ok(Measured {
        rss_start_mb: mb(rss_start),
        rss_peak_mb: mb(rss_peak.max(rss_end)),
        rss_end_mb: mb(rss_end),
        reconciled,
        sample_bytes: tally.sample_bytes.load(Ordering::Relaxed) as f64
            / tally.samples.load(Ordering::Relaxed).max(1) as f64,
        insert_per_sec: inserted as f64 / seconds,
        sample_per_sec: sampled as f64 / seconds,
        p50_ms: percentile(&lat, 0.5) * 1e3,
        p99_ms: percentile(&lat, 0.99) * 1e3,
        max_ms: lat.last().copied().unwrap_or(f64::NAN) * 1e3,
        seconds,
        checkpoint_ms,
    })
}

/// Each writer's acknowledged transitions against what the server says
/// its stream stored: nothing acknowledged may be missing or stored twice.
#[derive(Debug, Default, PartialEq)]
struct Reconciled {
    acknowledged: u64,
    stored: u64,
    /// Acknowledged but not stored, summed over streams.
    lost: u64,
    /// Stored beyond what was acknowledged, summed over streams.
    extra: u64,
}

impl Reconciled {
    fn of(acknowledged: &HashMap<u64, u64>, stored: &HashMap<u64, u64>) -> Self {
        let mut r = Reconciled::default();
        for (id, &acked) in acknowledged {
            let kept = stored.get(id).copied().unwrap_or(0);
            r.acknowledged += acked;
            r.stored += kept;
            r.lost += acked.saturating_sub(kept);
            r.extra += kept.saturating_sub(acked);
        }
        r
    }
}

async fn reconcile(
    client: &ReplayClient<Channel>,
    acknowledged: &HashMap<u64, u64>,
) -> Result<Reconciled> {
    let info = client
        .clone()
        .info(InfoRequest { streams: true })
        .await?
        .into_inner();
    let stored = info
        .streams
        .iter()
        .map(|s| (s.stream_id, s.transitions))
        .collect();
    Ok(Reconciled::of(acknowledged, &stored))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// `a.window_streams` streams each send a full frame window and hold it
/// open; then they close and the server idles. Prints the resident set at
/// its peak, while the windows are full, and each second after the close,
/// next to the bytes the replay still stores (what the memory that was not
/// given back must be compared with).
async fn window_phase(
    server: &ServerProcess,
    client: &ReplayClient<Channel>,
    frames: &Arc<Frames>,
    codec: apex_proto::v1::Codec,
    a: &ReplayServiceBenchArgs,
) -> Result<()> {
    let tally = Arc::new(Tally::default());
    let hold = CancellationToken::new();
    let per_stream = STREAM_FRAME_WINDOW;
    let started = Instant::now();
    let streams: Vec<_> = (0..a.window_streams)
        .map(|w| {
            tokio::spawn(writer(
                client.clone(),
                frames.clone(),
                codec,
                1000 + w as u32,
                w * 577,
                Until::SentAndHeld(per_stream, hold.clone()),
                tally.clone(),
            ))
        })
        .collect();
    let total = per_stream * a.window_streams as u64;
    let mut sampled_peak = 0;
    while tally.inserted.load(Ordering::Relaxed) < total {
        if let Some(done) = streams.iter().find(|s| s.is_finished()) {
            bail!("a window stream ended early: {done:?}");
        }
        sampled_peak = sampled_peak.max(server.rss_bytes()?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fill_secs = started.elapsed().as_secs_f64();
    let full = server.rss_bytes()?;
    let peak = server.peak_rss_bytes()?.max(sampled_peak).max(full);
    hold.cancel();
    for s in streams {
        s.await??;
    }
    let mut after = Vec::new();
    let idle = Instant::now();
    while idle.elapsed().as_secs_f64() < a.idle_secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        after.push(mb(server.rss_bytes()?));
    }
    let info = client
        .clone()
        .info(InfoRequest::default())
        .await?
        .into_inner();
    let after_mb: Vec<String> = after.iter().map(|m| format!("{m:.0}")).collect();
    println!(
        "{{\"system\": \"apex\", \"phase\": \"windows\", \"codec\": \"{}\", \"noise\": {}, \"streams\": {}, \"frames_per_stream\": {per_stream}, \"fill_secs\": {fill_secs:.1}, \"peak_rss_mb\": {:.0}, \"full_rss_mb\": {:.0}, \"idle_rss_mb\": {:.0}, \"stored_mb\": {:.0}, \"rss_each_second_mb\": [{}]}}",
        codec.label(),
        a.noise,
        a.window_streams,
        mb(peak),
        mb(full),
        after.last().copied().unwrap_or(f64::NAN),
        mb(info.stored_bytes),
        after_mb.join(", "),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn reconciling_counts_missing_and_extra_transitions_per_stream() {
        let acked = HashMap::from([(1, 64), (2, 128), (3, 64)]);
        // Stream 2 lost a batch, stream 3 stored one twice, stream 4 was never acknowledged.
        let stored = HashMap::from([(1, 64), (2, 64), (3, 128), (4, 64)]);
        let r = Reconciled::of(&acked, &stored);
        assert_eq!(
            r,
            Reconciled {
                acknowledged: 256,
                stored: 256,
                lost: 64,
                extra: 64
            }
        );
        assert_eq!(Reconciled::of(&acked, &acked).lost, 0);
    }

    #[test]
    fn server_env_pairs_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_env_pair("MALLOC_CONF=a:1,b=2").unwrap(),
            ("MALLOC_CONF".to_string(), "a:1,b=2".to_string())
        );
        assert!(parse_env_pair("LD_PRELOAD").is_err());
    }

    #[test]
    fn noise_frames_are_incompressible_and_keep_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obs.npy");
        let mut file = std::fs::File::create(&path).unwrap();
        apex_media::npy::write_u8_header(&mut file, &[10, 84, 84]).unwrap();
        file.write_all(&vec![3u8; 10 * 84 * 84]).unwrap();
        drop(file);
        let plain = Frames::load(&path, false).unwrap();
        let noise = Frames::load(&path, true).unwrap();
        assert_eq!(plain.shape(), noise.shape());
        let size = |f: &Frames| {
            apex_proto::v1::Codec::Lz4
                .encode(&f.stack(0)[..84 * 84])
                .len()
        };
        assert!(size(&plain) < 200, "a flat frame compresses");
        assert!(size(&noise) >= 84 * 84, "a noise frame does not");
    }
}
