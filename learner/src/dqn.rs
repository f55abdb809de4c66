//! The DQN update: double-DQN targets from a target network, Huber loss
//! weighted by importance weights, Adam or centred RMSProp, gradient-norm
//! clipping; and the whole training state as named tensors for checkpoints.

use std::collections::HashMap;

use apex_model::{Arch, QNet, QNetConfig};
use tch::nn;
use tch::{Device, Tensor};

use crate::batch_workers::BatchWorkers;
use crate::io::batch::Batch;
use crate::optim::adam::Adam;
use crate::optim::fused;
use crate::optim::grad::{scale_to_norm, total_norm};
use crate::optim::rmsprop::TfRmsProp;
use crate::persist::state::{self, NamedTensors, StateError};
use crate::td_loss::{slice_loss, Nets, Scaled, Slice, SliceLoss, TdRule};

/// Optimization settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DqnConfig {
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    /// None: the learning rate stays at `learning_rate`.
    pub learning_rate_decay: Option<LrDecay>,
    pub max_grad_norm: f64,
    /// Updates between copies of the online network into the target network.
    pub target_update_every: u64,
    /// Double-DQN targets (the online network picks the next action, the
    /// target network values it); off: the target network's max, as in the
    /// Nature DQN.
    pub double: bool,
    /// How a TD error becomes a loss.
    pub loss: TdLoss,
    /// Munchausen targets; none: the plain (or double) bootstrap.
    pub munchausen: Option<Munchausen>,
}

/// Munchausen-DQN's targets (Vieillard, Pietquin and Geist, 2020): the
/// reward gains `alpha` times the target policy's scaled log-probability of
/// the action taken, clipped to [`clip_min`, 0], and the bootstrap is the
/// soft value of the next observation, `tau * logsumexp(Q / tau)`, where
/// the policy is `softmax(Q / tau)` of the target network. It replaces the
/// double-DQN bootstrap (`double` is then unused). With n-step returns the
/// bonus goes to the first action, the one the online network is trained on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Munchausen {
    /// The bonus's scale (the paper: 0.9).
    pub alpha: f64,
    /// The entropy temperature (the paper: 0.03).
    pub tau: f64,
    /// The bonus's floor (the paper: -1).
    pub clip_min: f64,
}

/// The loss of one TD error `d`, weighted by its importance weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdLoss {
    /// Huber's with threshold 1: `d^2 / 2` within 1, `|d| - 1/2` beyond
    /// (Nature DQN, Ape-X): large errors pull no harder than 1.
    Huber,
    /// `d^2 / 2` everywhere: Huber's without the threshold. With Adam it
    /// learned far faster in Dopamine's revisit of Rainbow (Obando-Ceron
    /// and Castro, 2021): Adam's scaling already bounds the step.
    Mse,
}

/// A learning rate that falls linearly from the start's to `end` over the
/// first `over_updates` updates, then holds: a large rate learns fast early
/// and keeps the weights moving by as much late in training, when the
/// targets change less (RESULTS.md, "screening the recipe").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrDecay {
    pub end: f64,
    pub over_updates: u64,
}

/// Settings of the update that a quantile head cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadMismatch {
    #[error(
        "--munchausen on needs the expected-value head: set --quantiles 0, or --munchausen off"
    )]
    MunchausenWithQuantiles,
    #[error("--loss mse needs the expected-value head (a quantile head trains on QR-DQN's quantile Huber loss): set --quantiles 0, or --loss huber")]
    SquaredLossWithQuantiles,
}

impl DqnConfig {
    /// Whether these settings fit `net`'s head: Munchausen's targets and
    /// the squared loss are written for expected values.
    pub fn check_head(&self, net: &QNetConfig) -> Result<(), HeadMismatch> {
        match (net.quantiles, self.munchausen, self.loss) {
            (None, _, _) => Ok(()),
            (Some(_), Some(_), _) => Err(HeadMismatch::MunchausenWithQuantiles),
            (Some(_), None, TdLoss::Mse) => Err(HeadMismatch::SquaredLossWithQuantiles),
            (Some(_), None, TdLoss::Huber) => Ok(()),
        }
    }

