//! The range of priorities the replay accepts, and the one rule that
//! brings an |TD error| into it. Shared by the replay server (which refuses
//! what is outside), the learner and the actors (which clamp into it: a
//! briefly huge TD error is information, not a fault worth a refused call).

/// The largest priority an actor or the learner may give: far above any
/// |TD error| of clipped rewards, and low enough that one item cannot take
/// over the sampling mass (or the largest priority new items receive).
pub const MAX_PRIORITY: f32 = 1.0e6;

/// A priority the replay accepts: finite, in [0, MAX_PRIORITY].
pub fn valid_priority(p: f32) -> bool {
    (0.0..=MAX_PRIORITY).contains(&p)
}

/// `td_abs` as a priority the replay accepts: above the range (or infinite)
/// becomes [`MAX_PRIORITY`], below it 0. NaN also becomes the maximum, so
/// that the item is sampled again soon rather than never.
pub fn clamp_priority(td_abs: f32) -> f32 {
    if td_abs.is_nan() {
        MAX_PRIORITY
    } else {
        td_abs.clamp(0.0, MAX_PRIORITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_is_closed_and_finite() {
        assert!(valid_priority(0.0) && valid_priority(MAX_PRIORITY));
        for p in [f32::NAN, f32::INFINITY, -1.0, f32::MAX, MAX_PRIORITY * 1.01] {
            assert!(!valid_priority(p), "{p}");
        }
    }

    #[test]
    fn clamping_lands_every_value_in_the_range() {
        for p in [
            0.0,
            0.5,
            MAX_PRIORITY,
            MAX_PRIORITY * 1.01,
            f32::MAX,
            f32::INFINITY,
            f32::NAN,
            -1.0,
            f32::NEG_INFINITY,
        ] {
            assert!(
                valid_priority(clamp_priority(p)),
                "{p} -> {}",
                clamp_priority(p)
            );
        }
        assert_eq!(clamp_priority(0.5), 0.5);
        assert_eq!(clamp_priority(3.0e7), MAX_PRIORITY);
        assert_eq!(clamp_priority(f32::NAN), MAX_PRIORITY);
        assert_eq!(clamp_priority(-2.0), 0.0);
    }
}
