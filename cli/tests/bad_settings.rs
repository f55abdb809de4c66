//! Settings that can never work are refused at start with one line and
//! exit 1, before any service starts.

mod common;

use common::{apex, assert_clear_failure};

#[test]
fn impossible_settings_fail_at_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let local = |extra: &[&str]| {
        let mut args = vec![
            "local",
            "--game",
            "catch",
            "--metrics-addr",
            "127.0.0.1:0",
            "--run-dir",
            run.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        apex(&args)
    };
    assert_clear_failure(&local(&["--envs", "0"]), "--envs must be at least 1");
    assert_clear_failure(
        &local(&["--min-size", "200", "--capacity", "100"]),
        "--min-size 200 is more than --capacity 100",
    );
    assert_clear_failure(
        &apex(&["actor", "--game", "catch", "--envs", "0"]),
        "--envs must be at least 1",
    );
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "replay-server",
            "--listen",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        apex(&args)
    };
    assert_clear_failure(
        &replay(&["--obs-shape", "4,84,84"]),
        "--obs-shape and --num-actions go together",
    );
    let missing = dir.path().join("no-such-token");
    assert_clear_failure(
        &replay(&["--token-file", missing.to_str().unwrap()]),
        "cannot read the token file",
    );
}
