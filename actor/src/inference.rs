//! Forward passes on a thread of their own, answered in the order they were
//! asked for, so the stepping thread can step some environments while the
//! network values the others' observations.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::thread::JoinHandle;

use apex_model::policy::PolicyNet;
use apex_model::threads::set_torch_threads_here;

/// Observations of `n` environments, concatenated, and maybe a newer network
/// for this pass and the ones after it.
struct Pass {
    obs: Vec<u8>,
    n: usize,
    newer: Option<PolicyNet>,
}

/// Q-values of a pass, one row per observation, and its buffer to reuse.
struct Valued {
    q: Vec<f32>,
    obs: Vec<u8>,
}

pub struct Passes {
    runner: Runner,
    spare: Vec<Vec<u8>>,
}

enum Runner {
    /// The caller runs each pass when it asks: with one group there is
    /// nothing to step meanwhile, and handing passes to a thread that a busy
    /// machine has descheduled costs more than it saves.
    Inline {
        policy: PolicyNet,
        valued: VecDeque<Vec<f32>>,
        /// Set on the caller's thread at its first pass.
        torch_threads: Option<usize>,
    },
    Thread {
        /// Dropped first when stopping: the thread ends once it has valued
        /// what was asked before.
        asked: Option<mpsc::Sender<Pass>>,
        valued: mpsc::Receiver<Valued>,
        thread: Option<JoinHandle<()>>,
    },
}

impl Passes {
    /// Passes with `policy` on an inference thread (`threaded`) or on the
    /// caller's; `torch_threads` > 0 sets libtorch's threads for them (0:
    /// libtorch's default).
    pub fn start(
        policy: PolicyNet,
        torch_threads: usize,
        threaded: bool,
    ) -> std::io::Result<Passes> {
        let torch_threads = (torch_threads > 0).then_some(torch_threads);
        if !threaded {
            return Ok(Passes {
                runner: Runner::Inline {
                    policy,
                    valued: VecDeque::new(),
                    torch_threads,
                },
                spare: Vec::new(),
            });
        }
        let (asked, inbox) = mpsc::channel::<Pass>();
        let (outbox, valued) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("actor-inference".into())
            .spawn(move || {
                if let Some(threads) = torch_threads {
                    set_torch_threads_here(threads);
                }
                let mut policy = policy;
                for Pass { obs, n, newer } in inbox {
                    if let Some(newer) = newer {
                        policy = newer;
                    }
                    let q = policy.q_values(&obs, n);
                    if outbox.send(Valued { q, obs }).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Passes {
            runner: Runner::Thread {
                asked: Some(asked),
                valued,
                thread: Some(thread),
            },
            spare: Vec::new(),
        })
    }

    /// Asks for a pass over `observations`, with `newer` from this pass on.
    pub fn ask<'a>(
        &mut self,
        observations: impl IntoIterator<Item = &'a [u8]>,
        newer: Option<PolicyNet>,
    ) {
        let mut obs = self.spare.pop().unwrap_or_default();
        obs.clear();
        let mut n = 0;
        for o in observations {
            obs.extend_from_slice(o);
            n += 1;
        }
        match &mut self.runner {
            Runner::Inline {
                policy,
                valued,
                torch_threads,
            } => {
                if let Some(threads) = torch_threads.take() {
                    set_torch_threads_here(threads);
                }
                if let Some(newer) = newer {
                    *policy = newer;
                }
                valued.push_back(policy.q_values(&obs, n));
                self.spare.push(obs);
            }
            Runner::Thread { asked, .. } => {
                let asked = asked.as_ref().expect("asked after stopping");
                if asked.send(Pass { obs, n, newer }).is_err() {
                    self.thread_failed();
                }
            }
        }
    }

    /// Q-values of the oldest pass not yet taken, waiting for it if needed.
    pub fn take(&mut self) -> Vec<f32> {
        match &mut self.runner {
            Runner::Inline { valued, .. } => valued.pop_front().expect("a pass was asked for"),
            Runner::Thread { valued, .. } => match valued.recv() {
                Ok(Valued { q, obs }) => {
                    self.spare.push(obs);
                    q
                }
                Err(mpsc::RecvError) => self.thread_failed(),
            },
        }
    }

    /// The thread only ends early by panicking: pass its panic on.
    fn thread_failed(&mut self) -> ! {
        let thread = match &mut self.runner {
            Runner::Thread { thread, .. } => thread.take(),
            Runner::Inline { .. } => None,
        };
        match thread.map(JoinHandle::join) {
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            _ => panic!("the inference thread stopped"),
        }
    }
}

impl Drop for Passes {
    fn drop(&mut self) {
        if let Runner::Thread { asked, thread, .. } = &mut self.runner {
            asked.take();
            if let Some(thread) = thread.take() {
                // A panic there was passed on already or comes from stopping.
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use apex_model::{Arch, QNetConfig};

    use super::*;

    fn net() -> QNetConfig {
        QNetConfig::new(Arch::Mlp { hidden: 8 }, &[1, 2, 2], 3, false)
    }

    #[test]
    fn passes_come_back_in_order_and_match_the_network() {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _ = apex_model::QNet::new(&vs.root(), net());
        let weights = apex_model::save_weights(&vs).unwrap();
        let reference = PolicyNet::from_weights(net(), &weights, 1).unwrap();
        let copy = PolicyNet::from_weights(net(), &weights, 1).unwrap();
        let mut passes = Passes::start(copy, 1, true).unwrap();
        let batches: Vec<Vec<u8>> = (0..5u8)
            .map(|b| vec![b * 10; 4 * (b as usize + 1)])
            .collect();
        for b in &batches {
            passes.ask(b.chunks(4), None);
        }
        for b in &batches {
            assert_eq!(passes.take(), reference.q_values(b, b.len() / 4));
        }
    }

    /// Weights of a freshly initialised network.
    fn fresh() -> Vec<u8> {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _ = apex_model::QNet::new(&vs.root(), net());
        apex_model::save_weights(&vs).unwrap()
    }

    #[test]
    fn a_newer_network_serves_from_its_pass_on_in_either_runner() {
        let (old, new) = (fresh(), fresh());
        let policy = |w: &[u8]| PolicyNet::from_weights(net(), w, 1).unwrap();
        let obs = [7u8; 8];
        let (q_old, q_new) = (
            policy(&old).q_values(&obs, 2),
            policy(&new).q_values(&obs, 2),
        );
        assert_ne!(q_old, q_new, "two fresh networks differ");
        for threaded in [true, false] {
            let mut passes = Passes::start(policy(&old), 0, threaded).unwrap();
            passes.ask(obs.chunks(4), None);
            passes.ask(obs.chunks(4), Some(policy(&new)));
            passes.ask(obs.chunks(4), None);
            assert_eq!(passes.take(), q_old);
            assert_eq!(passes.take(), q_new);
            assert_eq!(passes.take(), q_new);
        }
    }
}
