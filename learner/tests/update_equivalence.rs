//! The learner's update, made faster (channels-last convolutions, a fused
//! one-pass optimizer step on flushed subnormals), against the update as it
//! was written before: the Nature CNN convolving the default layout, and
//! Adam as libtorch operations. Both start from the same weights and take
//! the same batch of real Breakout observations; loss, priorities,
//! gradients and the weights after several steps must agree to float
//! rounding, whether the batch is taken whole or in slices side by side.
//! The same reference, written out another way, checks the levers beside
//! the default: the squared loss, Munchausen's targets and QR-DQN's
//! quantile head and loss.

use std::collections::HashMap;

use apex_env::atari::{AtariConfig, AtariEnv};
use apex_env::Protocol;
use apex_learner::dqn::{Dqn, DqnConfig, Munchausen, Optimizer, Saved, TdLoss};
use apex_learner::io::batch::Batch;
use apex_model::{Arch, QNetConfig, Quantiles};
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Reduction, Tensor};

const BATCH: usize = 32;
const GAMMA_N: f32 = 0.970_299;

/// Two batches of `BATCH` transitions from a random game of Breakout.
fn recorded_batches() -> Vec<Batch> {
    let config = AtariConfig::new("breakout", Protocol::V4);
    let mut env = AtariEnv::new(&config).expect("breakout: run scripts/setup.sh for the ROMs");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let actions = env.num_actions();
    let mut obs = vec![env.reset().to_vec()];
    let mut rewards = Vec::new();
    let mut taken = Vec::new();
    while obs.len() < 2 * BATCH + 1 {
        let a = rng.gen_range(0..actions);
        let step = env.step(a);
        taken.push(a as i64);
        rewards.push(step.reward);
        if step.done() {
            obs.push(env.reset().to_vec());
        } else {
            obs.push(env.obs().to_vec());
        }
    }
    (0..2)
        .map(|b| {
            let range = b * BATCH..(b + 1) * BATCH;
            let stack = |rows: &[Vec<u8>]| {
                Tensor::from_slice(&rows.concat()).view([BATCH as i64, 4, 84, 84])
            };
            Batch {
                ids: (0..BATCH as u64).collect(),
                obs: stack(&obs[range.clone()]),
                next_obs: stack(&obs[range.start + 1..range.end + 1]),
                actions: Tensor::from_slice(&taken[range.clone()]),
                rewards: Tensor::from_slice(&rewards[range.clone()]),
                discounts: Tensor::full([BATCH as i64], GAMMA_N as f64, (Kind::Float, Device::Cpu)),
                weights: Tensor::linspace(0.2, 1.0, BATCH as i64, (Kind::Float, Device::Cpu)),
                staging: None,
            }
        })
        .collect()
}

/// The dueling Nature CNN on the default (channels-first) layout, from the
/// learner's variables by name.
fn q_reference(v: &HashMap<String, Tensor>, obs: &Tensor) -> Tensor {
    quantiles_reference(v, obs, 1).squeeze_dim(-1)
}

/// The same network's outputs as `[B, actions, per_action]`: the quantiles
/// of each action's return, each quantile's advantages centred apart.
fn quantiles_reference(v: &HashMap<String, Tensor>, obs: &Tensor, per_action: i64) -> Tensor {
    let conv = |x: &Tensor, name: &str, stride: i64| {
        x.conv2d(
            &v[&format!("{name}.weight")],
            Some(&v[&format!("{name}.bias")]),
            [stride, stride],
            [0, 0],
            [1, 1],
            1,
        )
        .relu()
    };
    let linear = |x: &Tensor, name: &str| {
        x.linear(
            &v[&format!("{name}.weight")],
            Some(&v[&format!("{name}.bias")]),
        )
    };
    let x = obs.to_kind(Kind::Float) / 255.0;
    let h = conv(&conv(&conv(&x, "conv1", 4), "conv2", 2), "conv3", 1).flatten(1, -1);
    let head = |name: &str| {
        linear(
            &linear(&h, &format!("{name}.hidden")).relu(),
            &format!("{name}.out"),
        )
    };
    let (value, advantage) = (head("value"), head("advantage"));
    let rows = advantage.size()[0];
    let actions = advantage.size()[1] / per_action;
    let advantage = advantage.view([rows, actions, per_action]);
    let mut out = Vec::new();
    for a in 0..actions {
        let centred = advantage.select(1, a) - advantage.mean_dim(1, false, Kind::Float);
        out.push(&value + centred);
    }
    Tensor::stack(&out, 1)
}

