//! Acting with a copy of the Q-network: batched greedy actions and
//! epsilon-greedy choices, for the actors and the evaluator alike.

use rand::Rng;
use tch::{nn, Device, Tensor};

use crate::{QNet, QNetConfig};

/// A CPU copy of the Q-network at one published version, for acting.
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
        crate::load_weights(&mut p.vs, weights)?;
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
        let config = QNetConfig::new(crate::Arch::Mlp { hidden: 8 }, &[1, 2, 2], 3, false);
        let p = PolicyNet::new(config);
        let actions = p.greedy(&[0u8; 20], 5);
        assert_eq!(actions.len(), 5);
        assert!(actions.iter().all(|&a| a < 3));
    }
}
