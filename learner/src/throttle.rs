//! Log lines for events that can repeat many times a second (every batch
//! bad, every update non-finite): the first at once, then one per period.

use std::time::{Duration, Instant};

pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle { every, last: None }
    }

    /// Whether to log now.
    pub fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|t| now - t < self.every) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_passes_then_one_per_period() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        assert!(t.ready());
        assert!(!t.ready());
        let mut t = Throttle::new(Duration::ZERO);
        assert!(t.ready() && t.ready());
    }
}
