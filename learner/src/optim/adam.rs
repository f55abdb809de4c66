//! Adam as `torch.optim.Adam` computes it (betas 0.9 and 0.999, bias
//! correction, epsilon added after the square root, no weight decay), kept
//! here rather than taken from libtorch because libtorch's optimizer cannot
//! hand out its moments, and a resumed learner needs them: restarting Adam's
//! averages from zero makes its first steps lr-sized in every direction.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::optim::fused;
use crate::persist::state::{self, NamedTensors, StateError};

pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.999;

pub struct Adam {
    vars: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Steps taken per variable: as in torch, a variable without a gradient
    /// skips a step and keeps its own bias correction.
    steps: Vec<i64>,
    /// One buffer per variable for the intermediate results of the step in
    /// libtorch operations (CUDA): fresh tensors of a 3,136 x 512 layer's
    /// size would cost page faults each step.
    scratch: Vec<Tensor>,
    lr: f64,
    eps: f64,
    /// Threads of the fused CPU step: the learner's, as given at start, so
    /// that a learner whose own thread later runs on one (its batch workers
    /// hold the cores) still steps on all of them.
    threads: usize,
}

impl Adam {
    pub fn new(vars: Vec<Tensor>, lr: f64, eps: f64, threads: usize) -> Self {
        Adam {
            exp_avg: vars.iter().map(Tensor::zeros_like).collect(),
            exp_avg_sq: vars.iter().map(Tensor::zeros_like).collect(),
            steps: vec![0; vars.len()],
            scratch: vars.iter().map(Tensor::empty_like).collect(),
            vars,
            lr,
            eps,
            threads: threads.max(1),
        }
    }

    /// The learning rate of the steps that follow (a schedule's).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// One update from the gradients the variables hold. The operations and
    /// their order are those of `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `w -= lr / bias1 * m / (sqrt(v) / sqrt(bias2) + eps)` on both paths: in
    /// one pass on the CPU (`fused.rs`, which differs from libtorch's
    /// operations only in the last bits), as libtorch operations elsewhere.
    pub fn step(&mut self) {
        let grads = fused::gradients(&self.vars);
        self.step_with(&grads);
    }

    /// [`Adam::step`] from `grads`, one per variable in order (an undefined
    /// one: that variable skips the step), instead of the gradients the
    /// variables hold.
    pub fn step_with(&mut self, grads: &[Tensor]) {
        assert_eq!(grads.len(), self.vars.len(), "one gradient per variable");
        let stepped = fused::stepped(grads);
        for &i in &stepped {
            self.steps[i] += 1;
        }
        let consts: Vec<Consts> = (0..self.vars.len())
            .map(|i| Consts::new(self.lr, self.eps, self.steps[i]))
            .collect();
        let quads = fused::quads(
            &stepped,
            [&self.vars, grads, &self.exp_avg, &self.exp_avg_sq],
        );
        if fused::fits_or_warn(&quads) {
            fused::for_each_chunk(&quads, self.threads, |q, l| consts[stepped[q]].apply(l));
            return;
        }
        tch::no_grad(|| {
            for &i in &stepped {
                let (g, c) = (&grads[i], &consts[i]);
                let (m, v, s) = (
                    &mut self.exp_avg[i],
                    &mut self.exp_avg_sq[i],
                    &mut self.scratch[i],
                );
                s.copy_(g);
                let _ = s.g_mul_scalar_(1.0 - BETA1);
                let _ = m.g_mul_scalar_(BETA1);
                let _ = m.g_add_(s);
                let _ = g.mul_out(s, g);
                let _ = s.g_mul_scalar_(1.0 - BETA2);
                let _ = v.g_mul_scalar_(BETA2);
                let _ = v.g_add_(s);
                let _ = v.sqrt_out(s);
                let _ = s.g_div_scalar_(c.sqrt_bias2);
                let _ = s.g_add_scalar_(self.eps);
                let _ = m.div_out(s, s);
                let _ = s.g_mul_scalar_(c.step_size);
                let _ = self.vars[i].f_sub_(s).expect("shapes agree");
            }
        })
    }

    /// The moments and step counts, named by variable index.
    pub fn state(&self) -> NamedTensors {
        let mut out = Vec::with_capacity(2 * self.vars.len() + 1);
        for (i, (m, v)) in self.exp_avg.iter().zip(&self.exp_avg_sq).enumerate() {
            out.push((format!("exp_avg.{i}"), m.shallow_clone()));
            out.push((format!("exp_avg_sq.{i}"), v.shallow_clone()));
        }
        out.push(("step".to_owned(), Tensor::from_slice(&self.steps)));
        out
    }

    /// Restores what [`Adam::state`] exported; changes nothing on error.
    pub fn load_state(&mut self, saved: &HashMap<String, Tensor>) -> Result<(), StateError> {
        let steps = saved
            .get("step")
            .ok_or(StateError::Missing("step".into()))?;
        state::check(
            &[("step".to_owned(), Tensor::from_slice(&self.steps))],
            saved,
        )?;
        let moments: NamedTensors = self
            .state()
            .into_iter()
            .filter(|(n, _)| n != "step")
            .collect();
        state::copy_into(&moments, saved)?;
        self.steps = Vec::<i64>::try_from(steps.to_device(Device::Cpu).to_kind(Kind::Int64))
            .expect("step counts are int64");
        Ok(())
    }
}

