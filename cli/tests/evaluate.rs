//! Evaluation end to end: `apex local` on Catch with its evaluator, then
//! `apex eval` and `apex play` on the checkpoint it leaves; the run
//! folder's eval.csv, progress.csv and TensorBoard files read back.

use std::path::Path;

mod common;

use common::{apex, eval_catch, local_catch, ok, play_catch, python_rows};

/// Trains Catch (50,000 agent steps over 2 actors x 4 environments, as the
/// pipeline's learning test), evaluating greedily every 2 seconds.
fn train_catch(run: &Path) {
    let o = local_catch(
        run,
        &[
            "--log-every",
            "1",
            "--actors",
            "2",
            "--envs",
            "4",
            "--epsilon-alpha",
            "2",
            "--max-env-steps",
            "25000",
            "--min-size",
            "500",
            "--capacity",
            "50000",
            "--batch-size",
            "64",
            "--samples-per-insert",
            "8",
            "--error-buffer",
            "2000",
            "--learning-rate",
            "0.001",
            "--optimizer-eps",
            "1e-8",
            "--target-update-every",
            "200",
            "--beta-end",
            "1.0",
            "--beta-anneal-updates",
            "6000",
            "--publish-every",
            "10",
            "--weights-refresh-steps",
            "10",
            "--send-batch",
            "32",
            "--frame-codec",
            "zstd",
            "--eval-episodes",
            "50",
            "--eval-epsilon",
            "0",
            "--eval-every-secs",
            "2",
            "--eval-budget",
            "1",
        ],
    );
    ok(&o);
}

/// (tag, step, value) of every scalar in the run's TensorBoard files, read
/// with the tensorboard package's own reader.
fn tensorboard_scalars(run: &Path) -> Vec<(String, i64, f64)> {
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
for tag in acc.Tags()["scalars"]:
    for e in acc.Scalars(tag):
        print(f"{tag} {e.step} {e.value!r}")
"#;
    python_rows(script, run)
        .into_iter()
        .map(|row| {
            (
                row[0].clone(),
                row[1].parse().unwrap(),
                row[2].parse().unwrap(),
            )
        })
        .collect()
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

#[test]
fn the_evaluator_scores_a_trained_catch_agent_and_the_run_folder_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_catch(&run);

    // eval.csv: rounds with rising weights versions; Catch is evaluated as v4.
    let rows = csv_rows(&run.join("eval.csv"));
    assert!(rows.len() >= 2, "{rows:?}");
    assert!(rows.iter().all(|r| r[4] == "v4" && r[5] == "50"));
    let first_version: u64 = rows[0][2].parse().unwrap();
    let last_version: u64 = rows[rows.len() - 1][2].parse().unwrap();
    assert!(last_version > first_version);
    assert!(
        std::fs::read_dir(run.join("gifs")).unwrap().count() >= rows.len(),
        "each round keeps its best game"
    );

    // The offline evaluator on the final checkpoint: greedy, 500 games.
    let checkpoint = run.join("checkpoint.ot");
    let out = ok(&eval_catch(&checkpoint, 500));
    assert!(out.contains("under v4, 500 games, epsilon 0"), "{out}");
    let mean: f64 = out
        .split("mean ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no mean in {out}"));
    // +1 a catch, -1 a miss.
    let rate = (mean + 1.0) / 2.0;
    println!("greedy catch rate by apex eval: {rate:.3}; eval.csv: {rows:?}");
    assert!(rate >= 0.9, "catch rate {rate:.3} is below 0.9");

    // TensorBoard: the scalars CleanRL and SB3 users look for, with the
    // values the CSV files hold, stepped by agent steps.
    let scalars = tensorboard_scalars(&run);
    for tag in [
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/SPS",
        "losses/td_loss",
        "losses/q_values",
        "eval/mean_reward",
        "eval/v4/mean_reward",
    ] {
        assert!(scalars.iter().any(|(t, _, _)| t == tag), "no {tag}");
    }
    let eval_tb: Vec<f64> = scalars
        .iter()
        .filter(|(t, _, _)| t == "eval/mean_reward")
        .map(|s| s.2)
        .collect();
    let eval_csv: Vec<f64> = rows.iter().map(|r| r[6].parse().unwrap()).collect();
    assert_eq!(eval_tb.len(), eval_csv.len());
    for (tb, csv) in eval_tb.iter().zip(&eval_csv) {
        assert!((tb - csv).abs() < 1e-3, "{eval_tb:?} vs {eval_csv:?}");
    }
    let progress = csv_rows(&run.join("progress.csv"));
    let returns: Vec<(i64, f64)> = progress
        .iter()
        .filter(|r| !r[4].is_empty())
        .map(|r| (r[1].parse().unwrap(), r[4].parse().unwrap()))
        .collect();
    let tb_returns: Vec<(i64, f64)> = scalars
        .iter()
        .filter(|(t, _, _)| t == "charts/episodic_return")
        .map(|(_, s, v)| (*s, *v))
        .collect();
    assert_eq!(returns.len(), tb_returns.len());
    for ((s1, v1), (s2, v2)) in returns.iter().zip(&tb_returns) {
        assert_eq!(s1, s2, "stepped by agent steps");
        assert!((v1 - v2).abs() < 0.01, "{v1} vs {v2}");
    }

    // Watching it play: 3 games of 9 steps, 10 screens each, 16 pixels a cell.
    let gif = dir.path().join("catch.gif");
    let out = ok(&play_catch(&checkpoint, &gif, 3));
    assert!(out.contains("30 screens"), "{out}");
    assert_eq!(gif_frames(&gif), (30, 80, 160));
}

/// Frames, width and height of a GIF, by decoding it.
fn gif_frames(path: &Path) -> (usize, u16, u16) {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut d = options
        .read_info(std::fs::File::open(path).unwrap())
        .unwrap();
    let (w, h) = (d.width(), d.height());
    let mut n = 0;
    while d.read_next_frame().unwrap().is_some() {
        n += 1;
    }
    (n, w, h)
}

#[test]
fn a_random_agent_plays_breakout_into_a_gif_of_raw_screens() {
    let dir = tempfile::tempdir().unwrap();
    let gif = dir.path().join("random.gif");
    let out = ok(&apex(&[
        "play",
        "--policy",
        "random",
        "--game",
        "breakout",
        "--protocol",
        "v5",
        "--gif",
        gif.to_str().unwrap(),
    ]));
    let screens: usize = out
        .split(" screens")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(screens > 50, "{out}");
    assert_eq!(gif_frames(&gif), (screens, 160, 210));
    let o = apex(&["play", "--game", "breakout", "--gif", "x.gif"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give --checkpoint PATH"));
    let o = apex(&[
        "eval",
        "--checkpoint",
        "/nonexistent/checkpoint.ot",
        "--game",
        "breakout",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read checkpoint"));
}