/// QR-DQN's loss of each row written out: both sides' quantiles of the
/// taken and the next (double-DQN) actions picked by index, the asymmetric
/// weight as tau or 1 - tau, Huber's two branches; with the taken actions'
/// mean quantile and the targets' mean.
fn quantile_reference(r: &Reference, b: &Batch, n: i64) -> (Tensor, Tensor, Tensor) {
    let pick = |z: &Tensor, actions: &Tensor| {
        let rows: Vec<Tensor> = (0..z.size()[0])
            .map(|row| z.get(row).get(actions.int64_value(&[row])))
            .collect();
        Tensor::stack(&rows, 0)
    };
    let theta = pick(&quantiles_reference(&r.online, &b.obs, n), &b.actions);
    let target = tch::no_grad(|| {
        let next = quantiles_reference(&r.target, &b.next_obs, n);
        let best = quantiles_reference(&r.online, &b.next_obs, n)
            .sum_dim_intlist(-1, false, Kind::Float)
            .argmax(1, false);
        b.rewards.unsqueeze(1) + b.discounts.unsqueeze(1) * pick(&next, &best)
    });
    let tau = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 2.0 + 1.0) / (2 * n) as f64;
    let mut per_item = Vec::new();
    for row in 0..theta.size()[0] {
        let mut sum = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for i in 0..n {
            let u = target.get(row) - theta.get(row).get(i);
            let huber = (&u * &u * 0.5).where_self(&u.abs().le(1.0), &(u.abs() - 0.5));
            let t = tau.get(i).double_value(&[]);
            let weight = u.lt(0.0).to_kind(Kind::Float) * (1.0 - 2.0 * t) + t;
            sum += (weight * huber).mean(Kind::Float);
        }
        per_item.push(sum);
    }
    (
        Tensor::stack(&per_item, 0),
        theta.mean_dim(1, false, Kind::Float),
        target.mean_dim(1, false, Kind::Float),
    )
}

/// What the update computed before it was made faster: loss, priorities
/// and the clipped gradients, then Adam's step as libtorch operations.
struct Reference {
    online: HashMap<String, Tensor>,
    target: HashMap<String, Tensor>,
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
    steps: i32,
    quantiles: Option<Quantiles>,
}

struct Figures {
    loss: f64,
    td_abs: Vec<f32>,
    /// The largest |Q| and |target|: the scale of the values whose
    /// difference a priority is, and so of its rounding.
    q_scale: f32,
    grads: HashMap<String, Tensor>,
    /// Rows whose Munchausen bonus the floor clipped.
    clipped_rows: i64,
}

impl Reference {
    /// The expected-value head's loss of each row, its Q-values of the
    /// taken actions and its targets (double-DQN or Munchausen's).
    fn expected_value_loss(
        &self,
        b: &Batch,
        config: &DqnConfig,
        clipped_rows: &mut i64,
    ) -> (Tensor, Tensor, Tensor) {
        let q = q_reference(&self.online, &b.obs)
            .gather(1, &b.actions.unsqueeze(1), false)
            .squeeze_dim(1);
        let target =
            tch::no_grad(|| {
                let next_q = q_reference(&self.target, &b.next_obs);
                if let Some(m) = config.munchausen {
                    // The policy's log-probabilities written out: log of
                    // exp(Q / tau) over its sum, shifted by the row's max.
                    let log_policy = |q: &Tensor| {
                        let z = (q - q.max_dim(1, true).0) / m.tau;
                        &z - z.exp().sum_dim_intlist(1, true, Kind::Float).log()
                    };
                    let now = log_policy(&q_reference(&self.target, &b.obs))
                        .gather(1, &b.actions.unsqueeze(1), false)
                        .squeeze_dim(1)
                        * m.tau;
                    *clipped_rows = now.lt(m.clip_min).sum(Kind::Int64).int64_value(&[]);
                    let bonus = now.clamp(m.clip_min, 0.0) * m.alpha;
                    let next_log_pi = log_policy(&next_q);
                    let soft = (next_log_pi.exp() * (&next_q - &next_log_pi * m.tau))
                        .sum_dim_intlist(1, false, Kind::Float);
                    return &b.rewards + bonus + &b.discounts * soft;
                }
                let best = q_reference(&self.online, &b.next_obs).argmax(1, true);
                &b.rewards + &b.discounts * next_q.gather(1, &best, false).squeeze_dim(1)
            });
        let per_item = match config.loss {
            TdLoss::Huber => q.huber_loss(&target, Reduction::None, 1.0),
            // Written out, not libtorch's mse_loss.
            TdLoss::Mse => (&q - &target) * (&q - &target) / 2.0,
        };
        (per_item, q, target)
    }

