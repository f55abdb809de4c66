//! Gradient helpers both optimizers' callers use: zeroing and joint-norm
//! clipping (the optimizers themselves only read the gradients).

use tch::Tensor;

/// Zeroes the gradients of `vars`.
pub fn zero_grad(vars: &mut [Tensor]) {
    for v in vars {
        let mut g = v.grad();
        if g.defined() {
            let _ = g.detach_().zero_();
        }
    }
}

/// Scales the gradients of `vars` so their joint L2 norm is at most `max`
/// (as `torch.nn.utils.clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(vars: &[Tensor], max: f64) -> f64 {
    let total = total_norm(vars).double_value(&[]);
    scale_to_norm(vars, total, max);
    total
}

/// The joint L2 norm of the gradients of `vars`, left on their device (0
/// without gradients): reading it is the caller's choice of when to wait.
pub fn total_norm(vars: &[Tensor]) -> Tensor {
    tch::no_grad(|| {
        let norms: Vec<Tensor> = vars
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .map(|g| g.norm())
            .collect();
        if norms.is_empty() {
            return Tensor::from(0f32);
        }
        Tensor::stack(&norms, 0).norm()
    })
}

/// Scales the gradients of `vars`, whose joint norm is `total`, down to a
/// joint norm of `max` if they are above it.
pub fn scale_to_norm(vars: &[Tensor], total: f64, max: f64) {
    let coef = max / (total + 1e-6);
    if coef < 1.0 {
        tch::no_grad(|| {
            for v in vars {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(coef);
                }
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
        let norm = clip_grad_norm(&[w.shallow_clone()], 1.0);
        assert!((norm - (0.25f64 + 9.0).sqrt()).abs() < 1e-5);
        let g = Vec::<f32>::try_from(w.grad()).unwrap();
        let clipped = ((g[0] * g[0] + g[1] * g[1]) as f64).sqrt();
        assert!((clipped - 1.0).abs() < 1e-4, "{clipped}");
    }
}
