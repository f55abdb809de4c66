//! Settings that can never work are refused at start with one line and
//! exit 1 (or, where a flag's own parser refuses the value, clap's usage
//! error, exit 2), before any service starts: from a flag, an `APEX_*`
//! variable and a preset alike.

mod common;

use std::process::Output;

use common::{apex, apex_bin, assert_clear_failure};

/// A usage error (exit 2) whose one error line holds `needle`.
fn assert_refused(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(needle), "'{needle}' not in: {err}");
}

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
    // Counts where 0 would mean "never" (u64::is_multiple_of(0) is false
    // for every update but the first) or break a service.
    for flag in [
        "--target-update-every",
        "--publish-every",
        "--checkpoint-every",
        "--batch-size",
        "--capacity",
        "--shards",
        "--envs",
        "--n-step",
        "--send-batch",
        "--max-in-flight",
        "--weights-refresh-steps",
        "--inference-groups",
        "--actors",
        "--log-every",
    ] {
        assert_refused(
            &local(&[flag, "0"]),
            &format!("invalid value '0' for '{flag} <"),
        );
        assert_refused(&local(&[flag, "0"]), "must be at least 1");
    }
    for n in ["1", "-2", "257"] {
        assert_clear_failure(
            &local(&[&format!("--quantiles={n}")]),
            &format!("{n} quantiles: give 2 to 256"),
        );
    }
    assert_clear_failure(
        &local(&["--quantiles", "8", "--loss", "mse"]),
        "--loss mse needs the expected-value head",
    );
    assert_clear_failure(
        &local(&["--quantiles", "8", "--munchausen", "on"]),
        "--munchausen on needs the expected-value head",
    );
    assert!(!run.exists(), "a refused run started");
    assert_clear_failure(
        &local(&["--min-size", "200", "--capacity", "100"]),
        "--min-size 200 is more than --capacity 100",
    );
    assert_refused(
        &apex(&["actor", "--game", "catch", "--envs", "0"]),
        "'--envs <ENVS>': must be at least 1",
    );
    assert_refused(
        &apex(&["actor", "--game", "catch", "--actor-count", "0"]),
        "'--actor-count <ACTOR_COUNT>': must be at least 1",
    );
    assert_refused(
        &apex(&[
            "eval",
            "--checkpoint",
            "x.ot",
            "--game",
            "catch",
            "--episodes",
            "0",
        ]),
        "'--episodes <EPISODES>': must be at least 1",
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
    assert_refused(&replay(&["--capacity", "0"]), "must be at least 1");
    assert_refused(&replay(&["--shards", "0"]), "must be at least 1");
    assert_refused(
        &replay(&["--max-insert-streams", "0"]),
        "must be at least 1",
    );
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

/// A 0 that comes from a variable or a preset is refused as the flag's is:
/// presets become clap's defaults, and clap parses defaults too.
#[test]
fn zeros_from_variables_and_presets_are_refused_too() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let local = |preset: Option<&std::path::Path>, envs: &[(&str, &str)]| {
        let mut c = std::process::Command::new(apex_bin());
        c.args(["local", "--game", "catch", "--metrics-addr", "127.0.0.1:0"])
            .arg("--run-dir")
            .arg(&run)
            .env_remove("APEX_PRESET");
        if let Some(p) = preset {
            c.arg("--preset").arg(p);
        }
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    for (var, flag) in [
        ("APEX_TARGET_UPDATE_EVERY", "--target-update-every"),
        ("APEX_PUBLISH_EVERY", "--publish-every"),
        ("APEX_CHECKPOINT_EVERY", "--checkpoint-every"),
        ("APEX_CAPACITY", "--capacity"),
        // The old name still reaches the flag, and is checked as well.
        ("APEX_REPLAY_CAPACITY", "--capacity"),
    ] {
        let o = local(None, &[(var, "0")]);
        assert_refused(&o, &format!("'{flag} <"));
        assert_refused(&o, "must be at least 1");
        let err = String::from_utf8_lossy(&o.stderr);
        let warned = err.contains(&format!("warning: {var} is an old name"));
        assert_eq!(warned, var == "APEX_REPLAY_CAPACITY", "{err}");
    }
    for key in ["target_update_every", "publish_every", "checkpoint_every"] {
        let preset = dir.path().join(format!("{key}.toml"));
        std::fs::write(&preset, format!("[learner]\n{key} = 0\n")).unwrap();
        let o = local(Some(&preset), &[]);
        assert_refused(&o, &format!("{key} = 0 is refused (must be at least 1)"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("--{}", key.replace('_', "-"))),
            "{err}"
        );
    }
    assert!(!run.exists(), "a refused run started");
}
