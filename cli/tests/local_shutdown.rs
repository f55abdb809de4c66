//! Ctrl-C on `apex local` while the rate limiter holds the actors' inserts
//! (a high samples-per-insert ratio): every part stops, nothing waits on a
//! peer that has stopped, and the process exits 0 within seconds.

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
    for line in lines.by_ref() {
        let line = line.unwrap();
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
