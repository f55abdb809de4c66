//! How every apex client and server talks: HTTP/2 keepalives (a silent
//! network partition is noticed in seconds, not never), deadlines on unary
//! calls, which failures are worth retrying, and how long to wait between
//! tries.

use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::Code;

use crate::tls::Tls;

/// A ping on every connection this often; no answer within the timeout
/// closes it, failing the calls on it with UNAVAILABLE.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// HTTP/2 streams open at once on one connection, at most.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Connections accepted on `listener` with Nagle's algorithm off and TCP
/// keepalives on (a server fed its own listener gets neither from
/// [`server`]'s settings). With Nagle on, a lone call in flight, such as
/// a learner's Sample with one input worker, waited on the peer's delayed
/// ACK for every answer: 20 ms a batch (BENCHMARKS.md, input pipeline).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
}

/// A deadline for unary calls that should answer promptly (a Sample call
/// waits on the rate limiter for up to the server's sample timeout first).
pub const UNARY_DEADLINE: Duration = Duration::from_secs(60);

/// A client endpoint for `addr` with keepalives and a connect timeout, and
/// `tls` for an `https://` address; `Err(addr)` when the address is
/// malformed.
pub fn endpoint(addr: &str, tls: &Tls) -> Result<Endpoint, String> {
    let mut endpoint = Endpoint::from_shared(addr.to_owned())
        .map_err(|_| addr.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    if addr.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls.client_config())
            .map_err(|_| addr.to_owned())?;
    }
    Ok(endpoint)
}

/// A server builder with keepalives, a cap on streams per connection, and
/// TLS where `tls` has an identity.
pub fn server(tls: &Tls) -> Server {
    let server = Server::builder()
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS));
    match tls.server_config() {
        Some(config) => server
            .tls_config(config)
            .expect("Tls::load checked these settings"),
        None => server,
    }
}

/// `message` as a request that fails with DEADLINE_EXCEEDED after `deadline`.
pub fn with_deadline<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(deadline);
    r
}

/// Whether a failed call may succeed if tried again later: the peer is
/// away, restarting, overloaded or the connection broke. The others
/// (INVALID_ARGUMENT, UNAUTHENTICATED, ...) are mistakes in what was sent or
/// how the caller is set up, and trying again would only repeat them.
pub fn is_transient(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
    )
}

/// Exponential backoff with full jitter: each wait is uniform in
/// [0, min(cap, base * 2^tries)], so many clients that lost the same server
/// do not come back at the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    tries: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            tries: 0,
        }
    }

    /// The next wait; each call doubles the range until the cap.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1 << self.tries.min(20))
            .min(self.cap);
        self.tries += 1;
        ceiling.mul_f64(jitter())
    }

    /// Tries since the last success.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    pub fn reset(&mut self) {
        self.tries = 0;
    }
}

/// Retries of one kind of call to one server: the wait before each try,
/// and one log line when an outage starts and one when it ends (not one per
/// try).
#[derive(Debug)]
pub struct Retry {
    call: &'static str,
    addr: String,
    backoff: Backoff,
    /// When the current run of failures began.
    since: Option<Instant>,
}

impl Retry {
    pub fn new(call: &'static str, addr: &str) -> Self {
        Retry {
            call,
            addr: addr.to_owned(),
            backoff: Backoff::default(),
            since: None,
        }
    }

    /// After a failed call: how long to wait before the next try, or the
    /// status back when no retry can help ([`is_transient`]).
    pub fn failed(&mut self, status: &tonic::Status) -> Result<Duration, tonic::Status> {
        if !is_transient(status) {
            return Err(status.clone());
        }
        if self.since.is_none() {
            tracing::warn!(
                addr = %self.addr,
                call = self.call,
                code = ?status.code(),
                message = status.message(),
                "server unreachable or failing: retrying with backoff"
            );
            self.since = Some(Instant::now());
        }
        Ok(self.backoff.next_wait())
    }

    /// After a successful call: ends the outage, if any.
    pub fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                addr = %self.addr,
                call = self.call,
                after_s = since.elapsed().as_secs_f64(),
                failures = self.backoff.tries(),
                "server back"
            );
        }
        self.backoff.reset();
    }

    /// Whether the last call failed.
    pub fn is_failing(&self) -> bool {
        self.since.is_some()
    }
}

/// Sleeps for `wait`; `true` if `stop` came first.
pub async fn pause_or_stop(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

/// A uniform number in [0, 1) without a random-number crate: the clock's
/// nanoseconds mixed through a 64-bit finalizer differ between processes
/// and calls, which is all jitter needs.
fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ CALLS.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_are_jittered() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..40).map(|_| b.next_wait()).collect();
        assert!(waits[0] <= Duration::from_millis(100));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(1)));
        let late = &waits[10..];
        let distinct: std::collections::HashSet<_> = late.iter().collect();
        assert!(distinct.len() > 20, "jitter spreads the waits: {late:?}");
        let mean = late.iter().map(|w| w.as_secs_f64()).sum::<f64>() / late.len() as f64;
        assert!(
            (0.25..0.75).contains(&mean),
            "uniform under the cap: {mean}"
        );
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(100));
    }

    #[test]
    fn an_outage_is_retried_with_growing_waits_and_ends_at_the_first_success() {
        let mut r = Retry::new("Sample", "http://x");
        let down = tonic::Status::unavailable("down");
        let waits: Vec<Duration> = (0..10).map(|_| r.failed(&down).unwrap()).collect();
        for (i, w) in waits.iter().enumerate() {
            let ceiling =
                (Duration::from_millis(100) * 2u32.pow(i as u32)).min(Duration::from_secs(5));
            assert!(*w <= ceiling, "try {i}: {w:?} above {ceiling:?}");
        }
        assert!(r.is_failing());
        r.succeeded();
        assert!(!r.is_failing());
        assert!(r.failed(&down).unwrap() <= Duration::from_millis(100));
        let refused = r
            .failed(&tonic::Status::invalid_argument("no"))
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
    }

    #[test]
    fn only_failures_that_can_pass_are_retried() {
        for code in [Code::Unavailable, Code::Cancelled, Code::ResourceExhausted] {
            assert!(is_transient(&tonic::Status::new(code, "")), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::FailedPrecondition,
        ] {
            assert!(!is_transient(&tonic::Status::new(code, "")), "{code:?}");
        }
    }
}
