//! Ctrl-C on `apex local` while the rate limiter holds the actors' inserts
//! (a high samples-per-insert ratio): every part stops, nothing waits on a
//! peer that has stopped, and the process exits 0 within seconds. While it
//! runs, its services admit only callers with the run folder's token.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn ctrl_c_stops_a_rate_limited_run_promptly_and_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_apex"))
        .args(["local", "--game", "catch", "--run-dir"])
        .arg(dir.path())
        .args(["--metrics-addr", "127.0.0.1:0", "--log-every", "1"])
        .args([
            "--min-size",
            "200",
            "--capacity",
            "5000",
            "--batch-size",
            "32",
        ])
        // 64 samples per insert: the learner cannot keep up, so inserts wait.
        .args(["--samples-per-insert", "64", "--error-buffer", "64"])
        .args(["--eval-episodes", "0"])
        .env_remove("APEX_PRESET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut training = false;
    let mut addrs = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("apex local:") {
            let after = |key: &str| {
                let rest = line.split(key).nth(1).expect("addresses in the first line");
                rest.split(',').next().unwrap().to_owned()
            };
            addrs = Some((after("replay "), after("learner ")));
        }
        // "updates N (" with N > 0: the learner samples, actors are held.
        let updates = line
            .split("updates ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok());
        if updates.is_some_and(|u| u > 20) {
            training = true;
            break;
        }
    }
    assert!(training, "the run never started training");
    let (replay, learner) = addrs.expect("apex local printed its addresses");
    // Its services take only callers with the run's token.
    let token = dir.path().join("token");
    let actor = |with_token: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_apex"));
        c.args([
            "actor",
            "--game",
            "catch",
            "--envs",
            "1",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--replay", &replay, "--learner", &learner])
        .env_remove("APEX_PRESET")
        .env_remove("APEX_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if with_token {
            c.arg("--token-file").arg(&token);
        }
        c.spawn().unwrap()
    };
    let mut refused = actor(false);
    exits_within(
        &mut refused,
        Duration::from_secs(20),
        "an actor without the token was let in",
    );
    let refused = refused.wait_with_output().unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && why.contains("token"), "{why}");
    let mut joined = actor(true);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        joined.try_wait().unwrap().is_none(),
        "an actor with the run's token keeps playing"
    );
    joined.kill().unwrap();
    joined.wait().unwrap();
    let drain = std::thread::spawn(move || lines.count());
    std::thread::sleep(Duration::from_secs(2));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("apex local still running 20 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    drain.join().unwrap();
    println!(
        "stopped {:.1} s after Ctrl-C",
        start.elapsed().as_secs_f64()
    );
    assert!(status.success(), "exit {status:?}\n{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(dir.path().join("checkpoint.ot").exists());
}

/// `apex local` on Catch with `budget` flags: it must stop by itself.
/// Waits for `child` to exit; past `limit` kills it and fails with `why`.
fn exits_within(child: &mut std::process::Child, limit: Duration, why: &str) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("{why}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn budgeted_run(dir: &std::path::Path, budget: &[&str]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_apex"))
        .args(["local", "--game", "catch", "--run-dir"])
        .arg(dir)
        .args(["--metrics-addr", "127.0.0.1:0", "--log-every", "60"])
        .args(["--actors", "2", "--envs", "4", "--min-size", "200"])
        // One periodic round at the first weights, then none: the last row
        // must be the final evaluation's.
        .args(["--eval-episodes", "20", "--eval-every-secs", "3600"])
        .args(budget)
        .env_remove("APEX_PRESET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    exits_within(
        &mut child,
        Duration::from_secs(120),
        &format!("apex local {budget:?} still running after 120 s"),
    );
    let o = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "{budget:?}: {out}\n{err}");
    assert!(
        dir.join("checkpoint.ot").exists(),
        "{budget:?}: no checkpoint"
    );
    let replay = std::fs::read_dir(dir.join("replay")).map_or(0, |d| d.count());
    assert!(replay > 0, "{budget:?}: no replay checkpoint");
    (out, err)
}

/// The last eval.csv row's env_frames (Catch: one frame per agent step).
fn last_eval_frames(dir: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("eval.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "env_frames").unwrap();
    let last = lines.last().expect("an evaluation row");
    last.split(',').nth(col).unwrap().parse().unwrap()
}

#[test]
fn a_step_budget_of_all_actors_stops_the_run_like_ctrl_c_and_evaluates_it() {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = budgeted_run(dir.path(), &["--total-env-steps", "3000"]);
    assert!(
        out.contains("budget spent: --total-env-steps 3000"),
        "{out}"
    );
    assert!(
        out.contains("final evaluation of the checkpoint"),
        "{out}\n{err}"
    );
    let frames = last_eval_frames(dir.path());
    // Both actors counted together: each alone would stop at 3,000 of its own.
    assert!(
        (3000..4500).contains(&frames),
        "final row at {frames} steps"
    );
}

#[test]
fn a_wall_clock_budget_stops_the_run_like_ctrl_c_and_evaluates_it() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let (out, _) = budgeted_run(dir.path(), &["--minutes", "0.2"]);
    assert!(start.elapsed() >= Duration::from_secs(12), "stopped early");
    assert!(out.contains("budget spent: --minutes 0.2"), "{out}");
    assert!(out.contains("final evaluation of the checkpoint"), "{out}");
    assert!(last_eval_frames(dir.path()) > 0);
}