    fn update(&mut self, b: &Batch, config: &DqnConfig) -> Figures {
        for w in self.online.values_mut() {
            *w = w.detach().set_requires_grad(true);
        }
        let mut clipped_rows = 0;
        let (per_item, q, target) = match self.quantiles {
            Some(n) => quantile_reference(self, b, n.get()),
            None => self.expected_value_loss(b, config, &mut clipped_rows),
        };
        let loss = (&b.weights * per_item).mean(Kind::Float);
        loss.backward();
        let grads: HashMap<String, Tensor> = self
            .online
            .iter()
            .map(|(k, w)| (k.clone(), w.grad().copy()))
            .collect();
        let norm = Tensor::stack(&grads.values().map(Tensor::norm).collect::<Vec<_>>(), 0)
            .norm()
            .double_value(&[]);
        let coef = (config.max_grad_norm / (norm + 1e-6)).min(1.0);
        let (lr, Optimizer::Adam { eps }) = (config.learning_rate, config.optimizer) else {
            panic!("the reference steps Adam only");
        };
        self.steps += 1;
        let (bias1, bias2) = (
            1.0 - 0.9f64.powi(self.steps),
            1.0 - 0.999f64.powi(self.steps),
        );
        let mut clipped = HashMap::new();
        tch::no_grad(|| {
            for (name, w) in &self.online {
                let g = &grads[name] * coef;
                let m = &self.m[name] * 0.9 + &g * (1.0 - 0.9);
                let v = &self.v[name] * 0.999 + &g * &g * (1.0 - 0.999);
                let step = &m / (v.sqrt() / bias2.sqrt() + eps) * (lr / bias1);
                let _ = w.detach().f_sub_(&step).unwrap();
                self.m.insert(name.clone(), m);
                self.v.insert(name.clone(), v);
                clipped.insert(name.clone(), g);
            }
        });
        Figures {
            loss: loss.double_value(&[]),
            td_abs: Vec::<f32>::try_from((&target - &q).abs().detach()).unwrap(),
            q_scale: q
                .abs()
                .max()
                .max_other(&target.abs().max())
                .double_value(&[]) as f32,
            grads: clipped,
            clipped_rows,
        }
    }
}

