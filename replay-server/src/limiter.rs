//! Rate limiting as Reverb does it: sampling waits for a minimum size, and
//! with a samples-per-insert ratio each side waits when it runs too far
//! ahead of the other. With ratio r and tolerance e, let
//! d = r * inserted - sampled (transitions). Inserts wait while
//! d > r * min_size + e; sampling waits while the replay holds fewer than
//! min_size or d < r * min_size - e. Conditions are checked before each
//! batch, so a batch may overshoot the band by its own size. Counters are
//! atomics: checking never takes a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::metrics as m;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sampling waits until the replay holds this many transitions.
    pub min_size: usize,
    /// Sampled transitions per inserted transition the limiter keeps to
    /// (`None`: sampling and inserting never wait for each other).
    pub samples_per_insert: Option<f64>,
    /// How far, in sampled transitions, the two may drift apart.
    pub error_buffer: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Insert,
    Sample,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Insert => "insert",
            Side::Sample => "sample",
        }
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The side may go.
    Go,
    TimedOut,
    /// The replay is shutting down: nobody will make room any more.
    Closed,
}

pub struct RateLimiter {
    limit: RateLimit,
    closed: AtomicBool,
    inserted: AtomicU64,
    sampled: AtomicU64,
    insert_ready: Notify,
    sample_ready: Notify,
}

impl RateLimiter {
    /// `inserted` and `sampled` carry on from a restored checkpoint.
    pub fn new(limit: RateLimit, inserted: u64, sampled: u64) -> Self {
        for side in [Side::Insert, Side::Sample] {
            // Present from the start, so dashboards show 0 rather than nothing.
            metrics::gauge!(m::LIMITER_WAIT_TOTAL, "side" => side.label()).set(0.0);
            metrics::gauge!(m::LIMITER_WAITING, "side" => side.label()).set(0.0);
        }
        RateLimiter {
            limit,
            closed: AtomicBool::new(false),
            inserted: AtomicU64::new(inserted),
            sampled: AtomicU64::new(sampled),
            insert_ready: Notify::new(),
            sample_ready: Notify::new(),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    fn drift(&self, ratio: f64) -> f64 {
        ratio * self.inserted.load(Ordering::Relaxed) as f64
            - self.sampled.load(Ordering::Relaxed) as f64
    }

    pub fn can_insert(&self) -> bool {
        match self.limit.samples_per_insert {
            None => true,
            Some(r) => self.drift(r) <= r * self.limit.min_size as f64 + self.limit.error_buffer,
        }
    }

    pub fn can_sample(&self, size: usize) -> bool {
        size >= self.limit.min_size
            && match self.limit.samples_per_insert {
                None => true,
                Some(r) => {
                    self.drift(r) >= r * self.limit.min_size as f64 - self.limit.error_buffer
                }
            }
    }

    pub fn inserted(&self, n: usize) {
        self.inserted.fetch_add(n as u64, Ordering::Relaxed);
        self.sample_ready.notify_waiters();
    }

    pub fn sampled(&self, n: usize) {
        self.sampled.fetch_add(n as u64, Ordering::Relaxed);
        self.insert_ready.notify_waiters();
    }

    /// Ends every wait, now and later, with [`Waited::Closed`]: at shutdown
    /// the other side has stopped, so a held call would wait forever (and
    /// with it the client that awaits its answer).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.insert_ready.notify_waiters();
        self.sample_ready.notify_waiters();
    }

    /// Waits until `side` may go, at most `timeout`. `size` reads the
    /// replay's current size.
    pub async fn wait(&self, side: Side, size: impl Fn() -> usize, timeout: Duration) -> Waited {
        let ready = || {
            if self.closed.load(Ordering::SeqCst) {
                Some(Waited::Closed)
            } else {
                let go = match side {
                    Side::Insert => self.can_insert(),
                    Side::Sample => self.can_sample(size()),
                };
                go.then_some(Waited::Go)
            }
        };
        if let Some(w) = ready() {
            return w;
        }
        let notify = match side {
            Side::Insert => &self.insert_ready,
            Side::Sample => &self.sample_ready,
        };
        let waiting = metrics::gauge!(m::LIMITER_WAITING, "side" => side.label());
        waiting.increment(1.0);
        let start = Instant::now();
        let went = tokio::time::timeout(timeout, async {
            loop {
                let woken = notify.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                // Checked after registering, so a wake-up between the check
                // and the wait is not lost.
                if let Some(w) = ready() {
                    return w;
                }
                woken.await;
            }
        })
        .await
        .unwrap_or(Waited::TimedOut);
        waiting.decrement(1.0);
        let waited = start.elapsed().as_secs_f64();
        metrics::histogram!(m::LIMITER_WAIT, "side" => side.label()).record(waited);
        metrics::gauge!(m::LIMITER_WAIT_TOTAL, "side" => side.label()).increment(waited);
        went
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn limiter(ratio: Option<f64>) -> RateLimiter {
        RateLimiter::new(
            RateLimit {
                min_size: 100,
                samples_per_insert: ratio,
                error_buffer: 50.0,
            },
            0,
            0,
        )
    }

    #[test]
    fn without_a_ratio_only_the_minimum_size_holds_sampling_back() {
        let l = limiter(None);
        assert!(!l.can_sample(99));
        assert!(l.can_sample(100));
        l.inserted(1_000_000);
        assert!(l.can_insert());
    }

    #[test]
    fn the_ratio_keeps_both_sides_inside_the_band() {
        let l = limiter(Some(2.0));
        l.inserted(100);
        // d = 200: inserts may run ahead to d = 250, i.e. 25 more transitions.
        assert!(l.can_insert());
        l.inserted(25);
        assert!(l.can_insert());
        l.inserted(1);
        assert!(!l.can_insert(), "d = 252 > 250");
        assert!(l.can_sample(126));
        l.sampled(60); // d = 192
        assert!(l.can_insert());
        l.sampled(42); // d = 150, the band's floor
        assert!(l.can_sample(126));
        l.sampled(1);
        assert!(
            !l.can_sample(126),
            "d = 149 < 150: sampling waits for inserts"
        );
    }

    #[tokio::test]
    async fn a_waiting_sampler_goes_when_inserts_arrive_and_times_out_otherwise() {
        let l = Arc::new(limiter(Some(1.0)));
        l.inserted(100);
        l.sampled(160); // d = -60, below the floor r * min_size - e = 50
        let t = Duration::from_millis(50);
        assert_eq!(l.wait(Side::Sample, || 100, t).await, Waited::TimedOut);
        let waiter = {
            let l = l.clone();
            tokio::spawn(async move { l.wait(Side::Sample, || 200, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        l.inserted(110); // d = 50: allowed
        assert_eq!(waiter.await.unwrap(), Waited::Go);
    }

    #[tokio::test]
    async fn closing_ends_waits_on_both_sides() {
        let l = Arc::new(limiter(Some(1.0)));
        l.inserted(1_000); // inserts are far ahead: they wait; sampling is below min size
        let waiters: Vec<_> = [(Side::Insert, 0), (Side::Sample, 10)]
            .into_iter()
            .map(|(side, size)| {
                let l = l.clone();
                tokio::spawn(
                    async move { l.wait(side, move || size, Duration::from_secs(60)).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        l.close();
        for w in waiters {
            let got = tokio::time::timeout(Duration::from_secs(1), w).await;
            assert_eq!(got.expect("the wait ended").unwrap(), Waited::Closed);
        }
        assert_eq!(
            l.wait(Side::Insert, || 0, Duration::from_secs(60)).await,
            Waited::Closed
        );
    }
}
