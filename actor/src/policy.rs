//! The actor's exploration: Ape-X's ladder of epsilons over its
//! environments. Acting with the network (`PolicyNet`, epsilon-greedy) is
//! `apex_model::policy`, shared with the evaluator.

/// Ape-X's exploration ladder: environment `i` of `n` explores with
/// probability base^(1 + alpha i / (n - 1)); the paper uses base 0.4, alpha 7.
pub fn epsilon(i: usize, n: usize, base: f64, alpha: f64) -> f64 {
    let exponent = if n <= 1 {
        1.0
    } else {
        1.0 + alpha * i as f64 / (n - 1) as f64
    };
    base.powf(exponent)
}

/// How much an environment explores: its rung on the ladder, reached
/// linearly from `start` over `decay_steps` of its own steps (0: from the
/// first step). Ape-X keeps each rung fixed; the Nature DQN is one
/// environment decaying from 1.0 to 0.1 (CleanRL: 0.01).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exploration {
    pub base: f64,
    pub alpha: f64,
    pub start: f64,
    pub decay_steps: u64,
}

impl Exploration {
    /// The Ape-X paper's ladder, eps_i = 0.4^(1 + 7 i/(N-1)), fixed from the first step.
    pub const APE_X: Exploration = Exploration {
        base: 0.4,
        alpha: 7.0,
        start: 1.0,
        decay_steps: 0,
    };

    /// Epsilon of environment `i` of `n` at its `step`-th step.
    pub fn epsilon(&self, i: usize, n: usize, step: u64) -> f64 {
        let rung = epsilon(i, n, self.base, self.alpha);
        if step >= self.decay_steps {
            return rung;
        }
        let done = step as f64 / self.decay_steps as f64;
        self.start + (rung - self.start) * done
    }

    /// Whether epsilon still changes after `step`.
    pub fn decaying(&self, step: u64) -> bool {
        step < self.decay_steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_spans_0_4_to_0_4_pow_8() {
        assert!((epsilon(0, 8, 0.4, 7.0) - 0.4).abs() < 1e-12);
        assert!((epsilon(7, 8, 0.4, 7.0) - 0.4f64.powi(8)).abs() < 1e-12);
        assert!((epsilon(0, 1, 0.4, 7.0) - 0.4).abs() < 1e-12);
        assert!((epsilon(3, 4, 0.5, 2.0) - 0.125).abs() < 1e-12);
        let ladder: Vec<f64> = (0..8).map(|i| epsilon(i, 8, 0.4, 7.0)).collect();
        assert!(ladder.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn exploration_decays_linearly_to_its_rung() {
        let e = Exploration {
            base: 0.01,
            alpha: 7.0,
            start: 1.0,
            decay_steps: 100,
        };
        assert_eq!(e.epsilon(0, 1, 0), 1.0);
        assert!((e.epsilon(0, 1, 50) - 0.505).abs() < 1e-12);
        assert_eq!(e.epsilon(0, 1, 100), 0.01);
        assert_eq!(e.epsilon(0, 1, 10_000), 0.01);
        assert!(e.decaying(99) && !e.decaying(100));
        let fixed = Exploration {
            decay_steps: 0,
            ..e
        };
        assert_eq!(fixed.epsilon(0, 1, 0), 0.01);
    }
}
