//! The DQN update: double-DQN targets from a target network, Huber loss
//! weighted by importance weights, Adam or centred RMSProp, gradient-norm
//! clipping.

use std::path::Path;

use apex_model::{QNet, QNetConfig};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Reduction};

use crate::batch::Batch;
use crate::rmsprop::{clip_grad_norm, zero_grad, TfRmsProp};

/// Optimization settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DqnConfig {
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub max_grad_norm: f64,
    /// Updates between copies of the online network into the target network.
    pub target_update_every: u64,
    /// Double-DQN targets (the online network picks the next action, the
    /// target network values it); off: the target network's max, as in the
    /// Nature DQN.
    pub double: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Adam {
        eps: f64,
    },
    /// Centred RMSProp without momentum (the Nature DQN and Ape-X papers).
    CentredRmsProp {
        decay: f64,
        eps: f64,
    },
}

/// The optimizer in use: libtorch's Adam, or TensorFlow's centred RMSProp
/// (libtorch's puts epsilon elsewhere; see `rmsprop.rs`).
enum Stepper {
    Torch(nn::Optimizer),
    TfRmsProp(TfRmsProp),
}

impl Optimizer {
    fn build(self, vs: &nn::VarStore, lr: f64) -> Result<Stepper, tch::TchError> {
        Ok(match self {
            Optimizer::Adam { eps } => Stepper::Torch(nn::Adam::default().eps(eps).build(vs, lr)?),
            Optimizer::CentredRmsProp { decay, eps } => {
                Stepper::TfRmsProp(TfRmsProp::new(vs.trainable_variables(), lr, decay, eps))
            }
        })
    }
}

pub struct Dqn {
    online_vs: nn::VarStore,
    online: QNet,
    target_vs: nn::VarStore,
    target: QNet,
    optimizer: Stepper,
    /// The online network's trainable variables (shared storage).
    vars: Vec<tch::Tensor>,
    config: DqnConfig,
    updates: u64,
}

/// What one update measured.
#[derive(Debug, Clone)]
pub struct UpdateStats {
    pub loss: f64,
    pub mean_q: f64,
    /// |target - Q| per transition: the new priorities.
    pub td_abs: Vec<f32>,
}

