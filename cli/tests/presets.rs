//! Presets end to end: a short `apex local` run resolves preset < variable <
//! flag, writes what it resolved into its run folder, and that file works as
//! a preset itself; bad presets fail with one clear line.

use std::path::Path;
use std::process::{Command, Output};

/// A short Catch run: actors stop after 400 steps, which ends the run.
/// `preset: None` names none, leaving the choice to apex.
fn local(run_dir: &Path, preset: Option<&str>, envs: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_apex"));
    c.args(["local", "--game", "catch"])
        .args(preset.map(|p| ["--preset", p]).iter().flatten())
        .args(["--run-dir", run_dir.to_str().unwrap()])
        .args([
            "--max-env-steps",
            "400",
            "--min-size",
            "50",
            "--capacity",
            "1000",
        ])
        .args(["--metrics-addr", "127.0.0.1:0", "--log-every", "60"])
        .args(extra);
    c.env_remove("APEX_PRESET").env_remove("APEX_CUDA");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn config(run_dir: &Path) -> toml::Table {
    let text = std::fs::read_to_string(run_dir.join("config.toml")).unwrap();
    text.parse().unwrap()
}

fn get<'a>(t: &'a toml::Table, section: &str, key: &str) -> &'a toml::Value {
    &t[section][key]
}

