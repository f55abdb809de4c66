//! The loss of one slice of a batch and its gradients: double-DQN (or
//! Munchausen) n-step targets, Huber (or squared) loss weighted by
//! importance weights; for a network with a quantile head, QR-DQN's
//! quantile Huber loss against the n-step targets of the next quantiles.
//! Slices add up to the whole batch's loss and gradients, so a batch may be
//! taken whole on one thread or in slices side by side (`batch_workers.rs`).

use apex_model::{QNet, Quantiles};
use tch::{Kind, Reduction, Tensor};

use crate::dqn::{Munchausen, TdLoss};
use crate::io::batch::Batch;

/// The networks a slice goes through.
pub struct Nets<'a> {
    pub online: &'a QNet,
    pub target: &'a QNet,
    /// The online network's variables, in the order the gradients come back.
    pub vars: &'a [Tensor],
    pub rule: TdRule,
}

/// What a slice's targets and loss are made of (from the `DqnConfig`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TdRule {
    /// Double-DQN targets; off: the target network's max.
    pub double: bool,
    pub loss: TdLoss,
    /// Munchausen targets, in place of the two above.
    pub munchausen: Option<Munchausen>,
}

/// Rows `start..start + len` of a batch, as views of its tensors.
pub struct Slice {
    pub obs: Tensor,
    pub next_obs: Tensor,
    pub actions: Tensor,
    pub rewards: Tensor,
    pub discounts: Tensor,
    pub weights: Tensor,
    /// Rows in the whole batch: every slice's loss is divided by it, so
    /// that the slices' losses and gradients sum to the batch's mean.
    pub batch_len: i64,
}

impl Slice {
    pub fn of(b: &Batch, start: i64, len: i64) -> Slice {
        let rows = |t: &Tensor| t.narrow(0, start, len);
        Slice {
            obs: rows(&b.obs),
            next_obs: rows(&b.next_obs),
            actions: rows(&b.actions),
            rewards: rows(&b.rewards),
            discounts: rows(&b.discounts),
            weights: rows(&b.weights),
            batch_len: b.len() as i64,
        }
    }
}

/// What a slice contributes to the update.
pub struct SliceLoss {
    /// Gradients of `loss`, one per variable of [`Nets::vars`].
    pub grads: Vec<Tensor>,
    /// The slice's weighted Huber losses summed, over the batch's rows.
    pub loss: Tensor,
    /// The slice's Q-values of the taken actions, summed.
    pub q_sum: Tensor,
    /// |target - Q| per row: the new priorities.
    pub td_abs: Tensor,
}

/// Buffers for a slice's observations as floats, kept from update to update
/// (see `apex_model::scale_into`).
pub struct Scaled {
    obs: Tensor,
    next_obs: Tensor,
}

impl Scaled {
    pub fn new() -> Self {
        Scaled {
            obs: Tensor::new(),
            next_obs: Tensor::new(),
        }
    }
}

/// The loss of `s` and its gradients.
pub fn slice_loss(nets: &Nets<'_>, s: &Slice, scaled: &mut Scaled) -> SliceLoss {
    // The next observations go through two networks: converted once.
    apex_model::scale_into(&s.obs, &mut scaled.obs);
    apex_model::scale_into(&s.next_obs, &mut scaled.next_obs);
    if let Some(n) = nets.online.quantiles() {
        let (loss, q, target) = quantile_loss(nets, n, s, scaled);
        return finish(nets, s, loss, q, target);
    }
    let q = nets
        .online
        .q_values_scaled(&scaled.obs)
        .gather(1, &s.actions.unsqueeze(1), false)
        .squeeze_dim(1);
    let target = tch::no_grad(|| {
        let next_q = nets.target.q_values_scaled(&scaled.next_obs);
        if let Some(m) = nets.rule.munchausen {
            return munchausen_target(nets, m, s, scaled, &next_q);
        }
        let next = if nets.rule.double {
            let best = nets
                .online
                .q_values_scaled(&scaled.next_obs)
                .argmax(1, true);
            next_q.gather(1, &best, false).squeeze_dim(1)
        } else {
            next_q.max_dim(1, false).0
        };
        &s.rewards + &s.discounts * next
    });
    let per_item = match nets.rule.loss {
        TdLoss::Huber => q.huber_loss(&target, Reduction::None, 1.0),
        TdLoss::Mse => q.mse_loss(&target, Reduction::None) * 0.5,
    };
    finish(nets, s, per_item, q, target)
}

