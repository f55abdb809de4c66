//! Optimizer maths: Adam and TensorFlow's centred RMSProp as their papers'
//! reference code computes them, their one-pass CPU step (`fused.rs`), and
//! the gradient helpers around them (`grad.rs`).

pub mod adam;
pub(crate) mod fused;
pub mod grad;
pub mod rmsprop;
