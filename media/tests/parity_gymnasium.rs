//! Parity with the implementation users trust: ale-py 0.12.1 + gymnasium's
//! `AtariPreprocessing`, driven with the same random actions. ALE 0.6 and
//! 0.12 emit identical raw frames with sticky actions off, and our resize
//! reproduces OpenCV's INTER_AREA arithmetic, so frames must be identical.

use std::process::Command;

use apex_env::{AtariConfig, Protocol};
use apex_media::npy;
use apex_media::record::{self, Actions};
use apex_system_tests::{python, workspace};
use rand::{Rng, SeedableRng};

fn check_parity(game: &str, actions: usize, action_count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let list: Vec<usize> = (0..actions)
        .map(|_| rng.gen_range(0..action_count))
        .collect();
    let actions_file = dir.path().join("actions.txt");
    std::fs::write(
        &actions_file,
        list.iter().map(|a| format!("{a}\n")).collect::<String>(),
    )
    .unwrap();

    let mut config = AtariConfig::new(game, Protocol::V4);
    config.noop_max = 0;
    config.fire_reset = false;
    config.terminal_on_life_loss = false;
    let ours_dir = dir.path().join("ours");
    let summary =
        record::record(&config, &Actions::List(list.clone()), actions, &ours_dir).unwrap();

    let theirs = dir.path().join("gym");
    let status = Command::new(python())
        .arg(workspace().join("tests/parity/gym_record.py"))
        .args(["--game", game, "--actions"])
        .arg(&actions_file)
        .arg("--out")
        .arg(&theirs)
        .status()
        .expect("run the gymnasium recorder");
    assert!(status.success(), "gymnasium recorder failed");

    let (shape_ours, ours) =
        npy::read_u8(std::fs::File::open(ours_dir.join("obs.npy")).unwrap()).unwrap();
    let (shape_gym, gym) =
        npy::read_u8(std::fs::File::open(theirs.with_extension("npy")).unwrap()).unwrap();
    assert_eq!(shape_ours, vec![actions + 1, 84, 84]);
    assert_eq!(shape_ours, shape_gym);
    let differing = ours.iter().zip(&gym).filter(|(a, b)| a != b).count();
    let worst = ours
        .iter()
        .zip(&gym)
        .map(|(&a, &b)| a.abs_diff(b))
        .max()
        .unwrap();
    let first_bad_frame = ours
        .chunks(84 * 84)
        .zip(gym.chunks(84 * 84))
        .position(|(a, b)| a != b);
    assert_eq!(
        differing, 0,
        "{game}: {differing} pixels differ (worst by {worst}), first in frame {first_bad_frame:?}"
    );

    // Rewards, game overs and lives agree step by step too.
    let ours_csv = std::fs::read_to_string(ours_dir.join("steps.csv")).unwrap();
    let gym_csv = std::fs::read_to_string(theirs.with_extension("csv")).unwrap();
    for (i, (o, g)) in ours_csv
        .lines()
        .skip(1)
        .zip(gym_csv.lines().skip(1))
        .enumerate()
    {
        let o: Vec<&str> = o.split(',').collect(); // step,action,reward,raw_reward,terminal,truncated,lives
        let g: Vec<&str> = g.split(',').collect(); // step,action,raw_reward,terminal,truncated,lives
        assert_eq!(
            [o[0], o[1], o[3], o[4], o[5], o[6]],
            [g[0], g[1], g[2], g[3], g[4], g[5]],
            "{game}: step {} differs",
            i + 1
        );
    }
    assert!(
        summary.games_finished > 0 || actions < 2000,
        "{game}: the comparison should span a game over"
    );
}

#[test]
fn breakout_frames_match_gymnasium_exactly() {
    check_parity("breakout", 3000, 4);
}

#[test]
fn pong_frames_match_gymnasium_exactly() {
    check_parity("pong", 1000, 6);
}

#[test]
fn space_invaders_frames_match_gymnasium_exactly() {
    check_parity("space_invaders", 1000, 6);
}
