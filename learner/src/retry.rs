//! Calls to the replay server that outlive its restarts: which failures are
//! worth retrying, how long to wait between tries, and one log line when an
//! outage starts and one when it ends (not one per try).

use std::time::{Duration, Instant};

use apex_proto::transport::Backoff;
use tonic::{Code, Status};

use crate::LearnerError;

const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// Codes that no retry can fix: the learner is pointed at the wrong server,
/// lacks credentials, or asks for something the server refuses outright.
pub fn is_configuration_error(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unimplemented
    )
}

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

/// Retry state of one kind of call to one server.
pub struct Retry {
    call: &'static str,
    addr: String,
    backoff: Backoff,
    /// When the current run of failures began, and how many there were.
    failing: Option<(Instant, u32)>,
}

impl Retry {
    pub fn new(call: &'static str, addr: &str) -> Self {
        Retry {
            call,
            addr: addr.to_owned(),
            backoff: Backoff::default(),
            failing: None,
        }
    }

    /// After a failed call: how long to wait before the next try, or the
    /// error to stop with when no retry can help.
    pub fn failed(&mut self, status: &Status) -> Result<Duration, LearnerError> {
        apex_telemetry::grpc_error(self.call, status);
        if is_configuration_error(status.code()) {
            return Err(LearnerError::Replay {
                addr: self.addr.clone(),
                call: self.call,
                status: status.clone(),
                advice: advice(status.code()),
            });
        }
        // The server answered and holds sampling back (too few transitions,
        // or the rate limiter): it already waited its sample timeout, so ask
        // again soon. No outage, and routine under a rate limit: debug only.
        if status.code() == Code::FailedPrecondition {
            if self.failing.is_none() {
                tracing::debug!(
                    call = self.call,
                    reason = status.message(),
                    "waiting for the replay server"
                );
                self.failing = Some((Instant::now(), 0));
            }
            return Ok(FIRST_PAUSE);
        }
        let (since, tries) = self.failing.get_or_insert((Instant::now(), 0));
        if *tries == 0 {
            tracing::warn!(
                addr = %self.addr,
                call = self.call,
                code = ?status.code(),
                message = status.message(),
                "replay server unreachable or failing: retrying with backoff"
            );
            *since = Instant::now();
        }
        *tries += 1;
        Ok(self.backoff.next_wait())
    }

    /// After a successful call: ends the outage, if any.
    pub fn succeeded(&mut self) {
        if let Some((since, tries)) = self.failing.take() {
            if tries > 0 {
                tracing::info!(
                    addr = %self.addr,
                    call = self.call,
                    after_s = since.elapsed().as_secs_f64(),
                    failures = tries,
                    "replay server back"
                );
            }
        }
        self.backoff.reset();
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
        assert!(r.failing.is_some());
        r.succeeded();
        assert!(r.failing.is_none());
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
