//! Gradient helpers both optimizers' callers use: zeroing and joint-norm
//! clipping (the optimizers themselves only read the gradients). They take
//! gradient lists rather than variables, so that an update can work on
//! gradients that `Tensor::run_backward` returned without ever storing
//! them in the variables (see `Dqn::update`).

use tch::Tensor;

/// Zeroes the gradients that `vars` hold (before a `backward` that
/// accumulates into them).
pub fn zero_grad(vars: &mut [Tensor]) {
    for v in vars {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.detach_().zero_();
        }
    }
}

/// Scales `grads` so their joint L2 norm is at most `max` (as
/// `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &[Tensor], max: f64) -> f64 {
    let total = total_norm(grads).double_value(&[]);
    scale_to_norm(grads, total, max);
    total
}

/// The joint L2 norm of the defined tensors of `grads`, left on their
/// device (0 when none is defined): reading it is the caller's choice of
/// when to wait.
pub fn total_norm(grads: &[Tensor]) -> Tensor {
    tch::no_grad(|| {
        let norms: Vec<Tensor> = grads
            .iter()
            .filter(|g| g.defined())
            .map(Tensor::norm)
            .collect();
        if norms.is_empty() {
            return Tensor::from(0f32);
        }
        Tensor::stack(&norms, 0).norm()
    })
}

/// Scales `grads` in place, whose joint norm is `total`, down to a joint
/// norm of `max` if they are above it.
pub fn scale_to_norm(grads: &[Tensor], total: f64, max: f64) {
    let coef = max / (total + 1e-6);
    if coef < 1.0 {
        tch::no_grad(|| {
            for g in grads.iter().filter(|g| g.defined()) {
                let _ = g.shallow_clone().g_mul_scalar_(coef);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn clipping_scales_the_joint_norm() {
        let w = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        (&w * Tensor::from_slice(&[0.5f32, -3.0]))
            .sum(Kind::Float)
            .backward();
        let norm = clip_grad_norm(&[w.grad()], 1.0);
        assert!((norm - (0.25f64 + 9.0).sqrt()).abs() < 1e-5);
        let g = Vec::<f32>::try_from(w.grad()).unwrap();
        let clipped = ((g[0] * g[0] + g[1] * g[1]) as f64).sqrt();
        assert!((clipped - 1.0).abs() < 1e-4, "{clipped}");
    }
}
