//! The learner's checkpoint, `checkpoint.ot` in the run folder: the whole
//! training state as named tensors in libtorch's format.
//!
//! - the online network under its own names, so that the file still loads
//!   as plain weights (`apex eval`, `apex play`, `apex export`, actors);
//! - the target network under `target.`, the optimizer under `opt.`;
//! - `meta`, int64: [`MAGIC`, format, updates, weights version, then the
//!   network it fits (arch, hidden units, obs channels, height, width,
//!   actions, dueling), the optimizer, then the quantile head's count (0:
//!   the expected-value head; absent in files from before quantile heads)].
//!
//! A file without `meta` is an older learner's (online weights only): it
//! loads with the target a copy of the online network, a fresh optimizer and
//! counters at 0. A file that cannot be parsed, or that breaks its own meta,
//! is damaged; one that is sound but describes another network is a
//! configuration error, and is left where it is.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use apex_model::{Arch, QNetConfig, Quantiles};
use tch::{Device, Tensor};

use crate::dqn::{Dqn, Optimizer, Saved};
use crate::persist::durable;
use crate::persist::state::{self, with_prefix, StateError};

pub const FILE: &str = "checkpoint.ot";
/// The checkpoint before the newest, the fallback when that one is damaged.
pub const PREVIOUS: &str = "checkpoint.prev.ot";

const META: &str = "meta";
const TARGET: &str = "target.";
const OPTIMIZER: &str = "opt.";
/// "APEX": tells our meta from any other tensor of that name.
const MAGIC: i64 = 0x4150_4558;
const FORMAT: i64 = 1;
const META_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("checkpoint {path} belongs to another network ({differences}): start the learner with the game and network settings of the run that wrote it, or give it a new run folder")]
    OtherNetwork { path: PathBuf, differences: String },
    #[error("checkpoint {path} was written by a newer apex (format {found}, this one reads up to {FORMAT}): run a newer apex, or give the learner a new run folder")]
    NewerFormat { path: PathBuf, found: i64 },
    #[error("cannot read checkpoint {path}: {source}: check the run folder's permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write checkpoint in {dir}: {reason}: check the run folder's free space and permissions")]
    Write { dir: PathBuf, reason: String },
    #[error("cannot move damaged checkpoint {path} aside: {source}: move or delete it by hand")]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to save non-finite weights after {updates} updates")]
    NonFinite { updates: u64 },
}

/// What a checkpoint restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    pub path: PathBuf,
    pub updates: u64,
    /// The last weights version the learner that wrote it published.
    pub version: u64,
    /// Whether the optimizer's state came back (not for an older file's,
    /// nor when the optimizer setting changed since).
    pub optimizer: bool,
}

/// Whether a tensor of a checkpoint is one of the online network's weights
/// (the rest is training state: target network, optimizer, meta).
pub fn is_online_weight(name: &str) -> bool {
    name != META && !name.starts_with(TARGET) && !name.starts_with(OPTIMIZER)
}

/// The quantile head's count that a checkpoint's meta records, if its
/// network has one (none for an expected-value head, or a file without meta).
pub fn saved_quantiles(tensors: &[(String, Tensor)]) -> Option<Quantiles> {
    let (_, meta) = tensors.iter().find(|(name, _)| name == META)?;
    let v = meta_values(meta).ok()?;
    Meta::decode(&v).ok()?.net.quantiles
}

/// The named tensors of a checkpoint file's bytes, always on the CPU: each
/// tensor records the device it was saved from (`cuda:0` for a GPU
/// learner's), and loading to that device fails where it is missing (the
/// actor image, a laptop). Every reader of checkpoints goes through here;
/// the learner copies what it restores onto its own device.
pub fn read_tensors(bytes: &[u8]) -> Result<Vec<(String, Tensor)>, tch::TchError> {
    Tensor::load_multi_from_stream_with_device(Cursor::new(bytes), Device::Cpu)
}

