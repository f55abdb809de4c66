//! Threads that each take one slice of a CPU batch through both networks
//! and back, on their share of the learner's libtorch threads (one apiece
//! on two cores). At batch 32 an operation split over two threads is too
//! small to keep both busy (a quarter of the samples go to OpenMP's
//! waiting, BENCHMARKS.md); two slices side by side keep each thread on
//! its own work until their gradients are added.

use std::sync::mpsc;
use std::thread::JoinHandle;

use apex_model::{QNet, QNetConfig};
use tch::{nn, Device, Tensor};

use crate::io::batch::Batch;
use crate::td_loss::{slice_loss, Nets, Scaled, Slice, SliceLoss, TdRule};

pub struct BatchWorkers {
    /// Per worker: its slices in, their losses out (a worker's own channel,
    /// so one that stopped is noticed instead of waited for).
    workers: Vec<(mpsc::Sender<Slice>, mpsc::Receiver<SliceLoss>)>,
    threads: Vec<JoinHandle<()>>,
}

/// A worker's own networks: its variables share storage with the learner's,
/// so every step and target sync is seen here without copying; being its
/// own leaves, its gradients never touch the learner's graph.
struct Shared {
    online: QNet,
    target: QNet,
    vars: Vec<Tensor>,
    /// Keep the variables alive.
    _stores: [nn::VarStore; 2],
}

impl Shared {
    fn new(net: QNetConfig, online: &[(String, Tensor)], target: &[(String, Tensor)]) -> Self {
        let online_vs = nn::VarStore::new(Device::Cpu);
        let online_net = QNet::new(&online_vs.root(), net);
        share(&online_vs, online);
        let mut target_vs = nn::VarStore::new(Device::Cpu);
        let target_net = QNet::new(&target_vs.root(), net);
        share(&target_vs, target);
        target_vs.freeze();
        let vars = crate::dqn::sorted(&online_vs)
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        Shared {
            online: online_net,
            target: target_net,
            vars,
            _stores: [online_vs, target_vs],
        }
    }
}

/// Points each variable of `vs` at the storage of the same-named tensor.
fn share(vs: &nn::VarStore, from: &[(String, Tensor)]) {
    let mut mine = vs.variables();
    assert_eq!(mine.len(), from.len(), "the same network on both sides");
    for (name, t) in from {
        let v = mine
            .get_mut(name)
            .expect("the same network has the same variable names");
        v.set_data(t);
    }
}

impl BatchWorkers {
    /// `count` workers of `threads` libtorch threads each, for the CPU
    /// networks whose variables are `online` and `target` (by name).
    pub fn start(
        count: usize,
        threads: usize,
        net: QNetConfig,
        rule: TdRule,
        online: &[(String, Tensor)],
        target: &[(String, Tensor)],
    ) -> std::io::Result<Self> {
        let (mut workers, mut handles, mut ready) = (Vec::new(), Vec::new(), Vec::new());
        for index in 0..count {
            let (up, is_up) = mpsc::channel::<()>();
            let (job, work) = mpsc::channel::<Slice>();
            let (results, done) = mpsc::channel();
            let shallow = |l: &[(String, Tensor)]| -> Vec<(String, Tensor)> {
                l.iter()
                    .map(|(n, t)| (n.clone(), t.shallow_clone()))
                    .collect()
            };
            let (online, target) = (shallow(online), shallow(target));
            let thread = std::thread::Builder::new()
                .name(format!("learner-batch-{index}"))
                .spawn(move || {
                    apex_model::threads::set_torch_threads_here(threads);
                    let shared = Shared::new(net, &online, &target);
                    // Its networks drew from libtorch's one generator: done
                    // before `start` returns, so the caller's draws after
                    // it are the same on every run.
                    let _ = up.send(());
                    let nets = Nets {
                        online: &shared.online,
                        target: &shared.target,
                        vars: &shared.vars,
                        rule,
                    };
                    let mut scaled = Scaled::new();
                    for slice in work {
                        let out = slice_loss(&nets, &slice, &mut scaled);
                        if results.send(out).is_err() {
                            return;
                        }
                    }
                })?;
            workers.push((job, done));
            handles.push(thread);
            ready.push(is_up);
        }
        for r in ready {
            r.recv().map_err(|_| {
                std::io::Error::other(
                    "a batch worker stopped while starting: its panic was printed above",
                )
            })?;
        }
        Ok(BatchWorkers {
            workers,
            threads: handles,
        })
    }

    /// Each worker's slice of `b`, in the batch's order (fewer slices than
    /// workers when the batch has fewer rows).
    pub fn run(&self, b: &Batch) -> Vec<SliceLoss> {
        let rows = b.len();
        let parts = self.workers.len().min(rows);
        let mut start = 0;
        for (i, (job, _)) in self.workers.iter().take(parts).enumerate() {
            // Sizes differ by at most one row.
            let len = rows / parts + usize::from(i < rows % parts);
            job.send(Slice::of(b, start as i64, len as i64))
                .expect("a batch worker stopped: its panic was printed above");
            start += len;
        }
        self.workers
            .iter()
            .take(parts)
            .map(|(_, done)| {
                done.recv()
                    .expect("a batch worker stopped: its panic was printed above")
            })
            .collect()
    }
}

impl Drop for BatchWorkers {
    fn drop(&mut self) {
        self.workers.clear();
        for t in self.threads.drain(..) {
            // A panic there was printed already.
            let _ = t.join();
        }
    }
}