    /// What the TD targets and the loss are made of.
    pub(crate) fn td_rule(&self) -> TdRule {
        TdRule {
            double: self.double,
            loss: self.loss,
            munchausen: self.munchausen,
        }
    }

    /// The learning rate of the update that follows `updates` updates.
    pub fn learning_rate_at(&self, updates: u64) -> f64 {
        match self.learning_rate_decay {
            None => self.learning_rate,
            Some(d) => {
                let done = (updates as f64 / d.over_updates.max(1) as f64).min(1.0);
                self.learning_rate + (d.end - self.learning_rate) * done
            }
        }
    }
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

/// The optimizer in use; both are implemented here so that their state can
/// be checkpointed (see `adam.rs` and `rmsprop.rs`).
enum Stepper {
    Adam(Adam),
    TfRmsProp(TfRmsProp),
}

impl Optimizer {
    fn build(self, vars: Vec<Tensor>, lr: f64, threads: usize) -> Stepper {
        match self {
            Optimizer::Adam { eps } => Stepper::Adam(Adam::new(vars, lr, eps, threads)),
            Optimizer::CentredRmsProp { decay, eps } => {
                Stepper::TfRmsProp(TfRmsProp::new(vars, lr, decay, eps, threads))
            }
        }
    }

    /// A short name, as checkpoints record it.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Adam { .. } => "adam",
            Optimizer::CentredRmsProp { .. } => "centred-rmsprop",
        }
    }
}

/// An update that was not applied: its loss or gradient was not finite.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("loss {loss} or gradient norm {grad_norm} is not finite: the update was skipped")]
pub struct NonFinite {
    pub loss: f64,
    pub grad_norm: f64,
}

/// A saved training state to load into a [`Dqn`]; see [`Dqn::restore`].
pub struct Saved<'a> {
    pub online: &'a HashMap<String, Tensor>,
    /// None: the target starts as a copy of the online network.
    pub target: Option<&'a HashMap<String, Tensor>>,
    /// None: the optimizer starts afresh.
    pub optimizer: Option<&'a HashMap<String, Tensor>>,
    pub updates: u64,
}

pub struct Dqn {
    net: QNetConfig,
    online_vs: nn::VarStore,
    online: QNet,
    target_vs: nn::VarStore,
    target: QNet,
    optimizer: Stepper,
    /// The online network's variables (shared storage), in name order so
    /// that optimizer state lines up across processes.
    vars: Vec<Tensor>,
    config: DqnConfig,
    updates: u64,
    /// The batch's observations as floats, when this thread takes it whole.
    scaled: Scaled,
    /// Threads that take the batch in slices side by side (see
    /// [`Dqn::with_batch_workers`]); none: this thread takes it whole.
    workers: Option<BatchWorkers>,
    /// The learner's libtorch threads, as given at start: what the whole
    /// batch, adding up the slices' gradients and the optimizer's step run
    /// on, and what the slices share.
    threads: usize,
    /// The last update's gradients, clipped, one per variable of `vars`.
    grads: Vec<Tensor>,
}

/// What one update measured.
#[derive(Debug, Clone)]
pub struct UpdateStats {
    pub loss: f64,
    pub mean_q: f64,
    /// |target - Q| per transition: the new priorities.
    pub td_abs: Vec<f32>,
}

/// Slices a batch is taken in side by side: on the CPU with a Nature
/// network and two or more of the learner's `threads`, two (each slice
/// on half of them); anything else whole, libtorch splitting
/// each operation. Two slices gained 6% (Zen 5 EPYC) and 11% (Intel
/// Xeon) in `apex local`, though on that Xeon the learner's bench alone
/// ran 9% slower with them (BENCHMARKS.md); more slices were not measured,
/// and each brings a whole gradient to add.
pub fn default_batch_slices(device: Device, arch: Arch, threads: usize) -> usize {
    match (device, arch) {
        (Device::Cpu, Arch::Nature) if threads > 1 => 2,
        _ => 1,
    }
}

