//! Calls to the replay server that outlive its restarts: the shared retry
//! policy, plus what the learner adds (a Sample held back by the rate
//! limiter is asked again soon; a refusal says what to fix).

use std::time::Duration;

use apex_proto::transport;
use tonic::{Code, Status};

use crate::LearnerError;

const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// What to do about a configuration error, by code.
fn advice(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated | Code::PermissionDenied => {
            "give the learner the replay server's token (APEX_TOKEN or --token-file)"
        }
        Code::Unimplemented => {
            "check that the address is an apex replay server of the same version as this learner"
        }
        _ => {
            "fix the learner's settings named in the message (they must match the replay server's)"
        }
    }
}

/// Retries of one kind of call to the replay server (see
/// [`apex_proto::transport::Retry`]), with the learner's error and advice
/// when no retry can help.
pub struct Retry {
    call: &'static str,
    addr: String,
    inner: transport::Retry,
}

impl Retry {
    pub fn new(call: &'static str, addr: &str) -> Self {
        Retry {
            call,
            addr: addr.to_owned(),
            inner: transport::Retry::new(call, addr),
        }
    }

    /// After a failed call: how long to wait before the next try, or the
    /// error to stop with when no retry can help.
    pub fn failed(&mut self, status: &Status) -> Result<Duration, LearnerError> {
        apex_telemetry::grpc_error(self.call, status);
        // The server answered and holds sampling back (too few transitions,
        // or the rate limiter): it already waited its sample timeout, so ask
        // again soon. No outage, and routine under a rate limit.
        if status.code() == Code::FailedPrecondition {
            tracing::debug!(
                call = self.call,
                reason = status.message(),
                "waiting for the replay server"
            );
            return Ok(FIRST_PAUSE);
        }
        self.inner
            .failed(status)
            .map_err(|status| LearnerError::Replay {
                addr: self.addr.clone(),
                call: self.call,
                advice: advice(status.code()),
                status,
            })
    }

    /// After a successful call: ends the outage, if any.
    pub fn succeeded(&mut self) {
        self.inner.succeeded();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_up_to_the_cap_and_reset_on_success() {
        let mut r = Retry::new("Sample", "http://x");
        let unavailable = Status::unavailable("down");
        let pauses: Vec<Duration> = (0..10).map(|_| r.failed(&unavailable).unwrap()).collect();
        for (i, p) in pauses.iter().enumerate() {
            let ceiling = (FIRST_PAUSE * 2u32.pow(i as u32)).min(Duration::from_secs(5));
            assert!(*p <= ceiling, "try {i}: {p:?} above {ceiling:?}");
        }
        assert!(r.inner.is_failing());
        r.succeeded();
        assert!(!r.inner.is_failing());
        assert!(r.failed(&unavailable).unwrap() <= FIRST_PAUSE);
    }

    #[test]
    fn transient_codes_are_retried_and_configuration_errors_are_not() {
        let transient = [
            Code::Unavailable,
            Code::FailedPrecondition,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
            Code::Aborted,
            Code::ResourceExhausted,
            Code::Internal,
        ];
        for code in transient {
            let mut r = Retry::new("Sample", "http://x");
            assert!(r.failed(&Status::new(code, "x")).is_ok(), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unimplemented,
        ] {
            let mut r = Retry::new("Sample", "http://replay:1");
            let err = r.failed(&Status::new(code, "no")).unwrap_err().to_string();
            assert!(
                err.contains("http://replay:1") && err.contains("Sample"),
                "{err}"
            );
        }
        let mut r = Retry::new("Sample", "http://x");
        let err = r
            .failed(&Status::unauthenticated("bad token"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("APEX_TOKEN"), "{err}");
    }
}
