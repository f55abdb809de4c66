//! Metrics plumbing shared by every apex service: the Prometheus `/metrics`
//! endpoint and the gRPC error counter. Each crate names and describes its
//! own metrics in its `metrics.rs`.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;

/// gRPC calls that failed, by method and status code (both sides count theirs).
pub const GRPC_ERRORS: &str = "apex_grpc_errors_total";

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason}; pick another --metrics-addr")]
pub struct ExporterError {
    addr: SocketAddr,
    reason: String,
}

/// Serves this process's metrics at `http://addr/metrics`.
pub fn serve_prometheus(addr: SocketAddr) -> Result<(), ExporterError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| ExporterError {
            addr,
            reason: e.to_string(),
        })?;
    metrics::describe_counter!(
        GRPC_ERRORS,
        "gRPC calls that failed, by method and status code"
    );
    Ok(())
}

/// Counts a failed gRPC call.
pub fn grpc_error(method: &'static str, status: &tonic::Status) {
    metrics::counter!(GRPC_ERRORS, "method" => method, "code" => format!("{:?}", status.code()))
        .increment(1);
}