impl Dqn {
    /// A learner on the calling thread's libtorch threads (read once,
    /// here), taking batches in [`default_batch_slices`] slices.
    pub fn new(net: QNetConfig, config: DqnConfig, device: Device) -> Result<Self, tch::TchError> {
        let threads = apex_model::threads::torch_threads_here();
        let slices = default_batch_slices(device, net.arch, threads);
        Dqn::with_batch_workers(net, config, device, slices, threads)
    }

    /// A learner on `threads` libtorch threads that takes each batch in
    /// `slices` slices side by side, each on a thread of its own with an
    /// equal share of them (CPU only; on other devices, or with one
    /// slice, the calling thread takes batches whole). The slices'
    /// gradients add up to the whole batch's, which the step and the
    /// clipping then use on all `threads`.
    pub fn with_batch_workers(
        net: QNetConfig,
        config: DqnConfig,
        device: Device,
        slices: usize,
        threads: usize,
    ) -> Result<Self, tch::TchError> {
        let threads = threads.max(1);
        let online_vs = nn::VarStore::new(device);
        let online = QNet::new(&online_vs.root(), net);
        let mut target_vs = nn::VarStore::new(device);
        let target = QNet::new(&target_vs.root(), net);
        target_vs.copy(&online_vs)?;
        target_vs.freeze();
        let vars: Vec<Tensor> = sorted(&online_vs).into_iter().map(|(_, t)| t).collect();
        let optimizer = config
            .optimizer
            .build(shallow(&vars), config.learning_rate, threads);
        let workers = match device {
            Device::Cpu if slices > 1 => Some(
                BatchWorkers::start(
                    slices,
                    (threads / slices).max(1),
                    net,
                    config.td_rule(),
                    &sorted(&online_vs),
                    &sorted(&target_vs),
                )
                // A thread that cannot start: the system's own error.
                .map_err(tch::TchError::Io)?,
            ),
            _ => None,
        };
        Ok(Dqn {
            net,
            vars,
            online_vs,
            online,
            target_vs,
            target,
            optimizer,
            config,
            updates: 0,
            scaled: Scaled::new(),
            workers,
            threads,
            grads: Vec::new(),
        })
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn device(&self) -> Device {
        self.online_vs.device()
    }

    /// One gradient step on `b`; none when the loss or the gradient is not
    /// finite (a poisoned batch must not poison the weights). The host waits
    /// for the device once, for the figures it needs before stepping; the
    /// step itself is left queued (on CUDA) behind the next batch's work.
    pub fn update(&mut self, b: &Batch) -> Result<UpdateStats, NonFinite> {
        // The last update's gradients, freed first, so the allocator hands
        // their memory to the new ones.
        self.grads.clear();
        let slices = match &self.workers {
            Some(workers) => {
                // The workers hold the cores: this thread's own libtorch
                // operations (clipping) run inline, where threads of its
                // own would spin in OpenMP's wait beside the workers.
                if tch::get_num_threads() != 1 {
                    apex_model::threads::set_torch_threads_here(1);
                }
                workers.run(b)
            }
            None => {
                // Whichever thread calls trains on the learner's threads.
                if tch::get_num_threads() as usize != self.threads {
                    apex_model::threads::set_torch_threads_here(self.threads);
                }
                let nets = Nets {
                    online: &self.online,
                    target: &self.target,
                    vars: &self.vars,
                    rule: self.config.td_rule(),
                };
                vec![slice_loss(
                    &nets,
                    &Slice::of(b, 0, b.len() as i64),
                    &mut self.scaled,
                )]
            }
        };
        let (loss, q_sum, td_abs, norm) = self.add_up(slices);
        let figures = tch::no_grad(|| {
            let head = [loss, norm, q_sum / b.len() as f64];
            Tensor::cat(&[Tensor::stack(&head, 0), td_abs], 0).to_device(Device::Cpu)
        });
        let figures = Vec::<f32>::try_from(figures).expect("loss, norm and td errors are f32");
        let (loss_value, grad_norm, mean_q) = (
            f64::from(figures[0]),
            f64::from(figures[1]),
            f64::from(figures[2]),
        );
        if !loss_value.is_finite() || !grad_norm.is_finite() {
            self.grads.clear();
            return Err(NonFinite {
                loss: loss_value,
                grad_norm,
            });
        }
        scale_to_norm(&self.grads, grad_norm, self.config.max_grad_norm);
        let lr = self.config.learning_rate_at(self.updates);
        match &mut self.optimizer {
            Stepper::Adam(o) => {
                o.set_lr(lr);
                o.step_with(&self.grads)
            }
            Stepper::TfRmsProp(o) => {
                o.set_lr(lr);
                o.step_with(&self.grads)
            }
        }
        self.updates += 1;
        if self.updates.is_multiple_of(self.config.target_update_every) {
            self.sync_target();
        }
        Ok(UpdateStats {
            loss: loss_value,
            mean_q,
            td_abs: figures[3..].to_vec(),
        })
    }

    /// Sums the slices' losses into the batch's (into `self.grads` for the
    /// gradients); returns the loss, the sum of Q, the priorities and the
    /// gradients' joint norm, left on the device.
    fn add_up(&mut self, slices: Vec<SliceLoss>) -> (Tensor, Tensor, Tensor, Tensor) {
        let mut slices = slices.into_iter();
        let first = slices.next().expect("a batch has at least one row");
        let (mut loss, mut q_sum, mut td_abs) = (first.loss, first.q_sum, vec![first.td_abs]);
        self.grads = first.grads;
        let mut others = Vec::new();
        for s in slices {
            loss += s.loss;
            q_sum += s.q_sum;
            td_abs.push(s.td_abs);
            others.push(s.grads);
        }
        // In one pass on all threads (as dense host floats they
        // always are); libtorch's operations otherwise.
        let norm = match fused::add_and_norm(&self.grads, &others, self.threads) {
            Some(norm) => Tensor::from(norm as f32),
            None => tch::no_grad(|| {
                for o in &others {
                    for (sum, g) in self.grads.iter_mut().zip(o) {
                        if sum.defined() && g.defined() {
                            let _ = sum.g_add_(g);
                        } else if g.defined() {
                            *sum = g.shallow_clone();
                        }
                    }
                }
                total_norm(&self.grads)
            }),
        };
        (loss, q_sum, Tensor::cat(&td_abs, 0), norm)
    }

    fn sync_target(&mut self) {
        self.target_vs
            .copy(&self.online_vs)
            .expect("online and target networks have the same variables");
    }

    pub fn weights(&self) -> Result<Vec<u8>, tch::TchError> {
        apex_model::save_weights(&self.online_vs)
    }

    pub fn config(&self) -> &DqnConfig {
        &self.config
    }

    pub fn net(&self) -> QNetConfig {
        self.net
    }

    /// The gradients the last update stepped with (after clipping), by
    /// the online network's variable names; none before the first update
    /// or after one that took no step.
    pub fn gradients(&self) -> NamedTensors {
        sorted(&self.online_vs)
            .into_iter()
            .zip(&self.grads)
            .map(|((name, _), g)| (name, g.shallow_clone()))
            .collect()
    }

    /// The online network's variables by name, sorted.
    pub fn online_state(&self) -> NamedTensors {
        sorted(&self.online_vs)
    }

    /// The target network's variables (the online network's names).
    pub fn target_state(&self) -> NamedTensors {
        sorted(&self.target_vs)
    }

    /// The optimizer's running averages and step counts.
    pub fn optimizer_state(&self) -> NamedTensors {
        match &self.optimizer {
            Stepper::Adam(o) => o.state(),
            Stepper::TfRmsProp(o) => o.state(),
        }
    }

    /// Whether both networks' weights are all finite (fit to publish or save).
    pub fn is_finite(&self) -> bool {
        state::all_finite(&self.online_state()) && state::all_finite(&self.target_state())
    }

    /// Loads a saved state after checking that all of it fits this network
    /// and optimizer; on error nothing has changed.
    pub fn restore(&mut self, saved: Saved<'_>) -> Result<(), StateError> {
        state::check(&self.online_state(), saved.online)?;
        if let Some(target) = saved.target {
            state::check(&self.target_state(), target)?;
        }
        if let Some(optimizer) = saved.optimizer {
            state::check(&self.optimizer_state(), optimizer)?;
        }
        state::copy_into(&self.online_state(), saved.online)?;
        match saved.target {
            Some(target) => state::copy_into(&self.target_state(), target)?,
            None => self.sync_target(),
        }
        self.optimizer = self.config.optimizer.build(
            shallow(&self.vars),
            self.config.learning_rate,
            self.threads,
        );
        if let Some(optimizer) = saved.optimizer {
            match &mut self.optimizer {
                Stepper::Adam(o) => o.load_state(optimizer)?,
                Stepper::TfRmsProp(o) => o.load_state(optimizer)?,
            }
        }
        self.updates = saved.updates;
        Ok(())
    }
}

/// Handles on the same storage.
fn shallow(vars: &[Tensor]) -> Vec<Tensor> {
    vars.iter().map(Tensor::shallow_clone).collect()
}

pub(crate) fn sorted(vs: &nn::VarStore) -> NamedTensors {
    let mut named: NamedTensors = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::seeded;
    use apex_model::Arch;
    use tch::Kind;

    fn config() -> DqnConfig {
        DqnConfig {
            optimizer: Optimizer::Adam { eps: 1e-8 },
            learning_rate: 1e-2,
            learning_rate_decay: None,
            max_grad_norm: 10.0,
            target_update_every: 1,
            double: true,
            loss: TdLoss::Huber,
            munchausen: None,
        }
    }

    fn batch(reward: f32, discount: f32) -> Batch {
        crate::io::batch::tiny_batch([1; 4], reward, discount)
    }

    #[test]
    fn the_learning_rate_falls_linearly_then_holds() {
        let decaying = DqnConfig {
            learning_rate: 1e-3,
            learning_rate_decay: Some(LrDecay {
                end: 1e-4,
                over_updates: 100,
            }),
            ..config()
        };
        let at = |u| decaying.learning_rate_at(u);
        assert!((at(0) - 1e-3).abs() < 1e-12);
        assert!((at(50) - 5.5e-4).abs() < 1e-12);
        assert!((at(100) - 1e-4).abs() < 1e-12);
        assert!((at(10_000) - 1e-4).abs() < 1e-12);
        assert_eq!(config().learning_rate_at(10_000), 1e-2);
    }

    #[test]
    fn updates_step_with_the_scheduled_rate() {
        for optimizer in [
            Optimizer::Adam { eps: 1e-8 },
            Optimizer::CentredRmsProp {
                decay: 0.95,
                eps: 0.01,
            },
        ] {
            // Down to 0 after the first update: the second changes nothing.
            let config = DqnConfig {
                optimizer,
                learning_rate_decay: Some(LrDecay {
                    end: 0.0,
                    over_updates: 1,
                }),
                ..config()
            };
            let net = QNetConfig::new(Arch::Mlp { hidden: 16 }, &[1, 2, 2], 2, false);
            let mut dqn = Dqn::new(net, config, Device::Cpu).unwrap();
            let before = dqn.weights().unwrap();
            dqn.update(&batch(1.0, 0.9)).unwrap();
            let after_one = dqn.weights().unwrap();
            assert_ne!(
                before, after_one,
                "{optimizer:?}: the first update moves the weights"
            );
            dqn.update(&batch(1.0, 0.9)).unwrap();
            assert_eq!(
                after_one,
                dqn.weights().unwrap(),
                "{optimizer:?}: lr 0 moves nothing"
            );
        }
    }

    #[test]
    fn q_converges_to_the_reward_at_terminals() {
        let _rng = seeded(1);
        let net = QNetConfig::new(Arch::Mlp { hidden: 16 }, &[1, 2, 2], 2, true);
        let mut dqn = Dqn::new(net, config(), Device::Cpu).unwrap();
        let b = batch(0.75, 0.0);
        let first = dqn.update(&b).unwrap();
        for _ in 0..300 {
            dqn.update(&b).unwrap();
        }
        let last = dqn.update(&b).unwrap();
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
        let mut last = dqn.update(&b).unwrap();
        for _ in 0..1500 {
            last = dqn.update(&b).unwrap();
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
            learning_rate_decay: None,
            double: false,
            ..config()
        };
        let mut dqn = Dqn::new(net, config, Device::Cpu).unwrap();
        let b = batch(1.0, 0.5);
        let mut last = dqn.update(&b).unwrap();
        for _ in 0..2000 {
            last = dqn.update(&b).unwrap();
        }
        assert!((last.mean_q - 2.0).abs() < 0.1, "Q = {}", last.mean_q);
    }

    #[test]
    fn a_non_finite_loss_takes_no_step() {
        let _rng = seeded(4);
        let net = QNetConfig::new(Arch::Mlp { hidden: 8 }, &[1, 2, 2], 2, true);
        let mut dqn = Dqn::new(net, config(), Device::Cpu).unwrap();
        let before: Vec<Tensor> = dqn.online_state().iter().map(|(_, t)| t.copy()).collect();
        let err = dqn.update(&batch(f32::NAN, 0.0)).unwrap_err();
        assert!(err.loss.is_nan());
        assert_eq!(dqn.updates(), 0);
        for ((name, now), was) in dqn.online_state().iter().zip(&before) {
            assert!(now.equal(was), "{name} changed");
        }
        assert!(dqn.is_finite());
        assert!(dqn.update(&batch(1.0, 0.0)).is_ok());
        assert_eq!(dqn.updates(), 1);
    }

    /// The same updates on CUDA as on the CPU, from batches uploaded the
    /// way the prefetch task uploads them (pinned, without waiting).
    #[test]
    #[ignore = "needs a CUDA device"]
    fn updates_on_cuda_match_the_cpu() {
        assert!(
            tch::Cuda::is_available(),
            "this test needs a CUDA device: run it where nvidia-smi works"
        );
        let _rng = seeded(6);
        let net = QNetConfig::new(Arch::Nature, &[4, 84, 84], 4, true);
        for optimizer in [
            Optimizer::Adam { eps: 1.5e-4 },
            Optimizer::CentredRmsProp {
                decay: 0.95,
                eps: 1.5e-7,
            },
        ] {
            let config = DqnConfig {
                optimizer,
                learning_rate: 1e-4,
                learning_rate_decay: None,
                target_update_every: 3,
                ..config()
            };
            let mut cpu = Dqn::new(net, config, Device::Cpu).unwrap();
            let mut gpu = Dqn::new(net, config, Device::Cuda(0)).unwrap();
            let map = |t: NamedTensors| -> HashMap<String, Tensor> { t.into_iter().collect() };
            gpu.restore(Saved {
                online: &map(cpu.online_state()),
                target: Some(&map(cpu.target_state())),
                optimizer: None,
                updates: 0,
            })
            .unwrap();
            for step in 0..8 {
                let obs = Tensor::randint(256, [32, 4, 84, 84], (Kind::Uint8, Device::Cpu));
                let next_obs = Tensor::randint(256, [32, 4, 84, 84], (Kind::Uint8, Device::Cpu));
                let actions = Tensor::randint(4, [32], (Kind::Int64, Device::Cpu));
                let rewards = Tensor::rand([32], (Kind::Float, Device::Cpu));
                let weights = Tensor::rand([32], (Kind::Float, Device::Cpu));
                let host = Batch {
                    ids: (0..32).collect(),
                    obs,
                    next_obs,
                    actions,
                    rewards,
                    discounts: Tensor::full([32], 0.97, (Kind::Float, Device::Cpu)),
                    weights,
                    staging: None,
                };
                let to = crate::io::upload::Uploader::new(Device::Cuda(0));
                let on_gpu = |t: &Tensor| to.upload(t.shallow_clone());
                let device = Batch {
                    ids: host.ids.clone(),
                    obs: on_gpu(&host.obs),
                    next_obs: on_gpu(&host.next_obs),
                    actions: on_gpu(&host.actions),
                    rewards: on_gpu(&host.rewards),
                    discounts: on_gpu(&host.discounts),
                    weights: on_gpu(&host.weights),
                    staging: None,
                };
                let (a, b) = (cpu.update(&host).unwrap(), gpu.update(&device).unwrap());
                // cuDNN may convolve in TF32: close, not equal.
                assert!(
                    (a.loss - b.loss).abs() < 1e-3 * a.loss.abs().max(1.0),
                    "step {step}: {} vs {}",
                    a.loss,
                    b.loss
                );
                for (x, y) in a.td_abs.iter().zip(&b.td_abs) {
                    assert!((x - y).abs() < 1e-2, "step {step}: td {x} vs {y}");
                }
            }
            for ((name, x), (_, y)) in cpu.online_state().iter().zip(gpu.online_state().iter()) {
                let diff = (x - y.to_device(Device::Cpu)).abs().max().double_value(&[]);
                assert!(diff < 1e-3, "{name} differs by {diff}");
            }
        }
    }

    #[test]
    fn restore_takes_every_part_or_none() {
        let _rng = seeded(5);
        let net = QNetConfig::new(Arch::Mlp { hidden: 8 }, &[1, 2, 2], 2, true);
        let config = DqnConfig {
            target_update_every: 1000,
            ..config()
        };
        let mut a = Dqn::new(net, config, Device::Cpu).unwrap();
        for _ in 0..3 {
            a.update(&batch(1.0, 0.0)).unwrap();
        }
        let map = |t: NamedTensors| -> HashMap<String, Tensor> { t.into_iter().collect() };
        let (online, target, opt) = (
            map(a.online_state()),
            map(a.target_state()),
            map(a.optimizer_state()),
        );
        let mut b = Dqn::new(net, config, Device::Cpu).unwrap();
        b.restore(Saved {
            online: &online,
            target: Some(&target),
            optimizer: Some(&opt),
            updates: a.updates(),
        })
        .unwrap();
        assert_eq!(b.updates(), 3);
        for (x, y) in [
            (a.online_state(), b.online_state()),
            (a.target_state(), b.target_state()),
            (a.optimizer_state(), b.optimizer_state()),
        ] {
            for ((name, x), (_, y)) in x.iter().zip(&y) {
                assert!(x.equal(y), "{name}");
            }
        }
        let obs = batch(0.0, 0.0).obs;
        assert!(!b.target.q_values(&obs).equal(&b.online.q_values(&obs)));
        // The next steps match too: the optimizer's moments came along.
        let (ua, ub) = (
            a.update(&batch(1.0, 0.0)).unwrap(),
            b.update(&batch(1.0, 0.0)).unwrap(),
        );
        assert_eq!(ua.td_abs, ub.td_abs);

        let other = QNetConfig::new(Arch::Mlp { hidden: 9 }, &[1, 2, 2], 2, true);
        let mut c = Dqn::new(other, config, Device::Cpu).unwrap();
        let fresh: Vec<Tensor> = c.online_state().iter().map(|(_, t)| t.copy()).collect();
        assert!(c
            .restore(Saved {
                online: &online,
                target: None,
                optimizer: None,
                updates: 3,
            })
            .is_err());
        assert_eq!(c.updates(), 0);
        for ((name, now), was) in c.online_state().iter().zip(&fresh) {
            assert!(now.equal(was), "{name} changed on a failed restore");
        }
    }

    /// Six transitions with distinct observations, rewards and weights.
    fn varied_batch() -> Batch {
        let _rng = seeded(7);
        let frames = |t: &Tensor| t.view([6, 1, 2, 2]);
        Batch {
            ids: (0..6).collect(),
            obs: frames(&Tensor::randint(256, [24], (Kind::Uint8, Device::Cpu))),
            next_obs: frames(&Tensor::randint(256, [24], (Kind::Uint8, Device::Cpu))),
            actions: Tensor::from_slice(&[0i64, 1, 1, 0, 1, 0]),
            rewards: Tensor::from_slice(&[0f32, 1.0, 0.0, -1.0, 0.5, 0.0]),
            discounts: Tensor::from_slice(&[0.9f32, 0.0, 0.9, 0.9, 0.0, 0.9]),
            weights: Tensor::from_slice(&[1f32, 0.5, 0.25, 1.0, 0.75, 0.1]),
            staging: None,
        }
    }

    #[test]
    fn slices_side_by_side_take_the_step_the_whole_batch_takes() {
        let net = QNetConfig::new(Arch::Mlp { hidden: 16 }, &[1, 2, 2], 2, true);
        let b = varied_batch();
        // The target network stays apart from the online one through the
        // test (a slice must read the target, not the online network).
        let config = DqnConfig {
            target_update_every: 1_000,
            ..config()
        };
        let map = |l: &NamedTensors| -> HashMap<String, Tensor> {
            l.iter().map(|(k, t)| (k.clone(), t.copy())).collect()
        };
        let other = {
            let _rng = seeded(9);
            map(&Dqn::with_batch_workers(net, config, Device::Cpu, 1, 1)
                .unwrap()
                .online_state())
        };
        // Even slices, uneven ones, and more workers than rows.
        for slices in [2, 4, 9] {
            let online = {
                let _rng = seeded(8);
                map(&Dqn::with_batch_workers(net, config, Device::Cpu, 1, 1)
                    .unwrap()
                    .online_state())
            };
            let start = |slices| {
                let mut dqn = Dqn::with_batch_workers(net, config, Device::Cpu, slices, 2).unwrap();
                dqn.restore(Saved {
                    online: &online,
                    target: Some(&other),
                    optimizer: None,
                    updates: 0,
                })
                .unwrap();
                dqn
            };
            let (mut whole, mut sliced) = (start(1), start(slices));
            let differs = |(name, t): &(String, Tensor)| !t.equal(&other[name]);
            assert!(
                whole.online_state().iter().any(differs),
                "the target must differ from the online network"
            );
            for step in 0..3 {
                let (w, s) = (whole.update(&b).unwrap(), sliced.update(&b).unwrap());
                let what = format!("{slices} slices, update {step}");
                assert!(
                    (w.loss - s.loss).abs() <= 1e-6 * w.loss.abs().max(1.0),
                    "{what}: loss"
                );
                assert!((w.mean_q - s.mean_q).abs() <= 1e-6, "{what}: mean Q");
                assert_eq!(s.td_abs.len(), 6, "{what}: one priority per row");
                for (x, y) in w.td_abs.iter().zip(&s.td_abs) {
                    assert!((x - y).abs() <= 1e-5, "{what}: priority {y} against {x}");
                }
                let (wg, sg) = (whole.gradients(), sliced.gradients());
                assert_eq!(wg.len(), sg.len(), "{what}: one gradient per variable");
                assert_eq!(wg.len(), whole.online_state().len(), "{what}: gradients");
                let grads = wg.into_iter().zip(sg);
                let weights = whole.online_state().into_iter().zip(sliced.online_state());
                for ((name, x), (_, y)) in grads.chain(weights) {
                    let off = (&x - &y).abs().max().double_value(&[]);
                    assert!(off <= 1e-5, "{what}: {name} off by {off}");
                }
            }
        }
    }
}
