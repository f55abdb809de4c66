//! The actor's copy of the Q-network and its epsilon-greedy choices.

use apex_model::{QNet, QNetConfig};
use rand::Rng;
use tch::{nn, Device, Tensor};

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

pub struct PolicyNet {
    vs: nn::VarStore,
    net: QNet,
    shape: Vec<i64>,
    pub version: u64,
}

impl PolicyNet {
    pub fn new(config: QNetConfig) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = QNet::new(&vs.root(), config);
        PolicyNet {
            vs,
            net,
            shape: config.obs_shape.to_vec(),
            version: 0,
        }
    }

    /// A network holding `weights` as `version`.
    pub fn from_weights(
        config: QNetConfig,
        weights: &[u8],
        version: u64,
    ) -> Result<Self, tch::TchError> {
        let mut p = PolicyNet::new(config);
        apex_model::load_weights(&mut p.vs, weights)?;
        p.version = version;
        Ok(p)
    }

    /// Q-values of `n` observations concatenated in `obs`, one row of
    /// `actions` values per observation: one forward pass.
    pub fn q_values(&self, obs: &[u8], n: usize) -> Vec<f32> {
        let mut shape = vec![n as i64];
        shape.extend(&self.shape);
        let q = tch::no_grad(|| {
            self.net
                .q_values(&Tensor::from_slice(obs).view(shape.as_slice()))
        });
        Vec::<f32>::try_from(q.flatten(0, -1)).expect("Q-values are f32")
    }

    /// Greedy actions for `n` observations concatenated in `obs`.
    pub fn greedy(&self, obs: &[u8], n: usize) -> Vec<usize> {
        let q = self.q_values(obs, n);
        q.chunks_exact(q.len() / n).map(argmax).collect()
    }
}

/// Index of the largest value (the first, on ties).
pub fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
}

/// Random with probability `eps`, else `greedy`.
pub fn epsilon_greedy(greedy: usize, eps: f64, actions: usize, rng: &mut impl Rng) -> usize {
    if rng.gen::<f64>() < eps {
        rng.gen_range(0..actions)
    } else {
        greedy
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

    #[test]
    fn epsilon_greedy_explores_at_its_rate() {
        let mut rng = rand::thread_rng();
        let n = 20_000;
        let random = (0..n)
            .filter(|_| epsilon_greedy(0, 0.3, 4, &mut rng) != 0)
            .count();
        // Non-greedy picks happen with probability 0.3 * 3/4 = 0.225.
        let rate = random as f64 / n as f64;
        assert!((rate - 0.225).abs() < 0.015, "{rate}");
    }

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[0.0, 2.0, 1.0, 2.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn greedy_actions_come_from_one_batched_pass() {
        let config = QNetConfig::new(apex_model::Arch::Mlp { hidden: 8 }, &[1, 2, 2], 3, false);
        let p = PolicyNet::new(config);
        let actions = p.greedy(&[0u8; 20], 5);
        assert_eq!(actions.len(), 5);
        assert!(actions.iter().all(|&a| a < 3));
    }
}
