//! The replay server: a sharded, prioritized, rate-limited and persistent
//! store of transitions that actors stream into and the learner samples
//! from, over gRPC (`apex.v1.Replay`). Frames arrive compressed by the
//! actors, are stored once however many transitions share them, and leave
//! as they came. It never links libtorch.

pub mod checkpoint;
pub mod frame;
pub mod limiter;
mod metrics;
pub mod sequences;
pub mod service;
pub mod shard;
pub mod store;
pub mod stream;
pub mod sum_tree;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apex_proto::v1::replay_server::ReplayServer;
use apex_proto::MAX_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::CheckpointError;
use crate::limiter::{RateLimit, RateLimiter};
use crate::sequences::Sequences;
pub use crate::service::ReplayService;
use crate::store::{Contents, Layout, Store, StoreConfig};
use crate::stream::WindowBudget;

pub use apex_proto::priority::{valid_priority, MAX_PRIORITY};

/// How long a stopping server lets calls under way finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How often the health probe takes the locks every call needs, and how
/// long it may wait for them before health reports NOT_SERVING. Inserts and
/// samples hold a shard's lock for microseconds, a checkpoint's cut for a
/// few: ten seconds is a deadlock or a starved runtime, not load.
const PROBE_EVERY: Duration = if cfg!(test) {
    Duration::from_millis(100)
} else {
    Duration::from_secs(2)
};
const STUCK_AFTER: Duration = if cfg!(test) {
    Duration::from_millis(300)
} else {
    Duration::from_secs(10)
};

#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    pub store: StoreConfig,
    pub limit: RateLimit,
    /// How long a Sample call waits on the rate limiter before it fails
    /// with FAILED_PRECONDITION (the learner then asks again).
    pub sample_timeout: Duration,
    /// Where checkpoints go and are restored from; none: nothing persists.
    pub checkpoint_dir: Option<PathBuf>,
    /// Time between periodic checkpoints (one is also written at shutdown).
    pub checkpoint_every: Option<Duration>,
    /// The observation shape, codec and action count every insert must
    /// declare; none: the first insert into an empty replay sets them.
    pub layout: Option<Layout>,
    /// Bytes all insert streams' frame windows may hold together.
    pub stream_window_bytes: usize,
    /// Insert streams open at once, at most.
    pub max_insert_streams: usize,
    /// Calls without this bearer token are refused; none: open.
    pub token: Option<apex_proto::auth::Token>,
    /// Served where it has an identity; plaintext otherwise.
    pub tls: apex_proto::tls::Tls,
}

/// Defaults for the limits: room for 64 actors' windows of Atari frames.
pub const DEFAULT_STREAM_WINDOW_BYTES: usize = 4 << 30;
pub const DEFAULT_MAX_INSERT_STREAMS: usize = 1024;

