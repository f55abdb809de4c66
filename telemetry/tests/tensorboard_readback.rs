//! Reads an event file written by `SummaryWriter` back with TensorBoard's own
//! Python reader, which checks every record's CRCs: the only judge that
//! matters is the program people will point at the run folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use apex_telemetry::tensorboard::SummaryWriter;

/// Prints `{"file_version": .., "scalars": {tag: [[step, value], ..]}}`;
/// non-finite values become strings because JSON has no NaN.
const READER: &str = r#"
import json, math, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1])
acc.Reload()
def num(v):
    return v if math.isfinite(v) else repr(v)
scalars = {t: [[e.step, num(e.value)] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
print(json.dumps({"file_version": acc.file_version, "scalars": scalars}))
"#;

fn venv_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the telemetry crate lives inside the workspace");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh to create the virtualenv with tensorboard",
        python.display()
    );
    python
}

fn read_back(dir: &Path) -> serde_json::Value {
    let python = venv_python();
    let out = Command::new(&python)
        .arg("-c")
        .arg(READER)
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "tensorboard's reader failed ({}); if tensorboard is not installed, run scripts/setup.sh\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("reader printed {stdout:?}: {e}"))
}

/// `[[step, value], ..]` of one tag, values as f64 (NaN for "nan").
fn series(read: &serde_json::Value, tag: &str) -> Vec<(i64, f64)> {
    let points = read["scalars"][tag]
        .as_array()
        .unwrap_or_else(|| panic!("tag {tag} not read back: {read}"));
    points
        .iter()
        .map(|p| {
            let step = p[0].as_i64().unwrap();
            let value = match &p[1] {
                serde_json::Value::String(s) if s == "nan" => f64::NAN,
                v => v.as_f64().unwrap(),
            };
            (step, value)
        })
        .collect()
}

fn assert_series(read: &serde_json::Value, tag: &str, expected: &[(i64, f64)]) {
    let got = series(read, tag);
    assert_eq!(got.len(), expected.len(), "{tag}: {got:?}");
    for (&(step, value), &(want_step, want)) in got.iter().zip(expected) {
        assert_eq!(step, want_step, "{tag}: {got:?}");
        // simple_value is an f32 on the wire.
        assert!(
            (value - want).abs() <= want.abs() * f64::from(f32::EPSILON),
            "{tag} at {step}: {value} != {want}"
        );
    }
}

#[test]
fn tensorboard_reads_back_what_was_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("breakout-v4");
    let writer = SummaryWriter::create(&dir).unwrap();
    writer.scalar("charts/episodic_return", 1.5, 100).unwrap();
    writer.scalar("losses/td_loss", 0.25, 100).unwrap();
    writer.scalar("charts/episodic_return", 2.5, 200).unwrap();
    writer.scalar("losses/q_mean", 0.1, 200).unwrap();
    writer.scalar("losses/diverged", f64::NAN, 300).unwrap();
    // Zero is proto3's default: it must still be on the wire.
    writer.scalar("losses/td_loss", 0.0, 300).unwrap();
    writer.flush().unwrap();

    let read = read_back(&dir);
    assert_eq!(read["file_version"].as_f64(), Some(2.0), "{read}");
    let tags: Vec<&String> = read["scalars"].as_object().unwrap().keys().collect();
    assert_eq!(
        tags,
        [
            "charts/episodic_return",
            "losses/diverged",
            "losses/q_mean",
            "losses/td_loss"
        ]
    );
    assert_series(&read, "charts/episodic_return", &[(100, 1.5), (200, 2.5)]);
    assert_series(&read, "losses/td_loss", &[(100, 0.25), (300, 0.0)]);
    assert_series(&read, "losses/q_mean", &[(200, 0.1)]);
    let diverged = series(&read, "losses/diverged");
    assert_eq!(diverged.len(), 1);
    assert_eq!(diverged[0].0, 300);
    assert!(diverged[0].1.is_nan(), "{diverged:?}");
}

#[test]
fn clones_on_many_threads_write_whole_records() {
    const THREADS: i64 = 4;
    const STEPS: i64 = 200;
    let tmp = tempfile::tempdir().unwrap();
    let writer = SummaryWriter::create(tmp.path()).unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let writer = writer.clone();
            s.spawn(move || {
                for step in 0..STEPS {
                    writer
                        .scalar(&format!("threads/t{t}"), (t * 1000 + step) as f64, step)
                        .unwrap();
                }
                writer.flush().unwrap();
            });
        }
    });

    let read = read_back(tmp.path());
    for t in 0..THREADS {
        let got = series(&read, &format!("threads/t{t}"));
        let want: Vec<(i64, f64)> = (0..STEPS)
            .map(|step| (step, (t * 1000 + step) as f64))
            .collect();
        assert_eq!(got, want, "thread {t}");
    }
}