/// Writes the whole state of `dqn` to `dir/checkpoint.ot` durably, keeping
/// the one it replaces as `checkpoint.prev.ot`; `version` is the last
/// weights version published.
pub fn save(dir: &Path, dqn: &Dqn, version: u64) -> Result<PathBuf, CheckpointError> {
    if !dqn.is_finite() {
        return Err(CheckpointError::NonFinite {
            updates: dqn.updates(),
        });
    }
    let write_error = |reason: String| CheckpointError::Write {
        dir: dir.to_owned(),
        reason,
    };
    let mut tensors = dqn.online_state();
    tensors.extend(with_prefix(TARGET, dqn.target_state()));
    tensors.extend(with_prefix(OPTIMIZER, dqn.optimizer_state()));
    tensors.push((META.to_owned(), meta(dqn, version)));
    let mut bytes = Vec::new();
    Tensor::save_multi_to_stream(&tensors, &mut bytes).map_err(|e| write_error(first_line(&e)))?;
    std::fs::create_dir_all(dir).map_err(|e| write_error(e.to_string()))?;
    durable::replace(dir, FILE, PREVIOUS, &bytes).map_err(|e| write_error(e.to_string()))?;
    Ok(dir.join(FILE))
}

/// Restores `dqn` from `dir`'s newest readable checkpoint. A damaged one is
/// moved aside (logged) and the previous one tried; `None` when there is
/// none to resume from. `dqn` is unchanged unless a checkpoint loaded.
pub fn resume(dir: &Path, dqn: &mut Dqn) -> Result<Option<Resumed>, CheckpointError> {
    let mut found = false;
    for name in [FILE, PREVIOUS] {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        found = true;
        match load(&path, dqn) {
            Ok(resumed) => return Ok(Some(resumed)),
            Err(CheckpointError::Damaged { path, reason }) => {
                let aside =
                    durable::move_aside(&path).map_err(|source| CheckpointError::MoveAside {
                        path: path.clone(),
                        source,
                    })?;
                tracing::error!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    %reason,
                    "damaged checkpoint moved aside; trying the previous one"
                );
            }
            Err(e) => return Err(e),
        }
    }
    if found {
        tracing::warn!(dir = %dir.display(), "no readable checkpoint: training starts afresh");
    }
    Ok(None)
}

/// Loads one checkpoint file into `dqn`; on error `dqn` is unchanged.
pub fn load(path: &Path, dqn: &mut Dqn) -> Result<Resumed, CheckpointError> {
    let damaged = |reason: String| CheckpointError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read {
        path: path.to_owned(),
        source,
    })?;
    let tensors: HashMap<String, Tensor> = read_tensors(&bytes)
        .map_err(|e| damaged(first_line(&e)))?
        .into_iter()
        .collect();
    let Some(meta) = tensors.get(META) else {
        return load_weights_only(path, &tensors, dqn);
    };
    let values = meta_values(meta).map_err(damaged)?;
    if values[1] > FORMAT {
        return Err(CheckpointError::NewerFormat {
            path: path.to_owned(),
            found: values[1],
        });
    }
    let meta = Meta::decode(&values).map_err(damaged)?;
    let differences = differences(&meta.net, &dqn.net());
    if !differences.is_empty() {
        return Err(CheckpointError::OtherNetwork {
            path: path.to_owned(),
            differences: differences.join(", "),
        });
    }
    let target = state::strip_prefix(&tensors, TARGET);
    let same_optimizer = meta.optimizer == optimizer_code(&dqn.config().optimizer);
    let optimizer = same_optimizer.then(|| state::strip_prefix(&tensors, OPTIMIZER));
    if !finite(&tensors) {
        return Err(damaged("it holds non-finite values".into()));
    }
    dqn.restore(Saved {
        online: &tensors,
        target: Some(&target),
        optimizer: optimizer.as_ref(),
        updates: meta.updates,
    })
    .map_err(|e| damaged(format!("its tensors break its own description: {e}")))?;
    if !same_optimizer {
        tracing::warn!(
            path = %path.display(),
            optimizer = dqn.config().optimizer.name(),
            "the checkpoint was trained with another optimizer: its state is dropped and this one starts afresh"
        );
    }
    Ok(Resumed {
        path: path.to_owned(),
        updates: meta.updates,
        version: meta.version,
        optimizer: same_optimizer,
    })
}

