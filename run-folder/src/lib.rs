//! The run folder's format in one place: the names of its files, the rows
//! of its CSV files (`rows.rs`), and the one way they are appended to and
//! read back (`table.rs`). Writers (the evaluator, `apex local`'s progress
//! reporter) and readers (`apex plot`) share these types, so the columns a
//! writer writes are the columns a reader asks for.

mod rows;
mod table;

pub use rows::{EvalRow, ProgressRow};
pub use table::{append, read, ReadError, Row};

/// Evaluation rounds: one row per protocol per round.
pub const EVAL_CSV: &str = "eval.csv";
/// `apex local`'s progress: one row per progress line.
pub const PROGRESS_CSV: &str = "progress.csv";
/// What a run resolved from its preset, variables and flags (itself a preset).
pub const CONFIG_TOML: &str = "config.toml";
