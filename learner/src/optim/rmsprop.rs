//! Centred RMSProp as TensorFlow 1 computes it, the optimizer the Nature DQN
//! and Ape-X settings were published for. libtorch's centred RMSProp adds
//! epsilon outside the square root, `g / (sqrt(ms - mg^2) + eps)`; TensorFlow
//! adds it inside, `g / sqrt(ms - mg^2 + eps)`. With Ape-X's eps of 1.5e-7
//! the two floors differ by a factor of about 2,600, so the published
//! settings only mean what they say with TensorFlow's update. TensorFlow 1
//! also starts the mean square at 1 (not 0), which makes the first updates
//! small while the averages warm up.

use std::collections::HashMap;

use tch::Tensor;

use crate::optim::fused;
use crate::persist::state::{self, NamedTensors, StateError};

/// No momentum, as in both papers.
pub struct TfRmsProp {
    vars: Vec<Tensor>,
    mean_square: Vec<Tensor>,
    mean_grad: Vec<Tensor>,
    /// One buffer per variable for the intermediate results of the step in
    /// libtorch operations (CUDA): no fresh tensors, and so no page faults.
    scratch: Vec<Tensor>,
    lr: f64,
    decay: f64,
    eps: f64,
    /// Threads of the fused CPU step: the learner's, as given at start, so
    /// that a learner whose own thread later runs on one (its batch workers
    /// hold the cores) still steps on all of them.
    threads: usize,
}

impl TfRmsProp {
    pub fn new(vars: Vec<Tensor>, lr: f64, decay: f64, eps: f64, threads: usize) -> Self {
        let mean_square = vars.iter().map(Tensor::ones_like).collect();
        let mean_grad = vars.iter().map(Tensor::zeros_like).collect();
        let scratch = vars.iter().map(Tensor::empty_like).collect();
        TfRmsProp {
            vars,
            mean_square,
            mean_grad,
            scratch,
            lr,
            decay,
            eps,
            threads: threads.max(1),
        }
    }

    /// The learning rate of the steps that follow (a schedule's).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// One update from the gradients the variables hold: `ms = d ms + (1 - d) g^2`,
    /// `mg = d mg + (1 - d) g`, `w -= lr g / sqrt(max(ms - mg^2, 0) + eps)`,
    /// computed with the same operations in the same order as written out: in
    /// one pass on the CPU (`fused.rs`, which differs from libtorch's
    /// operations only in the last bits), as libtorch operations elsewhere.
    pub fn step(&mut self) {
        let grads = fused::gradients(&self.vars);
        self.step_with(&grads);
    }

    /// [`TfRmsProp::step`] from `grads`, one per variable in order (an
    /// undefined one: that variable skips the step), instead of the
    /// gradients the variables hold.
    pub fn step_with(&mut self, grads: &[Tensor]) {
        assert_eq!(grads.len(), self.vars.len(), "one gradient per variable");
        let stepped = fused::stepped(grads);
        let quads = fused::quads(
            &stepped,
            [&self.vars, grads, &self.mean_square, &self.mean_grad],
        );
        if fused::fits_or_warn(&quads) {
            let (d, c) = (self.decay as f32, (1.0 - self.decay) as f32);
            let (lr, eps) = (self.lr as f32, self.eps as f32);
            fused::for_each_chunk(&quads, self.threads, |_, l| {
                for (w, g, ms, mg) in l.elements() {
                    *ms = *ms * d + (g * g) * c;
                    *mg = *mg * d + g * c;
                    let centred = *ms - *mg * *mg;
                    // Rounding can leave ms a hair below mg^2; the true value is >= 0.
                    let centred = if centred < 0.0 { 0.0 } else { centred };
                    *w -= g / (centred + eps).sqrt() * lr;
                }
            });
            return;
        }
        tch::no_grad(|| {
            for &i in &stepped {
                let (g, s) = (&grads[i], &mut self.scratch[i]);
                let (ms, mg) = (&mut self.mean_square[i], &mut self.mean_grad[i]);
                let _ = g.square_out(s);
                let _ = s.g_mul_scalar_(1.0 - self.decay);
                let _ = ms.g_mul_scalar_(self.decay);
                let _ = ms.g_add_(s);
                s.copy_(g);
                let _ = s.g_mul_scalar_(1.0 - self.decay);
                let _ = mg.g_mul_scalar_(self.decay);
                let _ = mg.g_add_(s);
                let _ = mg.square_out(s);
                let _ = ms.sub_out(s, s);
                let _ = s.clamp_min_(0.0);
                let _ = s.g_add_scalar_(self.eps);
                let _ = s.sqrt_();
                let _ = g.div_out(s, s);
                let _ = s.g_mul_scalar_(self.lr);
                let _ = self.vars[i].f_sub_(s).expect("shapes agree");
            }
        })
    }

