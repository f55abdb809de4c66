//! What the `apex` binary's integration tests share, from the system
//! tests' crate: running the binary, the Python venv, a clear failure.

#![allow(unused_imports)] // each test file uses its own part

pub use apex_system_tests::*;
