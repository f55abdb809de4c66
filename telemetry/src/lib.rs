//! Metrics plumbing shared by every apex service: the Prometheus `/metrics`
//! endpoint with process CPU and memory, gRPC error counts and handling
//! times. Each crate names and describes its own metrics in its `metrics.rs`.
//! [`tensorboard`] writes training curves as TensorBoard event files.

pub mod tensorboard;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// gRPC calls that failed, by method and status code (both sides count theirs).
pub const GRPC_ERRORS: &str = "apex_grpc_errors_total";
/// Server-side handling time of gRPC calls (one insert batch for streams), by method.
pub const GRPC_HANDLING: &str = "apex_grpc_server_handling_seconds";

/// Buckets of every histogram measured in seconds: 100 us to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// How often process CPU and memory are read.
const PROCESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}; pick another --metrics-addr")]
pub struct ExporterError {
    addr: SocketAddr,
    reason: String,
}

/// Serves this process's metrics at `http://addr/metrics`.
pub fn serve_prometheus(addr: SocketAddr) -> Result<(), ExporterError> {
    let err = |e: &dyn std::fmt::Display| ExporterError {
        addr,
        reason: e.to_string(),
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| err(&e))?
        .install()
        .map_err(|e| err(&e))?;
    metrics::describe_counter!(
        GRPC_ERRORS,
        "gRPC calls that failed, by method and status code"
    );
    metrics::describe_histogram!(
        GRPC_HANDLING,
        metrics::Unit::Seconds,
        "server-side handling time of gRPC calls, by method"
    );
    let process = metrics_process::Collector::default();
    process.describe();
    std::thread::Builder::new()
        .name("process-metrics".into())
        .spawn(move || loop {
            process.collect();
            std::thread::sleep(PROCESS_EVERY);
        })
        .map_err(|e| err(&e))?;
    Ok(())
}

/// Counts a failed gRPC call.
pub fn grpc_error(method: &'static str, status: &tonic::Status) {
    metrics::counter!(GRPC_ERRORS, "method" => method, "code" => format!("{:?}", status.code()))
        .increment(1);
}

/// Records how long the server took over a call of `method` that began at `start`.
pub fn grpc_handled(method: &'static str, start: Instant) {
    metrics::histogram!(GRPC_HANDLING, "method" => method).record(start.elapsed().as_secs_f64());
}