impl ReplayConfig {
    /// In memory only, four shards, no samples-per-insert ratio: for tests
    /// and benchmarks.
    pub fn in_memory(capacity: usize, min_size: usize, alpha: f64, seed: u64) -> Self {
        ReplayConfig {
            store: StoreConfig {
                capacity,
                shards: 4,
                alpha,
                seed,
            },
            limit: RateLimit {
                min_size,
                samples_per_insert: None,
                error_buffer: 0.0,
            },
            sample_timeout: Duration::from_secs(1),
            checkpoint_dir: None,
            checkpoint_every: None,
            layout: None,
            stream_window_bytes: DEFAULT_STREAM_WINDOW_BYTES,
            max_insert_streams: DEFAULT_MAX_INSERT_STREAMS,
            token: None,
            tls: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("checkpoint {path} was written with alpha {found}, this server runs with alpha {configured}: start with --alpha {found}, or move the checkpoint away to start empty")]
    AlphaMismatch {
        path: PathBuf,
        found: f64,
        configured: f64,
    },
    #[error("cannot serve gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("--min-size {min_size} is more than --capacity {capacity}: sampling would never start; lower --min-size or raise --capacity")]
    MinSizeAboveCapacity { min_size: usize, capacity: usize },
    #[error("--capacity {capacity} is below --shards {shards}: every shard needs room; raise --capacity")]
    CapacityBelowShards { capacity: usize, shards: usize },
    #[error("checkpoint {path} holds observations {:?} ({:?}, {} actions) but this server is configured for {:?} ({:?}, {} actions): start it with the checkpoint's settings, or move the checkpoint away to start empty", found.shape, found.codec, found.num_actions, configured.shape, configured.codec, configured.num_actions)]
    LayoutMismatch {
        path: PathBuf,
        found: Layout,
        configured: Layout,
    },
}

impl ReplayConfig {
    /// Refuses settings that can never work, before anything starts.
    pub fn check(&self) -> Result<(), ReplayError> {
        let (capacity, shards) = (self.store.capacity, self.store.shards.max(1));
        if capacity < shards {
            return Err(ReplayError::CapacityBelowShards { capacity, shards });
        }
        if self.limit.min_size > capacity {
            return Err(ReplayError::MinSizeAboveCapacity {
                min_size: self.limit.min_size,
                capacity,
            });
        }
        Ok(())
    }
}

/// What `checkpoint` wrote.
#[derive(Debug, Clone)]
pub struct CheckpointReport {
    pub path: PathBuf,
    pub transitions: usize,
    pub bytes: u64,
    pub took: Duration,
}

struct Inner {
    store: Store,
    limiter: RateLimiter,
    config: ReplayConfig,
    sequences: Sequences,
    window_budget: Arc<WindowBudget>,
    insert_streams: AtomicUsize,
    /// One checkpoint at a time.
    checkpointing: tokio::sync::Mutex<()>,
    /// Held (read) by every insert while it stores; taken (write) to cut a
    /// consistent checkpoint, and set at shutdown to refuse new inserts.
    inserts_closed: tokio::sync::RwLock<bool>,
    checkpoints: AtomicU64,
}

/// An open insert stream, counted against the server's cap while it lives.
pub(crate) struct InsertStreamSlot(Replay);

impl Drop for InsertStreamSlot {
    fn drop(&mut self) {
        self.0.inner.insert_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A replay's shared state: cheap to clone, served by [`Replay::serve`].
#[derive(Clone)]
pub struct Replay {
    inner: Arc<Inner>,
}

impl Replay {
    /// A replay with nothing in it (no restore even with a checkpoint folder).
    pub fn new(config: &ReplayConfig) -> Self {
        let store = Store::with_layout(config.store.clone(), config.layout.clone());
        Replay::with_store(config, store, Sequences::default())
    }

    fn with_store(config: &ReplayConfig, store: Store, sequences: Sequences) -> Self {
        metrics::describe();
        ::metrics::gauge!(metrics::CAPACITY).set(config.store.capacity as f64);
        let c = store.counters();
        let limiter = RateLimiter::new(config.limit, c.inserted_total, c.sampled_total);
        let replay = Replay {
            inner: Arc::new(Inner {
                store,
                limiter,
                config: config.clone(),
                sequences,
                window_budget: WindowBudget::new(config.stream_window_bytes),
                insert_streams: AtomicUsize::new(0),
                checkpointing: tokio::sync::Mutex::new(()),
                inserts_closed: tokio::sync::RwLock::new(false),
                checkpoints: AtomicU64::new(0),
            }),
        };
        replay.report_size();
        replay
    }

    /// Opens the replay, restoring the newest readable checkpoint in the
    /// checkpoint folder. A damaged checkpoint is moved aside (`.corrupt-*`)
    /// and the one before it used, so a bad file never stops the server from
    /// starting again and again; both damaged means starting empty.
    pub fn open(config: &ReplayConfig) -> Result<Self, ReplayError> {
        config.check()?;
        let Some(dir) = &config.checkpoint_dir else {
            return Ok(Replay::new(config));
        };
        // Frames read from a checkpoint are counted by the ledger of the store they end up in.
        let ledger = Arc::new(frame::Ledger::default());
        for path in [checkpoint::current(dir), checkpoint::previous(dir)] {
            if !path.exists() {
                continue;
            }
            match checkpoint::read(&path, &ledger) {
                Ok(mut contents) => {
                    if let Some(configured) = &config.layout {
                        match &contents.layout {
                            // An action count of 0: written before counts were declared.
                            Some(found)
                                if found.shape != configured.shape
                                    || found.codec != configured.codec
                                    || (found.num_actions != 0
                                        && found.num_actions != configured.num_actions) =>
                            {
                                return Err(ReplayError::LayoutMismatch {
                                    path,
                                    found: found.clone(),
                                    configured: configured.clone(),
                                });
                            }
                            _ => contents.layout = Some(configured.clone()),
                        }
                    }
                    if contents.alpha != config.store.alpha {
                        return Err(ReplayError::AlphaMismatch {
                            path,
                            found: contents.alpha,
                            configured: config.store.alpha,
                        });
                    }
                    let held: usize = contents.shards.iter().map(|s| s.items.len()).sum();
                    tracing::info!(path = %path.display(), transitions = held, streams = contents.streams.len(), "replay restored");
                    let sequences = Sequences::restore(&contents.streams);
                    let store = Store::restore(
                        config.store.clone(),
                        reshard(contents, config.store.shards),
                        ledger,
                    );
                    return Ok(Replay::with_store(config, store, sequences));
                }
                Err(e @ CheckpointError::Corrupt { .. }) => {
                    let secs = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let aside = path.with_extension(format!("corrupt-{secs}"));
                    tracing::error!(error = %e, moved_to = %aside.display(), "damaged replay checkpoint moved aside; trying the one before");
                    std::fs::rename(&path, &aside).map_err(|source| CheckpointError::Write {
                        path: aside.clone(),
                        source,
                    })?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Replay::new(config))
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    pub fn config(&self) -> &ReplayConfig {
        &self.inner.config
    }

    pub fn size(&self) -> usize {
        self.inner.store.len()
    }

    pub fn checkpoints(&self) -> u64 {
        self.inner.checkpoints.load(Ordering::Relaxed)
    }

    /// Which batches each insert stream has stored.
    pub fn sequences(&self) -> &Sequences {
        &self.inner.sequences
    }

    pub(crate) fn window_budget(&self) -> &Arc<WindowBudget> {
        &self.inner.window_budget
    }

    /// A slot for one more insert stream; `None` at the server's cap.
    pub(crate) fn open_insert_stream(&self) -> Option<InsertStreamSlot> {
        let open = self.inner.insert_streams.fetch_add(1, Ordering::Relaxed);
        let slot = InsertStreamSlot(self.clone());
        (open < self.inner.config.max_insert_streams).then_some(slot)
    }

    fn report_size(&self) {
        let store = &self.inner.store;
        let size = store.len();
        let bytes = store.stored_bytes();
        ::metrics::gauge!(metrics::SIZE).set(size as f64);
        ::metrics::gauge!(metrics::STORED_BYTES).set(bytes as f64);
        ::metrics::gauge!(metrics::BYTES_PER_TRANSITION).set(if size == 0 {
            0.0
        } else {
            bytes as f64 / size as f64
        });
    }

    /// Writes a checkpoint of the current contents. Inserts pause only
    /// while the cut is taken (each shard's end and each stream's last
    /// sequence, a few microseconds); items are copied slice by slice and
    /// the file is written with no lock held, so inserts and sampling go on.
    /// Checkpoints run one at a time on their own task: a caller that goes
    /// away (a cancelled RPC) does not cut a write short.
    pub async fn checkpoint(&self) -> Result<Option<CheckpointReport>, CheckpointError> {
        let Some(dir) = self.inner.config.checkpoint_dir.clone() else {
            return Ok(None);
        };
        let replay = self.clone();
        tokio::spawn(async move { replay.write_checkpoint(dir).await.map(Some) })
            .await
            .expect("the checkpoint task does not panic")
    }

    async fn write_checkpoint(&self, dir: PathBuf) -> Result<CheckpointReport, CheckpointError> {
        let _one = self.inner.checkpointing.lock().await;
        let start = Instant::now();
        let (cut, streams) = {
            let _no_inserts = self.inner.inserts_closed.write().await;
            (self.inner.store.cut(), self.inner.sequences.snapshot())
        };
        let replay = self.clone();
        let (path, bytes, transitions) = tokio::task::spawn_blocking(move || {
            let mut contents = replay.inner.store.contents_at(cut);
            contents.streams = streams;
            let transitions: usize = contents.shards.iter().map(|s| s.items.len()).sum();
            checkpoint::write(&dir, &contents).map(|(path, bytes)| (path, bytes, transitions))
        })
        .await
        .expect("the checkpoint writer does not panic")?;
        let took = start.elapsed();
        self.inner.checkpoints.fetch_add(1, Ordering::Relaxed);
        ::metrics::counter!(metrics::CHECKPOINTS).increment(1);
        ::metrics::histogram!(metrics::CHECKPOINT_SECONDS).record(took.as_secs_f64());
        tracing::info!(path = %path.display(), transitions, bytes, took_s = took.as_secs_f64(), "replay checkpoint written");
        Ok(CheckpointReport {
            path,
            transitions,
            bytes,
            took,
        })
    }

    /// Serves `apex.v1.Replay` and gRPC health on `listener` until
    /// `shutdown` is cancelled, checkpointing periodically and once more at
    /// the end.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ReplayError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<ReplayServer<ReplayService>>().await;
        let watching = tokio_util::sync::CancellationToken::new();
        let liveness = apex_proto::health::Liveness::default();
        tokio::spawn(apex_proto::health::watch(
            health.clone(),
            <ReplayServer<ReplayService> as tonic::server::NamedService>::NAME,
            liveness.clone(),
            STUCK_AFTER,
            watching.clone(),
        ));
        let prober = tokio::spawn(self.clone().probe(liveness));
        let service = ReplayServer::new(ReplayService::new(self.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let service = apex_proto::auth::guard(service, self.inner.config.token.clone());
        let periodic = self.inner.config.checkpoint_every.map(|every| {
            let replay = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = replay.checkpoint().await {
                        tracing::error!(error = %e, "periodic replay checkpoint failed");
                    }
                }
            })
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = apex_proto::transport::server(&self.inner.config.tls)
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(apex_proto::transport::incoming(listener), async {
                let _ = stop_rx.await;
            });
        tokio::pin!(server);
        let served = tokio::select! {
            r = &mut server => Some(r),
            _ = shutdown.cancelled() => None,
        };
        if let Some(task) = periodic {
            task.abort();
        }
        prober.abort();
        watching.cancel();
        // Refuse further inserts (actors resend what was not acknowledged),
        // so the checkpoint holds every acknowledged transition.
        self.close_inserts().await;
        health
            .set_not_serving::<ReplayServer<ReplayService>>()
            .await;
        self.checkpoint().await?;
        let served = match served {
            Some(r) => r,
            None => {
                let _ = stop_tx.send(());
                // Insert streams stay open as long as their actors: do not wait on them.
                tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                    .await
                    .unwrap_or(Ok(()))
            }
        };
        Ok(served?)
    }

    /// Ends the rate limiter's waits (the other side is stopping too),
    /// waits for inserts under way, then refuses new ones.
    async fn close_inserts(&self) {
        self.inner.limiter.close();
        *self.inner.inserts_closed.write().await = true;
    }

    /// Takes, every PROBE_EVERY, what every call needs (the insert gate and
    /// each shard's lock), as one section of `liveness`: a lock that is
    /// never released shows as a section that never ends.
    async fn probe(self, liveness: apex_proto::health::Liveness) {
        let mut tick = tokio::time::interval(PROBE_EVERY);
        loop {
            tick.tick().await;
            let _busy = liveness.begin();
            let _gate = self.inner.inserts_closed.read().await;
            let replay = self.clone();
            let _ = tokio::task::spawn_blocking(move || replay.inner.store.cut()).await;
        }
    }

    /// Held while inserting; `None` once the replay is closing.
    pub(crate) async fn insert_gate(&self) -> Option<tokio::sync::RwLockReadGuard<'_, bool>> {
        let gate = self.inner.inserts_closed.read().await;
        (!*gate).then_some(gate)
    }
}

/// Spreads a checkpoint's items over `shards` shards when it was written
/// with another number (ids change; order within each shard is kept).
fn reshard(mut contents: Contents, shards: usize) -> Contents {
    if contents.shards.len() == shards {
        return contents;
    }
    let items: Vec<_> = contents.shards.drain(..).flat_map(|s| s.items).collect();
    let mut parts: Vec<Vec<_>> = (0..shards).map(|_| Vec::new()).collect();
    for (i, it) in items.into_iter().enumerate() {
        parts[i % shards].push(it);
    }
    contents.shards = parts
        .into_iter()
        .map(|items| shard::ShardContents {
            first: 0,
            next: items.len() as u64,
            items,
        })
        .collect();
    contents
}

/// Opens (restoring any checkpoint) and serves a replay on `listener` until
/// `shutdown` is cancelled: the same stop signal as every other service's.
pub async fn run(
    config: ReplayConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ReplayError> {
    Replay::open(&config)?.serve(listener, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_can_never_work_are_refused_at_start() {
        let mut c = ReplayConfig::in_memory(100, 101, 0.6, 0);
        let e = Replay::open(&c).err().expect("min size above capacity");
        assert!(
            e.to_string()
                .contains("--min-size 101 is more than --capacity 100"),
            "{e}"
        );
        c.limit.min_size = 100;
        assert!(Replay::open(&c).is_ok());
        c.store.capacity = 3; // four shards
        c.limit.min_size = 1;
        let e = Replay::open(&c).err().expect("capacity below shards");
        assert!(
            e.to_string().contains("--capacity 3 is below --shards 4"),
            "{e}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn health_fails_while_a_lock_every_call_needs_is_held() {
        use apex_proto::health::{check, ProbedStatus};

        let replay = Replay::open(&ReplayConfig::in_memory(100, 1, 0.6, 0)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let served = tokio::spawn(replay.clone().serve(listener, stop.clone()));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let status = async || check(endpoint.clone(), "").await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(status().await, ProbedStatus::Serving);

        // A writer that never lets go of the insert gate: every insert would hang.
        let held = replay.inner.inserts_closed.write().await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(status().await, ProbedStatus::NotServing);
        drop(held);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(status().await, ProbedStatus::Serving);

        stop.cancel();
        served.await.unwrap().unwrap();
    }
}