/// One variable's step constants, as the libtorch operations use them:
/// scalars meet float tensors as floats, `lr / bias1` and `sqrt(bias2)` are
/// worked out in double first.
struct Consts {
    sqrt_bias2: f64,
    step_size: f64,
    eps: f64,
}

impl Consts {
    fn new(lr: f64, eps: f64, step: i64) -> Self {
        let t = step as i32;
        let (bias1, bias2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        Consts {
            sqrt_bias2: bias2.sqrt(),
            step_size: lr / bias1,
            eps,
        }
    }

    /// The step on one chunk, element by element.
    fn apply(&self, l: fused::Lanes<'_>) {
        let (b1, c1) = (BETA1 as f32, (1.0 - BETA1) as f32);
        let (b2, c2) = (BETA2 as f32, (1.0 - BETA2) as f32);
        let (sqrt_bias2, eps, step_size) = (
            self.sqrt_bias2 as f32,
            self.eps as f32,
            self.step_size as f32,
        );
        for (w, g, m, v) in l.elements() {
            *m = *m * b1 + g * c1;
            *v = *v * b2 + (g * g) * c2;
            let denom = v.sqrt() / sqrt_bias2 + eps;
            *w -= *m / denom * step_size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, Module, OptimizerConfig};

    /// A small regression whose gradients depend on the weights, so the two
    /// optimizers see identical gradients only while their weights agree.
    fn loss(net: &nn::Linear, x: &Tensor, y: &Tensor) -> Tensor {
        (net.forward(x) - y).square().mean(Kind::Float)
    }

    #[test]
    fn matches_libtorch_adam() {
        let _rng = crate::test_rng::seeded(7);
        let ours_vs = nn::VarStore::new(Device::Cpu);
        let ours_net = nn::linear(ours_vs.root(), 5, 3, Default::default());
        let mut theirs_vs = nn::VarStore::new(Device::Cpu);
        let theirs_net = nn::linear(theirs_vs.root(), 5, 3, Default::default());
        theirs_vs.copy(&ours_vs).unwrap();
        let (lr, eps) = (1e-2, 1e-8);
        let mut ours = Adam::new(ours_vs.trainable_variables(), lr, eps, 1);
        let mut theirs = nn::Adam::default().eps(eps).build(&theirs_vs, lr).unwrap();
        let x = Tensor::randn([16, 5], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([16, 3], (Kind::Float, Device::Cpu));
        let initial = ours_net.ws.copy();
        for _ in 0..25 {
            let mut vars = ours_vs.trainable_variables();
            crate::optim::grad::zero_grad(&mut vars);
            loss(&ours_net, &x, &y).backward();
            ours.step();
            theirs.zero_grad();
            loss(&theirs_net, &x, &y).backward();
            theirs.step();
        }
        let moved = (&ours_net.ws - initial).abs().max().double_value(&[]);
        assert!(moved > 0.1, "25 steps of lr 0.01 move the weights: {moved}");
        for (name, w) in ours_vs.variables() {
            let diff = (&w - &theirs_vs.variables()[&name])
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-6, "{name} differs by {diff}");
        }
        assert_eq!(ours.steps, vec![25, 25]);
    }

    #[test]
    fn fused_steps_follow_the_formula() {
        let _rng = crate::test_rng::seeded(8);
        let opts = (Kind::Float, Device::Cpu);
        let w = Tensor::randn([640, 333], opts).set_requires_grad(true);
        let (lr, eps) = (1e-3, 1e-8);
        let mut ours = Adam::new(vec![w.shallow_clone()], lr, eps, 2);
        let mut want = w.detach().copy();
        let (mut m, mut v) = (
            Tensor::zeros([640, 333], opts),
            Tensor::zeros([640, 333], opts),
        );
        for t in 1..=5 {
            // A gradient of its own each step, the same for both.
            let g = Tensor::randn([640, 333], opts);
            crate::optim::grad::zero_grad(&mut [w.shallow_clone()]);
            (&w * &g).sum(Kind::Float).backward();
            ours.step();
            m = &m * BETA1 + &g * (1.0 - BETA1);
            v = &v * BETA2 + &g * &g * (1.0 - BETA2);
            let (bias1, bias2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
            let denom = v.sqrt() / bias2.sqrt() + eps;
            want = &want - &m / denom * (lr / bias1);
            crate::optim::fused::assert_same_but_sqrt_rounding(&w, &want, &format!("step {t}"));
        }
        assert!(ours.exp_avg[0].equal(&m) && ours.exp_avg_sq[0].equal(&v));
    }

    #[test]
    fn state_round_trips() {
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut a = Adam::new(vec![w.shallow_clone()], 0.1, 1e-8, 1);
        (&w * Tensor::from_slice(&[0.5f32, -3.0]))
            .sum(Kind::Float)
            .backward();
        a.step();
        a.step();
        let saved: HashMap<_, _> = a.state().into_iter().collect();
        let mut b = Adam::new(
            vec![Tensor::zeros([2], (Kind::Float, Device::Cpu))],
            0.1,
            1e-8,
            1,
        );
        b.load_state(&saved).unwrap();
        assert_eq!(b.steps, vec![2]);
        for ((_, x), (_, y)) in a.state().iter().zip(b.state().iter()) {
            assert!(x.equal(y));
        }
        let mut wrong = Adam::new(
            vec![Tensor::zeros([3], (Kind::Float, Device::Cpu))],
            0.1,
            1e-8,
            1,
        );
        assert!(wrong.load_state(&saved).is_err());
        assert_eq!(wrong.steps, vec![0], "a failed load changes nothing");
    }
}
