//! `apex health`: the probe that containers and scripts use. It asks a
//! server's gRPC health service whether it is SERVING, which a stuck server
//! stops saying (apex_proto::health), rather than whether its port is open.

use std::time::Duration;

use anyhow::{bail, Result};
use apex_proto::health::{CheckError, ProbedStatus};
use clap::Args;

#[derive(Args)]
pub struct HealthArgs {
    /// The server: host:port or http://host:port.
    #[arg(default_value = "127.0.0.1:50051")]
    addr: String,
    /// The service to ask about (apex.v1.Replay, apex.v1.Parameters); empty: the whole server.
    #[arg(long, env = "APEX_SERVICE", default_value = "")]
    service: String,
    /// Seconds to wait for the answer.
    #[arg(long, env = "APEX_TIMEOUT", default_value_t = 5.0)]
    timeout: f64,
    /// TLS settings for an https:// address (the health service needs no token).
    #[command(flatten)]
    auth: crate::services::AuthArgs,
}

pub async fn run(a: HealthArgs) -> Result<()> {
    let uri = if a.addr.contains("://") {
        a.addr.clone()
    } else {
        format!("http://{}", a.addr)
    };
    let tls = a.auth.load()?.tls;
    let wait = Duration::from_secs_f64(a.timeout.max(0.001));
    let endpoint = apex_proto::transport::endpoint(&uri, &tls)
        .map_err(|_| anyhow::anyhow!("'{}' is not an address: use host:port", a.addr))?
        .connect_timeout(wait)
        .timeout(wait);
    match apex_proto::health::check(endpoint, &a.service).await {
        Ok(ProbedStatus::Serving) => {
            println!("serving");
            Ok(())
        }
        Ok(other) => bail!(
            "{} reports {}: it is stuck or stopping (its log says why)",
            a.addr,
            other.as_str_name()
        ),
        Err(CheckError::Connect(_)) => bail!(
            "{} does not accept connections: is the server running?",
            a.addr
        ),
        Err(CheckError::Call(e)) => bail!(
            "{} did not answer its health check within {wait:?}: {}",
            a.addr,
            e.message()
        ),
        Err(e @ CheckError::Unknown(_)) => bail!("{} reports an {e}", a.addr),
    }
}
