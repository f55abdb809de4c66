//! `scripts/tune.py` end to end: a 2-trial Catch study on a tiny budget
//! keeps both trials in its SQLite study, scores each from its run's
//! eval.csv, writes a best preset that `apex local --preset` runs with, and
//! resumes without running a finished trial again. Bad input fails clearly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use apex_system_tests::{apex, ok, python, python_rows, workspace};

/// Agent steps in a trial (Catch's preset has one actor): a few seconds,
/// a few evaluation rounds.
const BUDGET: &str = "1500";

fn tune(dir: &Path, apex_bin: &Path, extra: &[&str]) -> Output {
    Command::new(python())
        .arg(workspace().join("scripts/tune.py"))
        .args(["--game", "catch", "--trials", "2", "--study", "ci"])
        .args(["--max-env-steps", BUDGET])
        .arg("--runs")
        .arg(dir.join("runs"))
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--apex")
        .arg(apex_bin)
        .args(extra)
        .current_dir(dir)
        .env_remove("APEX_PRESET")
        .output()
        .unwrap()
}

/// One finished trial as the study in SQLite holds it.
#[derive(Debug)]
struct Trial {
    state: String,
    value: f64,
    run_dir: PathBuf,
    params: toml::Table,
}

/// The study's trials, read back through Optuna from its storage.
fn study_trials(storage: &Path) -> Vec<Trial> {
    let script = r#"
import sys, optuna
study = optuna.load_study(study_name="ci", storage="sqlite:///" + sys.argv[1])
for t in study.trials:
    params = " ".join(f"{k}={v!r}" for k, v in t.params.items())
    print(t.state.name, repr(t.value), t.user_attrs.get("run_dir"), params)
"#;
    python_rows(script, storage)
        .into_iter()
        .map(|row| Trial {
            state: row[0].clone(),
            value: row[1].parse().unwrap_or(f64::NAN),
            run_dir: PathBuf::from(&row[2]),
            params: row[3..].join("\n").parse().unwrap(),
        })
        .collect()
}

/// The mean of the last v4 round in a run's eval.csv.
fn last_eval_mean(run_dir: &Path) -> f64 {
    let text = std::fs::read_to_string(run_dir.join("eval.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row: Vec<&str> = text
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(col("protocol")) == Some("v4"))
        .last()
        .expect("an evaluation round")
        .split(',')
        .collect();
    row[col("mean")].parse().unwrap()
}

fn section_value<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Value {
    t.values()
        .filter_map(toml::Value::as_table)
        .find_map(|s| s.get(key))
        .unwrap_or_else(|| panic!("{key} missing"))
}

#[test]
fn a_two_trial_catch_study_scores_from_eval_csv_and_writes_a_preset_apex_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bin = apex_system_tests::apex_bin();
    let out = ok(&tune(dir.path(), &bin, &[]));
    assert!(out.contains("0 trials done, 2 to run"), "{out}");

    let trials = study_trials(&dir.path().join("runs/study.db"));
    assert_eq!(trials.len(), 2, "{trials:?}");
    for t in &trials {
        assert_eq!(t.state, "COMPLETE", "{t:?}");
        assert!(
            t.value.is_finite() && (-1.0..=1.0).contains(&t.value),
            "{t:?}"
        );
        // The score is the last evaluation round's mean in the trial's own eval.csv.
        assert_eq!(t.value, last_eval_mean(&t.run_dir), "{t:?}");
    }
    // The first trial is the preset's own settings; the second is the sampler's.
    assert_eq!(trials[0].params["learning_rate"].as_float(), Some(0.001));
    assert_eq!(trials[0].params["batch_size"].as_integer(), Some(64));
    assert_ne!(trials[0].params, trials[1].params);

    let table = std::fs::read_to_string(dir.path().join("out/trials.md")).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "a header and two trials:\n{table}");
    assert!(rows[1..].iter().all(|r| r.contains("complete")), "{table}");

    // The best preset holds the best trial's settings (the first, on a tie)
    // and no trial budget ...
    let top = trials.iter().map(|t| t.value).fold(f64::MIN, f64::max);
    let best = trials.iter().find(|t| t.value == top).unwrap();
    let preset_path = dir.path().join("out/best.toml");
    let text = std::fs::read_to_string(&preset_path).unwrap();
    let preset: toml::Table = text.parse().unwrap();
    assert!(!text.contains("max_env_steps"), "{text}");
    for (key, value) in &best.params {
        assert_eq!(section_value(&preset, key), value, "{key} in\n{text}");
    }
    // ... and apex trains with it, resolving the same settings.
    let run = dir.path().join("with-best");
    ok(&apex(&[
        "local",
        "--preset",
        preset_path.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
        "--max-env-steps",
        "200",
        "--eval-episodes",
        "0",
        "--metrics-addr",
        "127.0.0.1:0",
    ]));
    let resolved: toml::Table = std::fs::read_to_string(run.join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    for (key, value) in &best.params {
        assert_eq!(section_value(&resolved, key), value, "{key}");
    }
    assert_eq!(section_value(&resolved, "game").as_str(), Some("catch"));

    // The same command again resumes the study: nothing is left to run.
    let again = ok(&tune(dir.path(), &bin, &[]));
    assert!(again.contains("2 trials done, 0 to run"), "{again}");
    assert_eq!(study_trials(&dir.path().join("runs/study.db")).len(), 2);
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            dir.path().join("no-such-apex"),
            vec![],
            "cargo build --release -p apex",
        ),
        (
            apex_system_tests::apex_bin(),
            vec!["--game", "brekout"],
            "unknown game 'brekout'",
        ),
    ];
    for (bin, extra, needle) in cases {
        let o = tune(dir.path(), &bin, &extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "'{needle}' not in {err}");
    }
    assert!(!dir.path().join("runs").exists(), "nothing is started");
}