/// The slice's contribution from each row's loss `per_item`, its Q-values
/// of the taken actions and its targets' means.
fn finish(nets: &Nets<'_>, s: &Slice, per_item: Tensor, q: Tensor, target: Tensor) -> SliceLoss {
    let loss = (&s.weights * per_item).sum(Kind::Float) / s.batch_len as f64;
    // The gradients are returned, not accumulated into the variables: no
    // pass over the 3.3M parameters to zero them and none to add into them
    // (what PyTorch's `zero_grad(set_to_none=True)` saves).
    let grads = Tensor::run_backward(&[&loss], nets.vars, false, false)
        .into_iter()
        .map(|g| if g.defined() { g.contiguous() } else { g })
        .collect();
    tch::no_grad(|| SliceLoss {
        grads,
        loss: loss.detach(),
        q_sum: q.sum(Kind::Float),
        td_abs: (&target - &q).abs(),
    })
}

/// QR-DQN's loss of each row (Dabney et al. 2018, as Dopamine computes it):
/// for each online quantile i of the taken action, the mean over the target
/// quantiles j of |tau_i - 1{u < 0}| Huber(u), u = T_j - theta_i, summed over
/// i; the target quantiles T_j are the n-step return plus the discounted
/// quantiles of the target network at the next action, picked by the online
/// network's mean (double) or the target's. With it, the taken actions'
/// Q-values (the quantiles' mean) and the targets' means, whose difference
/// is the row's priority, as for the expected-value head.
fn quantile_loss(
    nets: &Nets<'_>,
    quantiles: Quantiles,
    s: &Slice,
    scaled: &Scaled,
) -> (Tensor, Tensor, Tensor) {
    let n = quantiles.get();
    let of_action = |quantiles: &Tensor, actions: &Tensor| {
        let rows = quantiles.size()[0];
        quantiles
            .gather(
                1,
                &actions.view([-1, 1, 1]).expand([rows, 1, n], false),
                false,
            )
            .squeeze_dim(1)
    };
    let theta = of_action(
        &nets.online.return_quantiles_scaled(&scaled.obs),
        &s.actions,
    );
    let target = tch::no_grad(|| {
        let next = nets.target.return_quantiles_scaled(&scaled.next_obs);
        let best = if nets.rule.double {
            nets.online.q_values_scaled(&scaled.next_obs)
        } else {
            next.mean_dim(-1, false, Kind::Float)
        }
        .argmax(1, false);
        s.rewards.unsqueeze(1) + s.discounts.unsqueeze(1) * of_action(&next, &best)
    });
    // [rows, i, j]: each online quantile against each target quantile.
    let online = theta.unsqueeze(2).expand([-1, n, n], false);
    let targets = target.unsqueeze(1).expand([-1, n, n], false);
    let huber = online.huber_loss(&targets, Reduction::None, 1.0);
    let below = tch::no_grad(|| targets.lt_tensor(&online).to_kind(Kind::Float));
    let fractions = quantiles.fractions(theta.device()).view([1, n, 1]);
    let per_item = ((fractions - below).abs() * huber)
        .mean_dim(2, false, Kind::Float)
        .sum_dim_intlist(1, false, Kind::Float);
    let q = theta.mean_dim(1, false, Kind::Float);
    let target_mean = target.mean_dim(1, false, Kind::Float);
    (per_item, q, target_mean)
}

/// Munchausen's target of each row: the n-step return, the scaled and
/// clipped log-probability of the action taken under the target network's
/// softmax policy, and the discounted soft value of the next observation.
fn munchausen_target(
    nets: &Nets<'_>,
    m: Munchausen,
    s: &Slice,
    scaled: &Scaled,
    next_q: &Tensor,
) -> Tensor {
    let now_q = nets.target.q_values_scaled(&scaled.obs);
    let log_pi = (now_q / m.tau)
        .log_softmax(1, Kind::Float)
        .gather(1, &s.actions.unsqueeze(1), false)
        .squeeze_dim(1);
    let bonus = (log_pi * m.tau).clamp(m.clip_min, 0.0) * m.alpha;
    // sum_a pi(a) (Q(a) - tau log pi(a)), which is tau * logsumexp(Q / tau).
    let soft_value = (next_q / m.tau).logsumexp([1], false) * m.tau;
    &s.rewards + bonus + &s.discounts * soft_value
}
