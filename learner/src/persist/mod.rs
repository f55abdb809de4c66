//! The learner's state on disk: checkpoints and resuming from them
//! (`checkpoint.rs`), training state as named tensors (`state.rs`), and
//! files that survive a crash at any moment (`durable.rs`).

pub mod checkpoint;
pub(crate) mod durable;
pub mod state;
