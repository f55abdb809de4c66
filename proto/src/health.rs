//! gRPC health that fails when a server is stuck, not merely when it stops
//! listening.
//!
//! A deadlocked lock or a training step that never returns leaves the port
//! open and the health service answering SERVING, so probes stay green while
//! nothing works. A service marks its critical sections with [`Liveness`];
//! [`watch`] turns a section that has run longer than its limit into
//! NOT_SERVING (for the service and for the whole server, "", which is what
//! Kubernetes' gRPC probe asks by default) and back once it ends. A wedged
//! runtime cannot answer the health call at all, which probes also see.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// How often [`watch`] looks.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Whether a critical section is running, and since when.
#[derive(Clone, Debug)]
pub struct Liveness {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    /// Milliseconds after `origin` plus one at which the running section
    /// began; 0 when none runs.
    busy_since: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                busy_since: AtomicU64::new(0),
            }),
        }
    }
}

/// Marks a critical section from [`Liveness::begin`] until dropped.
#[must_use = "the section ends when the guard is dropped"]
pub struct Busy {
    inner: Arc<Inner>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.inner.busy_since.store(0, Ordering::Relaxed);
    }
}

impl Liveness {
    /// Starts a section. Sections of one `Liveness` do not overlap: give
    /// each independent activity its own.
    pub fn begin(&self) -> Busy {
        let now = self.inner.origin.elapsed().as_millis() as u64 + 1;
        self.inner.busy_since.store(now, Ordering::Relaxed);
        Busy {
            inner: self.inner.clone(),
        }
    }

    /// How long the running section has run, if one does.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.inner.busy_since.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let now = self.inner.origin.elapsed().as_millis() as u64 + 1;
                Some(Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }

    /// Whether a section has run longer than `limit`.
    pub fn stuck(&self, limit: Duration) -> bool {
        self.busy_for().is_some_and(|busy| busy > limit)
    }
}

/// The status a server's gRPC health service gives `service` ("" for the
/// whole server), as probes see it.
pub async fn check(
    endpoint: tonic::transport::Endpoint,
    service: &str,
) -> Result<ProbedStatus, CheckError> {
    let channel = endpoint.connect().await.map_err(CheckError::Connect)?;
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(request)
        .await
        .map_err(CheckError::Call)?
        .into_inner()
        .status;
    ProbedStatus::try_from(status).map_err(|_| CheckError::Unknown(status))
}

pub use tonic_health::pb::health_check_response::ServingStatus as ProbedStatus;

/// Why [`check`] got no status.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no connection: {0}")]
    Connect(tonic::transport::Error),
    #[error("the health call failed: {0}")]
    Call(tonic::Status),
    #[error("unknown health status {0}")]
    Unknown(i32),
}

/// Reports `service` (and the server, "") SERVING while no section of
/// `liveness` has run longer than `limit`, NOT_SERVING otherwise, until
/// `stop`. Logs each change once.
pub async fn watch(
    reporter: HealthReporter,
    service: &'static str,
    liveness: Liveness,
    limit: Duration,
    stop: CancellationToken,
) {
    let mut was_stuck = false;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let stuck = liveness.stuck(limit);
        if stuck == was_stuck {
            continue;
        }
        was_stuck = stuck;
        let status = if stuck {
            tracing::error!(
                service,
                limit_s = limit.as_secs_f64(),
                "stuck: a critical section has run past its limit; health reports NOT_SERVING until it ends"
            );
            ServingStatus::NotServing
        } else {
            tracing::warn!(service, "no longer stuck; health reports SERVING");
            ServingStatus::Serving
        };
        reporter.set_service_status(service, status).await;
        reporter.set_service_status("", status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_stuck_only_past_its_limit_and_only_while_it_runs() {
        let live = Liveness::default();
        assert_eq!(live.busy_for(), None);
        let busy = live.begin();
        assert!(!live.stuck(Duration::from_millis(200)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(live.stuck(Duration::from_millis(10)));
        drop(busy);
        assert!(!live.stuck(Duration::ZERO));
    }

    #[tokio::test]
    async fn watch_flips_the_server_and_the_service_to_not_serving_and_back() {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("apex.v1.Test", ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ),
        );
        let live = Liveness::default();
        tokio::spawn(watch(
            reporter,
            "apex.v1.Test",
            live.clone(),
            Duration::from_millis(100),
            stop.clone(),
        ));
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let status = async |service: &str| check(endpoint.clone(), service).await.unwrap();
        let (serving, not_serving) = (ProbedStatus::Serving, ProbedStatus::NotServing);
        assert_eq!(status("").await, serving);

        let busy = live.begin();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(status("").await, not_serving);
        assert_eq!(status("apex.v1.Test").await, not_serving);

        drop(busy);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(status("").await, serving);
        assert_eq!(status("apex.v1.Test").await, serving);
        stop.cancel();
    }
}
