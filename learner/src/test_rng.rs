//! libtorch's generator is global: tests that draw from it take turns, so
//! each starts from its own seed whatever runs beside it.

use std::sync::{Mutex, MutexGuard};

static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Holds the generator, seeded with `seed`, until the guard drops.
pub fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    let guard = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    guard
}
