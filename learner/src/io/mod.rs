//! The learner's traffic: batches in from the replay server (`prefetch.rs`,
//! `batch.rs`, `upload.rs`), priorities back (`priorities.rs`), weights out
//! to actors and the evaluator (`weights.rs`), the retry policy they share
//! (`retry.rs`), and TensorBoard scalars (`summaries.rs`).

pub mod batch;
pub mod prefetch;
pub(crate) mod priorities;
pub(crate) mod retry;
pub(crate) mod summaries;
pub mod upload;
pub mod weights;
