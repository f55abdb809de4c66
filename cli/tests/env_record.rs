//! `apex env record` end to end: the files it writes, reproducibility, and
//! one clear line and a non-zero exit for each kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn apex(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apex"))
        .args(args)
        .env_remove("APEX_ROM_DIR")
        .output()
        .unwrap()
}

fn record(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["env", "record", "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    apex(&args)
}

/// Fails with a single stderr line containing `needle`.
fn assert_clear_failure(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(needle), "'{needle}' not in: {err}");
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn writes_frames_steps_and_screens() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec");
    let o = record(&out, &["--steps", "120", "--seed", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (shape, frames) = apex_npy(&out.join("obs.npy"));
    assert_eq!(shape, vec![121, 84, 84]);
    assert!(frames.iter().any(|&p| p > 0), "frames are all black");
    let csv = String::from_utf8(read(out.join("steps.csv"))).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("step,action,reward,raw_reward,terminal,truncated,lives")
    );
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 120);
    assert!(rows
        .iter()
        .enumerate()
        .all(|(i, r)| r[0] == (i + 1).to_string() && r.len() == 7));
    assert!(
        rows.iter().all(|r| r[1].parse::<usize>().unwrap() < 4),
        "breakout's minimal set has 4 actions"
    );
    // Screens after reset and at steps 50 and 100, as 210x160 RGB PNGs.
    for step in [0, 50, 100] {
        let png = read(out.join(format!("screen_{step:06}.png")));
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 160);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 210);
    }
    assert!(!out.join("screen_000150.png").exists());
}

fn apex_npy(path: &Path) -> (Vec<usize>, Vec<u8>) {
    apex_media::npy::read_u8(std::fs::File::open(path).unwrap()).unwrap()
}

#[test]
fn same_seed_same_frames_and_other_seeds_differ() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, args: &[&str]| {
        let out = dir.path().join(name);
        let o = record(&out, args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (read(out.join("obs.npy")), read(out.join("steps.csv")))
    };
    for protocol in ["v4", "v5"] {
        let a = run(
            &format!("{protocol}-a"),
            &["--protocol", protocol, "--seed", "11", "--steps", "300"],
        );
        let b = run(
            &format!("{protocol}-b"),
            &["--protocol", protocol, "--seed", "11", "--steps", "300"],
        );
        let c = run(
            &format!("{protocol}-c"),
            &["--protocol", protocol, "--seed", "12", "--steps", "300"],
        );
        assert!(
            a == b,
            "{protocol}: the same seed gave different recordings"
        );
        assert!(
            a != c,
            "{protocol}: different seeds gave the same recording"
        );
    }
}

#[test]
fn an_actions_file_drives_the_game() {
    let dir = tempfile::tempdir().unwrap();
    let actions = dir.path().join("actions.txt");
    std::fs::write(&actions, "1\n2\n\n3\n0\n").unwrap();
    let out = dir.path().join("rec");
    let o = record(&out, &["--actions", actions.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = String::from_utf8(read(out.join("steps.csv"))).unwrap();
    let taken: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(taken, ["1", "2", "3", "0"]);
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec");
    let out_s = out.to_str().unwrap();

    assert_clear_failure(
        &record(&out, &["--game", "brekout"]),
        "unknown game 'brekout': use one of",
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = apex(&[
        "env",
        "record",
        "--out",
        out_s,
        "--rom-dir",
        empty.to_str().unwrap(),
    ]);
    assert_clear_failure(&o, "run scripts/setup.sh");

    let fake = dir.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(fake.join("breakout.bin"), vec![0u8; 2048]).unwrap();
    let o = apex(&[
        "env",
        "record",
        "--out",
        out_s,
        "--rom-dir",
        fake.to_str().unwrap(),
    ]);
    assert_clear_failure(&o, "is expected: replace it with the ROM");

    assert_clear_failure(
        &record(&out, &["--actions", "/nonexistent/actions.txt"]),
        "cannot read actions file",
    );

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "0\n1\nleft\n").unwrap();
    assert_clear_failure(
        &record(&out, &["--actions", bad.to_str().unwrap()]),
        "line 3: 'left'",
    );

    let far = dir.path().join("far.txt");
    std::fs::write(&far, "0\n4\n").unwrap();
    assert_clear_failure(
        &record(&out, &["--actions", far.to_str().unwrap()]),
        "action 4 (step 2) is out of range",
    );

    let short = dir.path().join("short.txt");
    std::fs::write(&short, "0\n1\n").unwrap();
    let o = record(
        &out,
        &["--actions", short.to_str().unwrap(), "--steps", "5"],
    );
    assert_clear_failure(&o, "holds 2 actions but 5 steps");

    // With the full action set, index 4 is valid.
    let o = record(
        &out,
        &["--actions", far.to_str().unwrap(), "--full-action-space"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn listing_games_into_a_closed_pipe_is_not_an_error() {
    // As in `apex env games | head -1`: the reader is gone before the list is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_apex"))
        .args(["env", "games"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{:?}: {err}", o.status);
    assert!(err.is_empty(), "{err}");
}