impl Dqn {
    pub fn new(net: QNetConfig, config: DqnConfig, device: Device) -> Result<Self, tch::TchError> {
        let online_vs = nn::VarStore::new(device);
        let online = QNet::new(&online_vs.root(), net);
        let mut target_vs = nn::VarStore::new(device);
        let target = QNet::new(&target_vs.root(), net);
        target_vs.copy(&online_vs)?;
        target_vs.freeze();
        let optimizer = config.optimizer.build(&online_vs, config.learning_rate)?;
        let vars = online_vs.trainable_variables();
        Ok(Dqn {
            vars,
            online_vs,
            online,
            target_vs,
            target,
            optimizer,
            config,
            updates: 0,
        })
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn device(&self) -> Device {
        self.online_vs.device()
    }

    pub fn update(&mut self, b: &Batch) -> UpdateStats {
        let q_all = self.online.q_values(&b.obs);
        let q = q_all
            .gather(1, &b.actions.unsqueeze(1), false)
            .squeeze_dim(1);
        let target = tch::no_grad(|| {
            let next_q = self.target.q_values(&b.next_obs);
            let next = if self.config.double {
                let best = self.online.q_values(&b.next_obs).argmax(1, true);
                next_q.gather(1, &best, false).squeeze_dim(1)
            } else {
                next_q.max_dim(1, false).0
            };
            &b.rewards + &b.discounts * next
        });
        let per_item = q.huber_loss(&target, Reduction::None, 1.0);
        let loss = (&b.weights * per_item).mean(Kind::Float);
        zero_grad(&mut self.vars);
        loss.backward();
        clip_grad_norm(&self.vars, self.config.max_grad_norm);
        match &mut self.optimizer {
            Stepper::Torch(o) => o.step(),
            Stepper::TfRmsProp(o) => o.step(),
        }
        self.updates += 1;
        if self.updates.is_multiple_of(self.config.target_update_every) {
            self.sync_target();
        }
        let td_abs = Vec::<f32>::try_from((&target - &q).abs().detach().to_device(Device::Cpu))
            .expect("td errors are f32");
        UpdateStats {
            loss: loss.double_value(&[]),
            mean_q: q.mean(Kind::Float).double_value(&[]),
            td_abs,
        }
    }

    fn sync_target(&mut self) {
        self.target_vs
            .copy(&self.online_vs)
            .expect("online and target networks have the same variables");
    }

    pub fn weights(&self) -> Result<Vec<u8>, tch::TchError> {
        apex_model::save_weights(&self.online_vs)
    }

    /// Writes the online weights to `path` atomically (a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<(), tch::TchError> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.weights()?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Loads weights into both networks (a resumed run).
    pub fn load(&mut self, path: &Path) -> Result<(), tch::TchError> {
        let bytes = std::fs::read(path)?;
        apex_model::load_weights(&mut self.online_vs, &bytes)?;
        self.sync_target();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apex_model::Arch;
    use tch::Tensor;

    /// libtorch's generator is global: tests that seed it take turns, so
    /// each starts from its own seed whatever runs beside it.
    static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn seeded(seed: i64) -> std::sync::MutexGuard<'static, ()> {
        let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
        tch::manual_seed(seed);
        guard
    }

    fn config() -> DqnConfig {
        DqnConfig {
            optimizer: Optimizer::Adam { eps: 1e-8 },
            learning_rate: 1e-2,
            max_grad_norm: 10.0,
            target_update_every: 1,
            double: true,
        }
    }

    fn batch(reward: f32, discount: f32) -> Batch {
        let obs = Tensor::from_slice(&[0u8, 255, 0, 255])
            .view([1, 1, 2, 2])
            .repeat([4, 1, 1, 1]);
        Batch {
            ids: vec![0, 1, 2, 3],
            next_obs: obs.copy(),
            obs,
            actions: Tensor::from_slice(&[1i64, 1, 1, 1]),
            rewards: Tensor::from_slice(&[reward; 4]),
            discounts: Tensor::from_slice(&[discount; 4]),
            weights: Tensor::from_slice(&[1f32; 4]),
        }
    }

    #[test]
    fn q_converges_to_the_reward_at_terminals() {
        let _rng = seeded(1);
        let net = QNetConfig::new(Arch::Mlp { hidden: 16 }, &[1, 2, 2], 2, true);
        let mut dqn = Dqn::new(net, config(), Device::Cpu).unwrap();
        let b = batch(0.75, 0.0);
        let first = dqn.update(&b);
        for _ in 0..300 {
            dqn.update(&b);
        }
        let last = dqn.update(&b);
        assert!(
            last.loss < first.loss / 100.0,
            "loss {} -> {}",
            first.loss,
            last.loss
        );
        assert!((last.mean_q - 0.75).abs() < 0.01, "Q = {}", last.mean_q);
        assert!(last.td_abs.iter().all(|&t| t < 0.02), "{:?}", last.td_abs);
        assert_eq!(dqn.updates(), 302);
    }

    #[test]
    fn a_self_loop_bootstraps_to_the_discounted_sum() {
        // next_obs == obs with discount 0.5 and reward 1: Q = 1 / (1 - 0.5) = 2.
        let _rng = seeded(2);
        let net = QNetConfig::new(Arch::Mlp { hidden: 16 }, &[1, 2, 2], 2, false);
        let mut dqn = Dqn::new(net, config(), Device::Cpu).unwrap();
        let b = batch(1.0, 0.5);
        let mut last = dqn.update(&b);
        for _ in 0..1500 {
            last = dqn.update(&b);
        }
        assert!((last.mean_q - 2.0).abs() < 0.1, "Q = {}", last.mean_q);
    }

    #[test]
    fn centred_rmsprop_and_single_dqn_targets_converge_too() {
        let _rng = seeded(3);
        let net = QNetConfig::new(Arch::Mlp { hidden: 16 }, &[1, 2, 2], 2, false);
        let config = DqnConfig {
            optimizer: Optimizer::CentredRmsProp {
                decay: 0.95,
                eps: 1e-5,
            },
            learning_rate: 1e-3,
            double: false,
            ..config()
        };
        let mut dqn = Dqn::new(net, config, Device::Cpu).unwrap();
        let b = batch(1.0, 0.5);
        let mut last = dqn.update(&b);
        for _ in 0..2000 {
            last = dqn.update(&b);
        }
        assert!((last.mean_q - 2.0).abs() < 0.1, "Q = {}", last.mean_q);
    }

    #[test]
    fn checkpoints_round_trip() {
        let _rng = seeded(4);
        let dir = std::env::temp_dir().join(format!("apex-dqn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let net = QNetConfig::new(Arch::Mlp { hidden: 8 }, &[1, 2, 2], 2, true);
        let mut a = Dqn::new(net, config(), Device::Cpu).unwrap();
        a.update(&batch(1.0, 0.0));
        let path = dir.join("model.ot");
        a.save(&path).unwrap();
        let mut b = Dqn::new(net, config(), Device::Cpu).unwrap();
        b.load(&path).unwrap();
        let obs = batch(0.0, 0.0).obs;
        assert!(a.online.q_values(&obs).equal(&b.online.q_values(&obs)));
        assert!(
            b.target.q_values(&obs).equal(&b.online.q_values(&obs)),
            "a resumed target starts equal"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
