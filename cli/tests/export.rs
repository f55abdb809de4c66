//! `apex export` end to end: a checkpoint exported to safetensors and loaded
//! by scripts/apex_qnet.py in PyTorch gives apex's own Q-values on real
//! Breakout observations; bad inputs are one clear line.

use std::io::Write;
use std::process::{Command, Output};

use apex_env::{AtariConfig, AtariEnv, Protocol};
use apex_media::npy;
use apex_model::{Arch, QNet, QNetConfig};
use rand::{Rng, SeedableRng};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

mod common;

use common::{assert_clear_failure, python, workspace};

fn apex(args: &[&str]) -> Output {
    common::apex(&[&["export"], args].concat())
}

/// `count` stacked observations from a random Breakout game.
fn breakout_observations(count: usize) -> Vec<u8> {
    let mut env = AtariEnv::new(&AtariConfig::new("breakout", Protocol::V4)).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    env.reset();
    let mut obs = Vec::new();
    for _ in 0..count {
        // A few steps apart so the frames in a stack differ.
        for _ in 0..3 {
            if env.step(rng.gen_range(0..env.num_actions())).done() {
                env.reset();
            }
        }
        obs.extend_from_slice(env.obs());
    }
    obs
}

/// Saves a network's weights, computes its Q-values here, exports it, and
/// returns PyTorch's report: its largest difference from apex's Q. A
/// network with a quantile head is saved as the learner's whole checkpoint,
/// whose meta tells the export its quantiles.
fn export_and_compare(config: QNetConfig, obs: &[u8], seed: i64) -> (f64, String) {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(seed);
    let mut vs = VarStore::new(Device::Cpu);
    let net = QNet::new(&vs.root(), config);
    let checkpoint = match config.quantiles {
        None => {
            let path = dir.path().join("checkpoint.ot");
            std::fs::write(&path, apex_model::save_weights(&vs).unwrap()).unwrap();
            path
        }
        Some(_) => {
            let dqn = apex_learner::dqn::Dqn::new(config, DQN, Device::Cpu).unwrap();
            apex_model::load_weights(&mut vs, &dqn.weights().unwrap()).unwrap();
            apex_learner::persist::checkpoint::save(dir.path(), &dqn, 1).unwrap()
        }
    };

    let [c, h, w] = config.obs_shape;
    let batch = obs.len() as i64 / (c * h * w);
    let q = tch::no_grad(|| {
        net.q_values(&Tensor::from_slice(obs).view([batch, c, h, w]))
            .to_kind(Kind::Float)
    });
    let q: Vec<f32> = Vec::try_from(q.flatten(0, -1)).unwrap();

    let obs_path = dir.path().join("obs.npy");
    let mut f = std::fs::File::create(&obs_path).unwrap();
    npy::write_u8_header(
        &mut f,
        &[batch as usize, c as usize, h as usize, w as usize],
    )
    .unwrap();
    f.write_all(obs).unwrap();
    let q_path = dir.path().join("q.f32");
    let q_bytes: Vec<u8> = q.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&q_path, q_bytes).unwrap();

    let model = dir.path().join("model.safetensors");
    let o = apex(&[
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let script = r#"
import sys
import numpy as np
import torch
sys.path.insert(0, sys.argv[1])
from apex_qnet import ApexQNet
net = ApexQNet.from_safetensors(sys.argv[2])
obs = torch.from_numpy(np.load(sys.argv[3]))
with torch.no_grad():
    q = net(obs).numpy()
want = np.fromfile(sys.argv[4], dtype="<f4").reshape(q.shape)
print(f"arch={net.arch} actions={net.actions} dueling={net.dueling} quantiles={net.n_quantiles}")
print(f"max_abs_diff={np.abs(q - want).max():.3e}")
"#;
    let o = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(workspace().join("scripts"))
        .args([&model, &obs_path, &q_path])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "python failed (is safetensors installed in .venv? run scripts/setup.sh): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let diff = stdout
        .lines()
        .find_map(|l| l.strip_prefix("max_abs_diff="))
        .unwrap_or_else(|| panic!("no difference reported: {stdout}"))
        .parse()
        .unwrap();
    // Shown with --nocapture: how close PyTorch came.
    eprintln!("{}", stdout.trim());
    (diff, stdout)
}

#[test]
fn pytorch_matches_apex_on_breakout_dueling_and_not() {
    let obs = breakout_observations(32);
    for (dueling, seed) in [(true, 1), (false, 2)] {
        let config = QNetConfig::new(Arch::Nature, &[4, 84, 84], 4, dueling);
        let (diff, report) = export_and_compare(config, &obs, seed);
        assert!(
            report.contains(&format!(
                "arch=nature actions=4 dueling={}",
                if dueling { "True" } else { "False" }
            )),
            "{report}"
        );
        assert!(diff <= 1e-5, "dueling={dueling}: PyTorch differs by {diff}");
    }
}

/// Settings of the learner whose checkpoint holds a quantile head.
const DQN: apex_learner::dqn::DqnConfig = apex_learner::dqn::DqnConfig {
    optimizer: apex_learner::dqn::Optimizer::Adam { eps: 1.5e-4 },
    learning_rate: 1e-4,
    learning_rate_decay: None,
    max_grad_norm: 10.0,
    target_update_every: 100,
    double: true,
    loss: apex_learner::dqn::TdLoss::Huber,
    munchausen: None,
};

#[test]
fn pytorch_matches_apex_for_a_quantile_head_dueling_and_not() {
    let obs = breakout_observations(8);
    for dueling in [true, false] {
        let config = QNetConfig::new(Arch::Nature, &[4, 84, 84], 4, dueling)
            .with_quantiles(apex_model::Quantiles::new(7).ok());
        let (diff, report) = export_and_compare(config, &obs, 5);
        assert!(report.contains("actions=4"), "{report}");
        assert!(report.contains("quantiles=7"), "{report}");
        assert!(diff <= 1e-5, "dueling={dueling}: PyTorch differs by {diff}");
    }
}

#[test]
fn pytorch_matches_apex_for_the_small_mlp() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let obs: Vec<u8> = (0..16 * 2 * 10 * 5).map(|_| rng.gen()).collect();
    let config = QNetConfig::new(Arch::Mlp { hidden: 32 }, &[2, 10, 5], 3, true);
    let (diff, report) = export_and_compare(config, &obs, 4);
    assert!(
        report.contains("arch=mlp actions=3 dueling=True"),
        "{report}"
    );
    assert!(diff <= 1e-5, "PyTorch differs by {diff}");
}

#[test]
fn bad_checkpoints_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.safetensors");
    let out = out.to_str().unwrap();
    let missing = dir.path().join("none.ot");
    assert_clear_failure(
        &apex(&["--checkpoint", missing.to_str().unwrap(), "--out", out]),
        "cannot read checkpoint",
    );
    let junk = dir.path().join("junk.ot");
    std::fs::write(&junk, b"this is not a checkpoint\n").unwrap();
    assert_clear_failure(
        &apex(&["--checkpoint", junk.to_str().unwrap(), "--out", out]),
        "is not an apex checkpoint",
    );
}
