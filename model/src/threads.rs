//! libtorch's intra-op thread count per thread: actors' inference threads
//! and the learner's batch workers each run on one thread of their own
//! beside a learner that keeps the process's count.

use std::sync::{Mutex, PoisonError};

/// libtorch keeps one thread count for the process, which each thread copies
/// at its first parallel operation (OpenMP's per-thread setting). This sets
/// the calling thread's count and puts the process's back from a passing
/// thread, so a learner in the same process keeps its own.
pub fn set_torch_threads_here(threads: usize) {
    // Two callers interleaving (actors starting together) would read each
    // other's passing count as the process's and leave it behind.
    let _one_at_a_time = PROCESS_THREADS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let process = tch::get_num_threads();
    tch::set_num_threads(threads as i32);
    let _ = std::thread::spawn(move || tch::set_num_threads(process)).join();
}

/// libtorch's intra-op thread count on the calling thread. Read it once,
/// where a service starts, and pass the number on: the count is per thread,
/// and threads that later ask may have been set to another.
pub fn torch_threads_here() -> usize {
    usize::try_from(tch::get_num_threads()).unwrap_or(1).max(1)
}

/// Held while [`set_torch_threads_here`] changes the process's count.
static PROCESS_THREADS: Mutex<()> = Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_threads_are_set_for_the_calling_thread_only() {
        // Other tests set their threads' counts meanwhile: read the
        // process's count when none is changing it.
        let process_count = || {
            let _none_changing = PROCESS_THREADS.lock().unwrap();
            std::thread::spawn(tch::get_num_threads).join().unwrap()
        };
        let process = process_count();
        let here = std::thread::spawn(move || {
            set_torch_threads_here(process as usize + 1);
            tch::get_num_threads()
        })
        .join()
        .unwrap();
        assert_eq!(here, process + 1);
        let later = process_count();
        assert_eq!(
            later, process,
            "a thread started later has the process's count"
        );
    }
}