#[test]
fn flags_beat_variables_beat_the_preset_and_the_run_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = local(
        &run,
        Some("dqn-nature"),
        &[("APEX_BATCH_SIZE", "16"), ("APEX_TARGET_UPDATE_EVERY", "7")],
        &["--target-update-every", "9"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = config(&run);
    // From the preset.
    assert_eq!(get(&c, "learner", "optimizer").as_str(), Some("adam"));
    assert_eq!(get(&c, "learner", "double").as_str(), Some("off"));
    assert_eq!(get(&c, "actor", "n_step").as_integer(), Some(1));
    assert_eq!(get(&c, "replay", "alpha").as_float(), Some(0.0));
    assert_eq!(get(&c, "net", "dueling").as_str(), Some("off"));
    // A variable over the preset, a flag over both.
    assert_eq!(get(&c, "learner", "batch_size").as_integer(), Some(16));
    assert_eq!(
        get(&c, "learner", "target_update_every").as_integer(),
        Some(9)
    );
    assert_eq!(get(&c, "game", "game").as_str(), Some("catch"));

    // The recorded config is a preset that repeats the run's settings.
    let again = dir.path().join("again");
    let recorded = run.join("config.toml");
    let o = local(&again, recorded.to_str(), &[], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(config(&again), c);
}

#[test]
fn the_default_preset_fits_a_cpu_and_the_gpu_preset_runs_on_it_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = local(&run, Some("apex-atari"), &[], &["--batch-size", "32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = config(&run);
    assert_eq!(get(&c, "learner", "optimizer").as_str(), Some("adam"));
    assert_eq!(
        get(&c, "learner", "learning_rate").as_float(),
        Some(0.00025)
    );
    assert_eq!(
        get(&c, "learner", "target_update_every").as_integer(),
        Some(250)
    );
    assert_eq!(
        get(&c, "replay", "samples_per_insert").as_float(),
        Some(2.0)
    );
    assert_eq!(get(&c, "actor", "n_step").as_integer(), Some(3));
    assert_eq!(get(&c, "replay", "alpha").as_float(), Some(0.6));

    assert_eq!(get(&c, "learner", "cuda").as_bool(), Some(false));

    // The GPU preset on the CPU, asked for in so many words: Ape-X's
    // learner settings.
    let run = dir.path().join("gpu");
    let o = local(
        &run,
        Some("apex-atari-gpu"),
        &[],
        &["--cuda=false", "--batch-size", "32"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = config(&run);
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(text.contains("from preset apex-atari-gpu"), "{text}");
    assert_eq!(get(&c, "learner", "cuda").as_bool(), Some(false));
    assert_eq!(get(&c, "learner", "optimizer").as_str(), Some("rmsprop"));
    assert_eq!(
        get(&c, "learner", "learning_rate").as_float(),
        Some(0.0000625)
    );
    assert_eq!(
        get(&c, "replay", "samples_per_insert").as_float(),
        Some(0.8)
    );
}

/// Every way of asking for a GPU (the flag, `APEX_CUDA` in any on-spelling,
/// the GPU preset) stops at start with one line where there is none, before
/// the run folder exists; where there is one, this test runs on it.
#[test]
fn asking_for_cuda_without_a_gpu_stops_at_start() {
    let dir = tempfile::tempdir().unwrap();
    /// What is asked, the preset named, variables, flags.
    type Ask<'a> = (
        &'a str,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
    );
    let asks: [Ask; 5] = [
        ("flag", None, &[], &["--cuda"]),
        ("flag=on", None, &[], &["--cuda=on"]),
        ("variable 1", None, &[("APEX_CUDA", "1")], &[]),
        ("variable on", None, &[("APEX_CUDA", "on")], &[]),
        ("gpu preset", Some("apex-atari-gpu"), &[], &[]),
    ];
    for (what, preset, envs, flags) in asks {
        let run = dir.path().join(what.replace(' ', "-"));
        let mut extra = flags.to_vec();
        extra.extend(["--batch-size", "32"]);
        let o = local(&run, preset, envs, &extra);
        let err = String::from_utf8_lossy(&o.stderr);
        if tch::Cuda::is_available() {
            assert!(o.status.success(), "{what}: {err}");
            continue;
        }
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(err.contains("cuda was asked for"), "{what}: {err}");
        assert!(err.contains("apex doctor --require-cuda"), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(!run.exists(), "{what}: the run started");
    }
    // A value that is neither on nor off is clap's usage error.
    let o = local(
        &dir.path().join("maybe"),
        None,
        &[("APEX_CUDA", "maybe")],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("'maybe'"), "{err}");
}

#[test]
fn bad_presets_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let cases = [
        ("apex-brekout", "unknown preset 'apex-brekout'".to_owned()),
        ("missing.toml", "cannot read preset missing.toml".to_owned()),
    ];
    for (preset, needle) in cases {
        let o = local(&run, Some(preset), &[], &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(&needle), "'{needle}' not in {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[learner]\nbatch_sise = 3\n").unwrap();
    let o = local(&run, typo.to_str(), &[], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown setting 'batch_sise'"), "{err}");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[learner\n").unwrap();
    let o = local(&run, broken.to_str(), &[], &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not valid TOML"), "{err}");
}

/// Every file in presets/ is a built-in preset by its name: `--preset NAME`
/// loads it (its values are the defaults `--help` shows), and `load` gives
/// the file's own settings. A new file cannot be left out.
#[test]
fn every_file_in_presets_is_built_in_by_its_name() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../presets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    let built_in: Vec<&str> = apex::preset::built_in().collect();
    assert_eq!(built_in, names);
    for name in &names {
        let file: toml::Table = std::fs::read_to_string(dir.join(format!("{name}.toml")))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(apex::preset::load(name).unwrap(), file, "{name}");
        let o = Command::new(env!("CARGO_BIN_EXE_apex"))
            .args(["local", "--preset", name, "--help"])
            .env_remove("APEX_PRESET")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let capacity = file["replay"]["capacity"].as_integer().unwrap();
        assert!(
            help.contains(&format!("[default: {capacity}]")),
            "{name}: --help does not show capacity {capacity}"
        );
    }
    // The old names of the Atari presets still work.
    for (old, new) in [
        ("apex-breakout", "apex-atari"),
        ("apex-breakout-gpu", "apex-atari-gpu"),
    ] {
        assert_eq!(
            apex::preset::load(old).unwrap(),
            apex::preset::load(new).unwrap()
        );
    }
}

/// `--game catch` with no preset named brings Catch's own settings (not
/// Breakout's 20,000-transition warm-up and 5-minute evaluation rounds);
/// a named preset still wins.
#[test]
fn the_catch_game_brings_the_catch_preset() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = local(&run, None, &[], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(text.contains("from preset catch,"), "{text}");
    let c = config(&run);
    assert_eq!(get(&c, "eval", "eval_every_secs").as_integer(), Some(2));
    assert_eq!(get(&c, "learner", "batch_size").as_integer(), Some(64));
    // The flags of local() still win over the preset.
    assert_eq!(get(&c, "replay", "min_size").as_integer(), Some(50));

    let named = dir.path().join("named");
    let o = local(&named, Some("apex-atari"), &[], &["--batch-size", "32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = config(&named);
    assert_eq!(get(&c, "eval", "eval_every_secs").as_integer(), Some(300));
    assert_eq!(get(&c, "game", "game").as_str(), Some("catch"));
}

/// A variable under its old name still sets its flag, beneath the new name,
/// with one warning; the new name alone warns of nothing.
#[test]
fn old_variable_names_still_work_with_a_warning() {
    let help = |envs: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_apex"));
        c.args(["local", "--help"])
            .env_remove("APEX_PRESET")
            .env_remove("APEX_CAPACITY")
            .env_remove("APEX_REPLAY_CAPACITY");
        for (k, v) in envs {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success());
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        (out, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (out, err) = help(&[("APEX_REPLAY_CAPACITY", "777")]);
    assert!(out.contains("[default: 777]"), "{out}");
    assert_eq!(
        err.matches("warning: APEX_REPLAY_CAPACITY is an old name: rename it APEX_CAPACITY")
            .count(),
        1,
        "{err}"
    );
    let (out, _) = help(&[("APEX_REPLAY_CAPACITY", "777"), ("APEX_CAPACITY", "888")]);
    assert!(out.contains("[env: APEX_CAPACITY=888]"), "{out}");
    assert!(!out.contains("777"), "the new name wins: {out}");
    let (_, err) = help(&[("APEX_CAPACITY", "888")]);
    assert!(!err.contains("warning"), "{err}");
}

/// `apex local --run-dir R` on a run that has a config.toml resumes it with
/// those settings: only the flags given now change them, and resumes.log
/// says which did.
#[test]
fn resuming_a_run_repeats_its_settings_and_records_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = local(&run, None, &[], &["--batch-size", "16"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !run.join("resumes.log").exists(),
        "a fresh run is no resume"
    );
    assert_eq!(
        get(&config(&run), "learner", "target_update_every").as_integer(),
        Some(200)
    );

    let o = local(&run, None, &[], &["--target-update-every", "9"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = config(&run);
    // Kept from the run, not the catch preset's 64.
    assert_eq!(get(&c, "learner", "batch_size").as_integer(), Some(16));
    assert_eq!(
        get(&c, "learner", "target_update_every").as_integer(),
        Some(9)
    );
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        text.starts_with("# What this run resolved from preset catch (resumed),"),
        "{text}"
    );
    let log = std::fs::read_to_string(run.join("resumes.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].ends_with("changed learner.target_update_every: 200 -> 9"),
        "{log}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("learner.target_update_every: 200 -> 9"),
        "{stdout}"
    );

    // Again with nothing given: the same settings, and a line that says so.
    let o = local(&run, None, &[], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(config(&run), c);
    let log = std::fs::read_to_string(run.join("resumes.log")).unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(
        log.lines().last().unwrap().ends_with("no setting changed"),
        "{log}"
    );
    // A preset named now wins over the run's own settings.
    let o = local(&run, Some("catch"), &[], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        get(&config(&run), "learner", "batch_size").as_integer(),
        Some(64)
    );
    let log = std::fs::read_to_string(run.join("resumes.log")).unwrap();
    assert!(log.contains("learner.batch_size: 16 -> 64"), "{log}");
}