    /// The running averages, named by variable index.
    pub fn state(&self) -> NamedTensors {
        let mut out = Vec::with_capacity(2 * self.vars.len());
        for (i, (ms, mg)) in self.mean_square.iter().zip(&self.mean_grad).enumerate() {
            out.push((format!("mean_square.{i}"), ms.shallow_clone()));
            out.push((format!("mean_grad.{i}"), mg.shallow_clone()));
        }
        out
    }

    /// Restores what [`TfRmsProp::state`] exported; changes nothing on error.
    pub fn load_state(&mut self, saved: &HashMap<String, Tensor>) -> Result<(), StateError> {
        state::copy_into(&self.state(), saved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::grad::zero_grad;
    use tch::{Device, Kind};

    /// One variable w = [1, -2] with gradient g = [0.5, -3] (loss = c . w).
    fn var_with_grad() -> Tensor {
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let c = Tensor::from_slice(&[0.5f32, -3.0]);
        (&w * &c).sum(Kind::Float).backward();
        w
    }

    #[test]
    fn one_step_matches_tensorflow_by_hand() {
        let w = var_with_grad();
        let (lr, decay, eps) = (0.1, 0.9, 0.01);
        let mut opt = TfRmsProp::new(vec![w.shallow_clone()], lr, decay, eps, 1);
        opt.step();
        // g = 0.5: ms = 0.9 * 1 + 0.1 * 0.25 = 0.925, mg = 0.05,
        //   w = 1 - 0.1 * 0.5 / sqrt(0.925 - 0.0025 + 0.01) = 0.9482220...
        // g = -3:  ms = 0.9 + 0.1 * 9 = 1.8, mg = -0.3,
        //   w = -2 + 0.1 * 3 / sqrt(1.8 - 0.09 + 0.01) = -1.7712522...
        let got = Vec::<f32>::try_from(&w).unwrap();
        let want = [
            1.0 - 0.1 * 0.5 / (0.9325f64).sqrt(),
            -2.0 + 0.1 * 3.0 / (1.72f64).sqrt(),
        ];
        assert!((got[0] as f64 - 0.948_222_0).abs() < 1e-6, "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn epsilon_sits_inside_the_square_root() {
        // A constant gradient makes ms - mg^2 shrink towards 0, where only
        // epsilon bounds the step: TensorFlow's bound is lr / sqrt(eps),
        // libtorch's would be lr / eps, 10,000 times larger here.
        let w = Tensor::zeros([1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (lr, eps) = (1e-3, 1e-8);
        let mut opt = TfRmsProp::new(vec![w.shallow_clone()], lr, 0.5, eps, 1);
        let mut last = 0.0;
        for _ in 0..60 {
            let mut vars = [w.shallow_clone()];
            zero_grad(&mut vars);
            (&w * 1.0).sum(Kind::Float).backward();
            let before = w.double_value(&[0]);
            opt.step();
            last = before - w.double_value(&[0]);
        }
        assert!(last <= lr / eps.sqrt() * 1.0001, "step {last}");
        assert!(
            last > 1.0,
            "the step grows towards lr / sqrt(eps) = 10: {last}"
        );
    }

    #[test]
    fn fused_steps_follow_the_formula() {
        let _rng = crate::test_rng::seeded(9);
        let opts = (Kind::Float, Device::Cpu);
        let w = Tensor::randn([640, 333], opts).set_requires_grad(true);
        let (lr, decay, eps) = (1e-3, 0.95, 1.5e-7);
        let mut ours = TfRmsProp::new(vec![w.shallow_clone()], lr, decay, eps, 2);
        let mut want = w.detach().copy();
        let (mut ms, mut mg) = (
            Tensor::ones([640, 333], opts),
            Tensor::zeros([640, 333], opts),
        );
        for step in 0..5 {
            let g = Tensor::randn([640, 333], opts);
            zero_grad(&mut [w.shallow_clone()]);
            (&w * &g).sum(Kind::Float).backward();
            ours.step();
            ms = &ms * decay + g.square() * (1.0 - decay);
            mg = &mg * decay + &g * (1.0 - decay);
            let denom = ((&ms - mg.square()).clamp_min(0.0) + eps).sqrt();
            want = &want - &g / denom * lr;
            crate::optim::fused::assert_same_but_sqrt_rounding(&w, &want, &format!("step {step}"));
        }
        assert!(ours.mean_square[0].equal(&ms) && ours.mean_grad[0].equal(&mg));
    }

    #[test]
    fn state_round_trips() {
        let w = var_with_grad();
        let mut a = TfRmsProp::new(vec![w.shallow_clone()], 0.1, 0.9, 0.01, 1);
        a.step();
        let saved: HashMap<_, _> = a.state().into_iter().collect();
        let mut b = TfRmsProp::new(vec![w.copy()], 0.1, 0.9, 0.01, 1);
        assert!(!b.state()[0].1.equal(&a.state()[0].1));
        b.load_state(&saved).unwrap();
        for ((_, x), (_, y)) in a.state().iter().zip(b.state().iter()) {
            assert!(x.equal(y));
        }
    }
}
