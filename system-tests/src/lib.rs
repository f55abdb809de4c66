//! System tests: the `apex` binary started as users start it, as separate
//! processes (killed, restarted, cut off from each other), and driven by
//! the repository's scripts. This crate holds what they share: finding the
//! built binary, running it, the repository's Python venv, the shape of a
//! clear failure, and the command lines the documentation shows. The
//! binary's own command-line tests (`cli/tests`) and the bench's use it too.

pub mod doc_commands;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `apex` binary of the build these tests belong to:
/// `target/<profile>/apex`, beside the `deps/` folder holding the test
/// executable. Panics with what to run when it is not built (cargo builds
/// it for `cargo test --workspace`, not for this crate's tests alone).
pub fn apex_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = profile_dir.join(format!("apex{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build --release -p apex), or run \
         the whole suite (cargo test --workspace --release)",
        bin.display()
    );
    bin
}

/// Runs `apex ARGS` with no preset chosen by the caller's environment.
pub fn apex<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(apex_bin())
        .args(args)
        .env_remove("APEX_PRESET")
        .output()
        .unwrap()
}

/// `apex local` on Catch with its run folder `run` and the flags `extra`.
pub fn local_catch(run: &Path, extra: &[&str]) -> Output {
    let base = [
        "local",
        "--game",
        "catch",
        "--run-dir",
        run.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    apex(&[&base, extra].concat())
}

/// `apex eval` of a checkpoint on Catch: `games` greedy games (epsilon 0).
pub fn eval_catch(checkpoint: &Path, games: usize) -> Output {
    apex(&[
        "eval",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--game",
        "catch",
        "--epsilon",
        "0",
        "--episodes",
        &games.to_string(),
    ])
}

/// `apex play` of a checkpoint on Catch: `games` games into `gif`.
pub fn play_catch(checkpoint: &Path, gif: &Path, games: usize) -> Output {
    apex(&[
        "play",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--game",
        "catch",
        "--gif",
        gif.to_str().unwrap(),
        "--episodes",
        &games.to_string(),
    ])
}

/// The command's stdout, after checking that it succeeded.
pub fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{out}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Fails with exit 1 and a single stderr line containing `needle`.
pub fn assert_clear_failure(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The venv's python (torch, tensorboard, safetensors); scripts/setup.sh makes it.
pub fn python() -> PathBuf {
    let python = workspace().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh first",
        python.display()
    );
    python
}

/// Runs a Python snippet with the venv's python and `arg` as sys.argv[1];
/// each line it prints, split at spaces.
pub fn python_rows(script: &str, arg: &Path) -> Vec<Vec<String>> {
    let o = Command::new(python())
        .args(["-c", script, arg.to_str().unwrap()])
        .output()
        .unwrap();
    ok(&o)
        .lines()
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect()
}