fn close(a: &Tensor, b: &Tensor, scale: f64) -> f64 {
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn the_faster_update_computes_what_the_plain_one_did() {
    check_update(1, TdLoss::Huber, None, None);
}

#[test]
fn the_update_in_two_slices_side_by_side_computes_it_too() {
    check_update(2, TdLoss::Huber, None, None);
}

#[test]
fn the_squared_loss_computes_what_it_says_whole_and_in_slices() {
    check_update(1, TdLoss::Mse, None, None);
    check_update(2, TdLoss::Mse, None, None);
}

#[test]
fn munchausen_targets_compute_what_the_paper_writes_whole_and_in_slices() {
    for slices in [1, 2] {
        check_update(slices, TdLoss::Huber, Some(MUNCHAUSEN), None);
    }
}

#[test]
fn the_quantile_head_computes_qr_dqn_s_loss_whole_and_in_slices() {
    for slices in [1, 2] {
        check_update(slices, TdLoss::Huber, None, Quantiles::new(8).ok());
    }
}

/// A temperature and floor at the scale of a young network's Q-values, so
/// that the policy is far from uniform and the floor clips some rows.
const MUNCHAUSEN: Munchausen = Munchausen {
    alpha: 0.9,
    tau: 0.003,
    clip_min: -0.01,
};

/// The update with the batch taken in `slices` slices side by side (one:
/// whole, on the calling thread), with `loss` and `munchausen`'s targets,
/// against the reference.
fn check_update(
    slices: usize,
    loss: TdLoss,
    munchausen: Option<Munchausen>,
    quantiles: Option<Quantiles>,
) {
    // One at a time: both draw their weights from libtorch's one generator,
    // so each sees the same weights on every run.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(5);
    let config = DqnConfig {
        optimizer: Optimizer::Adam { eps: 1.5e-4 },
        learning_rate: 1e-4,
        learning_rate_decay: None,
        // Low enough that clipping takes part.
        max_grad_norm: 0.5,
        target_update_every: 1000,
        double: true,
        loss,
        munchausen,
    };
    let net = QNetConfig::new(Arch::Nature, &[4, 84, 84], 4, true).with_quantiles(quantiles);
    let mut dqn = Dqn::with_batch_workers(
        net,
        config,
        Device::Cpu,
        slices,
        apex_model::threads::torch_threads_here(),
    )
    .unwrap();
    // A target network apart from the online one, as mid-training.
    let target: HashMap<String, Tensor> = dqn
        .online_state()
        .into_iter()
        .map(|(k, w)| (k, tch::no_grad(|| &w + w.randn_like() * 0.01)))
        .collect();
    let online: HashMap<String, Tensor> = dqn
        .online_state()
        .into_iter()
        .map(|(k, w)| (k, w.detach().copy()))
        .collect();
    dqn.restore(Saved {
        online: &online,
        target: Some(&target),
        optimizer: None,
        updates: 0,
    })
    .unwrap();
    let zeros =
        |t: &HashMap<String, Tensor>| t.iter().map(|(k, w)| (k.clone(), w.zeros_like())).collect();
    let mut reference = Reference {
        m: zeros(&online),
        v: zeros(&online),
        online,
        target,
        steps: 0,
        quantiles,
    };

    let mut batches = recorded_batches();
    if loss == TdLoss::Mse || quantiles.is_some() {
        // Rewards from -3 to 3 (Breakout's random play scores almost
        // nothing): TD errors beyond 1, where the squared loss and
        // Huber's part.
        for b in &mut batches {
            b.rewards = Tensor::linspace(-3.0, 3.0, BATCH as i64, (Kind::Float, Device::Cpu));
        }
    }
    let mut clipped_rows = 0;
    for (i, b) in batches.iter().chain(&batches).enumerate() {
        let want = reference.update(b, &config);
        clipped_rows += want.clipped_rows;
        if loss == TdLoss::Mse || quantiles.is_some() {
            assert!(
                want.td_abs.iter().any(|&d| d > 1.5),
                "update {i}: no TD error beyond Huber's threshold: the test would not tell the losses apart"
            );
        }
        let got = dqn.update(b).unwrap();
        // Slices, and sums in another order, round differently; Adam's
        // steps, the size of the learning rate whatever the gradient's,
        // carry those last bits into the next updates' losses.
        assert!(
            (got.loss - want.loss).abs() <= 1e-4 * want.loss.abs().max(1e-3),
            "update {i}: loss {} against {}",
            got.loss,
            want.loss
        );
        assert_eq!(got.td_abs.len(), BATCH);
        for (x, y) in got.td_abs.iter().zip(&want.td_abs) {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs().max(want.q_scale),
                "update {i}: priority {x} against {y} (|Q| up to {})",
                want.q_scale
            );
        }
        let grads: HashMap<String, Tensor> = dqn.gradients().into_iter().collect();
        assert_eq!(
            grads.len(),
            want.grads.len(),
            "update {i}: one gradient per variable"
        );
        for (name, w) in dqn.online_state() {
            let g = &want.grads[&name];
            let scale = g.abs().max().double_value(&[]).max(1e-12);
            let off = close(&grads[&name], g, scale);
            assert!(
                off < 1e-3,
                "update {i}: gradient of {name} off by {off} of its largest element"
            );
            let off = close(&w, &reference.online[&name], 1.0);
            assert!(off < 1e-6, "update {i}: {name} off by {off} after the step");
        }
    }
    if munchausen.is_some() {
        let rows = 4 * BATCH as i64;
        assert!(
            clipped_rows > 0 && clipped_rows < rows,
            "the floor clipped {clipped_rows} of {rows} rows: the test would not check both sides of it"
        );
    }
}
