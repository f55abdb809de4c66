//! A GPU learner's checkpoint reads on a machine without a GPU: `apex eval`,
//! `apex play`, `apex export` and a resumed CPU learner all take it. Each
//! tensor of such a file records `cuda:0`; here that file is a CPU run's
//! checkpoint with its storage locations rewritten
//! (`tests/fixtures/relocate_storages.py`), so the tests run anywhere.
//! A damaged file still reads as damaged, whatever device it names.

use std::path::{Path, PathBuf};
use std::process::Output;

use apex_learner::persist::checkpoint::{self, FILE};
use tch::{Device, Tensor};

mod common;

use common::{apex, assert_clear_failure, eval_catch, local_catch, ok, play_catch, python};

/// Copies the libtorch archive `src` to `dst` with every tensor recording
/// `cuda:0` as its device, as a GPU learner writes it.
fn relocate_to_cuda(src: &Path, dst: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/relocate_storages.py");
    let o = std::process::Command::new(python())
        .arg(script)
        .args([src, dst])
        .arg("cuda:0")
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(out.contains("storages to cuda:0"), "{out}");
    // It really names a device this machine lacks: libtorch refuses it
    // unless told where to put it (what `apex eval` did before).
    if !tch::Cuda::is_available() {
        let bytes = std::fs::read(dst).unwrap();
        let refused = Tensor::load_multi_from_stream(std::io::Cursor::new(bytes));
        assert!(refused.is_err(), "{} loads without CUDA", dst.display());
    }
}

fn read(path: &Path) -> Vec<(String, Tensor)> {
    checkpoint::read_tensors(&std::fs::read(path).unwrap()).unwrap()
}

/// The learner's update count, from a checkpoint's `meta` tensor.
fn updates(path: &Path) -> i64 {
    let tensors = read(path);
    let meta = &tensors.iter().find(|(n, _)| n == "meta").unwrap().1;
    Vec::<i64>::try_from(meta).unwrap()[2]
}

/// A short Catch run in `run` (resuming what is there); its stderr.
fn train_catch(run: &Path) -> String {
    let o = local_catch(
        run,
        &[
            "--actors",
            "1",
            "--envs",
            "4",
            "--max-env-steps",
            "2000",
            "--min-size",
            "300",
            "--capacity",
            "5000",
            "--batch-size",
            "32",
            // Inserts wait for the learner: about one update per 8 agent steps.
            "--error-buffer",
            "256",
            "--eval-episodes",
            "0",
        ],
    );
    ok(&o);
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A trained Catch checkpoint as a GPU learner would have written it, in
/// its own run folder `dir/gpu`; and the CPU original.
fn gpu_checkpoint(dir: &Path) -> (PathBuf, PathBuf) {
    let cpu_run = dir.join("cpu");
    train_catch(&cpu_run);
    let gpu_run = dir.join("gpu");
    std::fs::create_dir(&gpu_run).unwrap();
    let (cpu, gpu) = (cpu_run.join(FILE), gpu_run.join(FILE));
    relocate_to_cuda(&cpu, &gpu);
    (cpu, gpu)
}

fn export(checkpoint: &Path, out: &Path) -> Output {
    apex(&[
        "export",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

/// Files in `dir` that a damaged checkpoint was moved aside to.
fn moved_aside(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".corrupt-"))
        .collect()
}

#[test]
fn a_trained_checkpoint_from_a_gpu_evaluates_plays_exports_and_resumes_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let (cpu, gpu) = gpu_checkpoint(dir.path());
    let trained = updates(&cpu);
    assert!(trained > 0, "the run trained");

    // Read on the CPU, every tensor is the CPU file's.
    let (a, b) = (read(&cpu), read(&gpu));
    assert_eq!(a.len(), b.len());
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(name, other);
        assert_eq!(y.device(), Device::Cpu, "{name}");
        assert!(x.equal(y), "{name} differs");
    }

    // The same network plays the same games (greedy, same seeds).
    let scores = ok(&eval_catch(&gpu, 20));
    assert!(scores.contains("catch under v4, 20 games"), "{scores}");
    assert_eq!(scores, ok(&eval_catch(&cpu, 20)));

    let gif = dir.path().join("gpu.gif");
    let played = ok(&play_catch(&gpu, &gif, 1));
    assert!(played.contains("1 game(s)"), "{played}");
    assert!(std::fs::metadata(&gif).unwrap().len() > 0);

    let exported = |checkpoint: &Path, name: &str| {
        let out = dir.path().join(name);
        ok(&export(checkpoint, &out));
        std::fs::read(out).unwrap()
    };
    assert_eq!(
        exported(&gpu, "gpu.safetensors"),
        exported(&cpu, "cpu.safetensors"),
        "the same weights exported"
    );

    // A CPU learner resumes from it and trains on: not moved aside as damaged.
    let gpu_run = gpu.parent().unwrap();
    let log = train_catch(gpu_run);
    assert!(log.contains("resumed from checkpoint"), "{log}");
    assert!(moved_aside(gpu_run).is_empty(), "{log}");
    let resumed = updates(&gpu);
    println!("trained {trained} updates on the CPU; resumed from cuda:0 to {resumed}");
    assert!(resumed > trained, "{resumed} updates after {trained}");
}

#[test]
fn a_damaged_checkpoint_is_damaged_whatever_device_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let (_, gpu) = gpu_checkpoint(dir.path());
    let bytes = std::fs::read(&gpu).unwrap();
    let truncated = dir.path().join("truncated.ot");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.ot");
    std::fs::write(&garbage, b"PK\x03\x04 not a checkpoint at all\n").unwrap();
    let (gif, out) = (dir.path().join("x.gif"), dir.path().join("x.safetensors"));
    for bad in [&truncated, &garbage] {
        for o in [
            eval_catch(bad, 1),
            play_catch(bad, &gif, 1),
            export(bad, &out),
        ] {
            assert_clear_failure(
                &o,
                &format!("{} is not an apex checkpoint (", bad.display()),
            );
            assert_clear_failure(
                &o,
                "give the checkpoint.ot that apex local or apex learner wrote",
            );
        }
    }

    // The learner moves it aside and starts afresh.
    std::fs::write(&gpu, &bytes[..bytes.len() / 2]).unwrap();
    let gpu_run = gpu.parent().unwrap();
    let log = train_catch(gpu_run);
    assert!(log.contains("damaged checkpoint moved aside"), "{log}");
    assert!(!log.contains("resumed from checkpoint"), "{log}");
    assert_eq!(moved_aside(gpu_run).len(), 1);
}
