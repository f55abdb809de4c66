//! Training state as named tensors: what the optimizers and networks export
//! for a checkpoint, and the check that a saved state fits before anything
//! is overwritten (a half-restored learner would be worse than a fresh one).

use std::collections::HashMap;

use tch::{Kind, Tensor};

/// Named tensors; the names are stable across processes.
pub type NamedTensors = Vec<(String, Tensor)>;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("tensor '{0}' is missing")]
    Missing(String),
    #[error(
        "tensor '{name}' is {got:?} {got_kind:?} where {expected:?} {expected_kind:?} is expected"
    )]
    Shape {
        name: String,
        expected: Vec<i64>,
        expected_kind: Kind,
        got: Vec<i64>,
        got_kind: Kind,
    },
}

/// Checks that `saved` holds a tensor of the same shape and kind for every
/// tensor of `expected` (extra tensors are allowed).
pub fn check(
    expected: &[(String, Tensor)],
    saved: &HashMap<String, Tensor>,
) -> Result<(), StateError> {
    for (name, want) in expected {
        let got = saved
            .get(name)
            .ok_or_else(|| StateError::Missing(name.clone()))?;
        if got.size() != want.size() || got.kind() != want.kind() {
            return Err(StateError::Shape {
                name: name.clone(),
                expected: want.size(),
                expected_kind: want.kind(),
                got: got.size(),
                got_kind: got.kind(),
            });
        }
    }
    Ok(())
}

/// Copies `saved` into `into` (same names), after [`check`]ing all of them.
pub fn copy_into(
    into: &[(String, Tensor)],
    saved: &HashMap<String, Tensor>,
) -> Result<(), StateError> {
    check(into, saved)?;
    tch::no_grad(|| {
        for (name, dst) in into {
            let mut dst = dst.shallow_clone();
            dst.copy_(&saved[name]);
        }
    });
    Ok(())
}

/// The tensors of `saved` whose names start with `prefix`, without it.
pub fn strip_prefix(saved: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    saved
        .iter()
        .filter_map(|(n, t)| Some((n.strip_prefix(prefix)?.to_owned(), t.shallow_clone())))
        .collect()
}

/// `tensors` with `prefix` put in front of each name.
pub fn with_prefix(prefix: &str, tensors: NamedTensors) -> NamedTensors {
    tensors
        .into_iter()
        .map(|(n, t)| (format!("{prefix}{n}"), t))
        .collect()
}

/// Whether every element of every floating-point tensor is finite.
pub fn all_finite(tensors: &[(String, Tensor)]) -> bool {
    tensors.iter().all(|(_, t)| {
        !t.is_floating_point() || t.numel() == 0 || t.isfinite().all().int64_value(&[]) != 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn named(t: Tensor) -> NamedTensors {
        vec![("w".to_owned(), t)]
    }

    #[test]
    fn a_misfit_is_named_and_nothing_is_copied() {
        let into = named(Tensor::zeros([2], (Kind::Float, Device::Cpu)));
        let wrong: HashMap<_, _> = named(Tensor::ones([3], (Kind::Float, Device::Cpu)))
            .into_iter()
            .collect();
        assert!(matches!(
            copy_into(&into, &wrong),
            Err(StateError::Shape { .. })
        ));
        assert_eq!(into[0].1.sum(Kind::Float).double_value(&[]), 0.0);
        assert_eq!(
            copy_into(&into, &HashMap::new()),
            Err(StateError::Missing("w".into()))
        );
        let right: HashMap<_, _> = named(Tensor::ones([2], (Kind::Float, Device::Cpu)))
            .into_iter()
            .collect();
        copy_into(&into, &right).unwrap();
        assert_eq!(into[0].1.sum(Kind::Float).double_value(&[]), 2.0);
    }

    #[test]
    fn non_finite_values_are_found() {
        assert!(all_finite(&named(Tensor::from_slice(&[1.0f32, 2.0]))));
        assert!(!all_finite(&named(Tensor::from_slice(&[1.0f32, f32::NAN]))));
        assert!(!all_finite(&named(Tensor::from_slice(&[f32::INFINITY]))));
        assert!(all_finite(&named(Tensor::from_slice(&[i64::MAX]))));
    }
}