/// An older learner's checkpoint: the online weights alone.
fn load_weights_only(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    dqn: &mut Dqn,
) -> Result<Resumed, CheckpointError> {
    // The file parsed, so a misfit means another network, not damage.
    state::check(&dqn.online_state(), tensors).map_err(|e| CheckpointError::OtherNetwork {
        path: path.to_owned(),
        differences: match e {
            StateError::Missing(name) => format!("it has no '{name}'"),
            StateError::Shape {
                name,
                expected,
                got,
                ..
            } => format!("its '{name}' is {got:?}, this network's is {expected:?}"),
        },
    })?;
    if !finite(tensors) {
        return Err(CheckpointError::Damaged {
            path: path.to_owned(),
            reason: "it holds non-finite weights".into(),
        });
    }
    dqn.restore(Saved {
        online: tensors,
        target: None,
        optimizer: None,
        updates: 0,
    })
    .expect("checked above");
    tracing::info!(path = %path.display(), "an older checkpoint with weights only: the target network is a copy of them and the optimizer starts afresh");
    Ok(Resumed {
        path: path.to_owned(),
        updates: 0,
        version: 0,
        optimizer: false,
    })
}

struct Meta {
    updates: u64,
    version: u64,
    net: QNetConfig,
    optimizer: i64,
}

fn meta(dqn: &Dqn, version: u64) -> Tensor {
    let net = dqn.net();
    let (arch, hidden) = match net.arch {
        Arch::Nature => (0, 0),
        Arch::Mlp { hidden } => (1, hidden),
    };
    let [c, h, w] = net.obs_shape;
    Tensor::from_slice(&[
        MAGIC,
        FORMAT,
        dqn.updates() as i64,
        version as i64,
        arch,
        hidden,
        c,
        h,
        w,
        net.actions,
        net.dueling as i64,
        optimizer_code(&dqn.config().optimizer),
        net.quantiles.map_or(0, Quantiles::get),
    ])
}

/// The meta tensor's values, once they are known to be ours.
fn meta_values(t: &Tensor) -> Result<Vec<i64>, String> {
    let v = Vec::<i64>::try_from(t.flatten(0, -1))
        .map_err(|_| format!("its meta is {:?}, not int64", t.kind()))?;
    if v.len() < 2 || v[0] != MAGIC {
        return Err("its meta is not an apex learner's".into());
    }
    Ok(v)
}

impl Meta {
    fn decode(v: &[i64]) -> Result<Meta, String> {
        let corrupt = || format!("its meta is corrupt: {v:?}");
        if v.len() < META_LEN || v[1] < 1 || v[2] < 0 || v[3] < 0 {
            return Err(corrupt());
        }
        let quantiles = match v.get(META_LEN).copied() {
            None | Some(0) => None,
            Some(n) => Some(Quantiles::new(n).map_err(|_| corrupt())?),
        };
        let arch = match (v[4], v[5]) {
            (0, _) => Arch::Nature,
            (1, hidden) if hidden > 0 => Arch::Mlp { hidden },
            _ => return Err(corrupt()),
        };
        Ok(Meta {
            updates: v[2] as u64,
            version: v[3] as u64,
            net: QNetConfig {
                arch,
                obs_shape: [v[6], v[7], v[8]],
                actions: v[9],
                dueling: v[10] != 0,
                quantiles,
            },
            optimizer: v[11],
        })
    }
}

fn optimizer_code(o: &Optimizer) -> i64 {
    match o {
        Optimizer::Adam { .. } => 0,
        Optimizer::CentredRmsProp { .. } => 1,
    }
}

