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
    tch::no_grad(|| {
        let norms: Vec<Tensor> = vars
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .map(|g| g.norm())
            .collect();
        if norms.is_empty() {
            return 0.0;
        }
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
        let coef = max / (total + 1e-6);
        if coef < 1.0 {
            for v in vars {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
        }
        total
    })
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