/// The settings in which `saved` differs from `ours`, in words.
fn differences(saved: &QNetConfig, ours: &QNetConfig) -> Vec<String> {
    let arch = |a: &Arch| match a {
        Arch::Nature => "the Nature CNN".to_owned(),
        Arch::Mlp { hidden } => format!("an MLP of {hidden} units"),
    };
    let head = |dueling: bool| if dueling { "dueling" } else { "plain" };
    let mut out = Vec::new();
    if saved.arch != ours.arch {
        out.push(format!(
            "network: {} in the checkpoint, {} here",
            arch(&saved.arch),
            arch(&ours.arch)
        ));
    }
    if saved.obs_shape != ours.obs_shape {
        out.push(format!(
            "observations: {:?} in the checkpoint, {:?} here",
            saved.obs_shape, ours.obs_shape
        ));
    }
    if saved.actions != ours.actions {
        out.push(format!(
            "actions: {} in the checkpoint, {} here (another game?)",
            saved.actions, ours.actions
        ));
    }
    let values = |q: Option<Quantiles>| match q {
        None => "expected values".to_owned(),
        Some(n) => format!("{} quantiles", n.get()),
    };
    if saved.quantiles != ours.quantiles {
        out.push(format!(
            "returns: {} in the checkpoint, {} here (--quantiles)",
            values(saved.quantiles),
            values(ours.quantiles)
        ));
    }
    if saved.dueling != ours.dueling {
        out.push(format!(
            "head: {} in the checkpoint, {} here",
            head(saved.dueling),
            head(ours.dueling)
        ));
    }
    out
}

fn finite(tensors: &HashMap<String, Tensor>) -> bool {
    let named: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    state::all_finite(&named)
}

/// libtorch's messages run on with a C++ backtrace: keep the first line.
fn first_line(e: &tch::TchError) -> String {
    e.to_string().lines().next().unwrap_or("").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dqn::DqnConfig;

    fn dqn(actions: usize, dueling: bool) -> Dqn {
        dqn_on(Device::Cpu, actions, dueling)
    }

    fn dqn_on(device: Device, actions: usize, dueling: bool) -> Dqn {
        let _rng = crate::test_rng::seeded(actions as i64);
        let net = QNetConfig::new(Arch::Mlp { hidden: 8 }, &[1, 2, 2], actions, dueling);
        let config = DqnConfig {
            optimizer: Optimizer::Adam { eps: 1e-8 },
            learning_rate: 1e-3,
            learning_rate_decay: None,
            max_grad_norm: 10.0,
            target_update_every: 100,
            double: true,
            loss: crate::dqn::TdLoss::Huber,
            munchausen: None,
        };
        Dqn::new(net, config, device).unwrap()
    }

    #[test]
    fn another_network_is_a_configuration_error_and_stays_put() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &dqn(3, true), 7).unwrap();
        let path = dir.path().join(FILE);
        let err = resume(dir.path(), &mut dqn(4, false)).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, CheckpointError::OtherNetwork { .. }),
            "{message}"
        );
        assert!(
            message.contains("actions: 3 in the checkpoint, 4 here"),
            "{message}"
        );
        assert!(
            message.contains("head: dueling in the checkpoint, plain here"),
            "{message}"
        );
        assert!(path.exists(), "a sound checkpoint is never moved aside");
    }

    #[test]
    fn an_older_weights_only_checkpoint_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let old = dqn(3, true);
        let path = dir.path().join(FILE);
        std::fs::write(&path, old.weights().unwrap()).unwrap();
        let mut new = dqn(3, true);
        let resumed = resume(dir.path(), &mut new).unwrap().unwrap();
        assert_eq!(
            (resumed.updates, resumed.version, resumed.optimizer),
            (0, 0, false)
        );
        for ((name, a), (_, b)) in old.online_state().iter().zip(new.online_state().iter()) {
            assert!(a.equal(b), "{name}");
        }
        for ((name, a), (_, b)) in new.online_state().iter().zip(new.target_state().iter()) {
            assert!(a.equal(b), "target {name} starts as the online weights");
        }
        // Weights of another network, in the old format: not damage either.
        let err = load(&path, &mut dqn(2, true)).unwrap_err();
        assert!(matches!(err, CheckpointError::OtherNetwork { .. }), "{err}");
    }

    #[test]
    fn a_newer_format_is_not_mistaken_for_damage() {
        let dir = tempfile::tempdir().unwrap();
        let d = dqn(3, true);
        let mut tensors = d.online_state();
        tensors.push((META.into(), Tensor::from_slice(&[MAGIC, FORMAT + 1])));
        let path = dir.path().join(FILE);
        Tensor::save_multi(&tensors, &path).unwrap();
        let err = resume(dir.path(), &mut dqn(3, true)).unwrap_err();
        assert!(matches!(err, CheckpointError::NewerFormat { .. }), "{err}");
        assert!(path.exists());
    }

    #[test]
    fn non_finite_weights_are_never_saved_nor_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let d = dqn(3, true);
        save(dir.path(), &d, 1).unwrap();
        tch::no_grad(|| {
            let _ = d.online_state()[0].1.shallow_clone().fill_(f64::NAN);
        });
        assert!(matches!(
            save(dir.path(), &d, 2),
            Err(CheckpointError::NonFinite { .. })
        ));
        assert!(!dir.path().join(PREVIOUS).exists(), "nothing was replaced");
        // A file holding NaN (written by other means) is damaged.
        let mut tensors = d.online_state();
        tensors.extend(with_prefix(TARGET, d.target_state()));
        tensors.extend(with_prefix(OPTIMIZER, d.optimizer_state()));
        tensors.push((META.into(), meta(&d, 2)));
        Tensor::save_multi(&tensors, dir.path().join(FILE)).unwrap();
        let err = load(&dir.path().join(FILE), &mut dqn(3, true)).unwrap_err();
        assert!(matches!(err, CheckpointError::Damaged { .. }), "{err}");
    }

    /// Whether every tensor of `a` equals its namesake in `b`, wherever each lives.
    fn same(a: &state::NamedTensors, b: &state::NamedTensors) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|((n, x), (m, y))| {
                n == m && x.to_device(Device::Cpu).equal(&y.to_device(Device::Cpu))
            })
    }

    /// The file is read on the CPU whichever device wrote it, and restored
    /// onto the learner's own device. (That a `cuda:0` file reads without a
    /// GPU is tested everywhere by the cli's tests/cuda_checkpoint.rs.)
    #[test]
    #[ignore = "needs a CUDA device"]
    fn a_checkpoint_moves_between_a_cuda_learner_and_a_cpu_one() {
        assert!(
            tch::Cuda::is_available(),
            "this test needs a CUDA device: run it where nvidia-smi works"
        );
        let cuda = Device::Cuda(0);
        for (from, into) in [(cuda, Device::Cpu), (Device::Cpu, cuda)] {
            let dir = tempfile::tempdir().unwrap();
            let saved = dqn_on(from, 3, true);
            let mut restored = dqn_on(into, 3, true);
            tch::no_grad(|| {
                for (_, t) in restored.online_state() {
                    let _ = t.shallow_clone().zero_();
                }
            });
            assert!(!same(&saved.online_state(), &restored.online_state()));
            save(dir.path(), &saved, 5).unwrap();
            let bytes = std::fs::read(dir.path().join(FILE)).unwrap();
            // Read as it is, each weight goes back to the device that wrote it.
            let raw = Tensor::load_multi_from_stream(Cursor::new(&bytes)).unwrap();
            assert!(raw
                .iter()
                .filter(|(n, _)| is_online_weight(n))
                .all(|(_, t)| t.device() == from));
            let read = read_tensors(&bytes).unwrap();
            assert!(read.iter().all(|(_, t)| t.device() == Device::Cpu));

            let r = load(&dir.path().join(FILE), &mut restored).unwrap();
            assert_eq!((r.version, r.optimizer), (5, true));
            assert!(same(&saved.online_state(), &restored.online_state()));
            assert!(same(&saved.target_state(), &restored.target_state()));
            assert!(same(&saved.optimizer_state(), &restored.optimizer_state()));
            for (name, t) in restored
                .online_state()
                .iter()
                .chain(&restored.target_state())
            {
                assert_eq!(t.device(), into, "{name} left the learner's device");
            }
        }
    }
}
