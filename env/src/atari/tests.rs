//! The wrapper's game handling, driven by a scripted emulator whose screen
//! is a flat image holding the frame number, so each observation tells which
//! emulator frames it was made from.

use super::*;

#[derive(Default)]
struct Scripted {
    frame: u64,
    resets: u32,
    log: Vec<i32>,
    start_lives: i32,
    /// (frame, reward) pairs.
    rewards: Vec<(u64, i32)>,
    lives_lost_at: Vec<u64>,
    game_over_at: Option<u64>,
}

impl Emulator for Scripted {
    fn act(&mut self, action: i32) -> i32 {
        self.frame += 1;
        self.log.push(action);
        self.rewards
            .iter()
            .filter(|(f, _)| *f == self.frame)
            .map(|(_, r)| r)
            .sum()
    }
    fn game_over(&self) -> bool {
        self.game_over_at.is_some_and(|f| self.frame >= f)
    }
    fn reset_game(&mut self) {
        self.frame = 0;
        self.resets += 1;
        self.log.clear();
    }
    fn lives(&self) -> i32 {
        self.start_lives
            - self
                .lives_lost_at
                .iter()
                .filter(|&&f| f <= self.frame)
                .count() as i32
    }
    fn screen(&self, out: &mut [u8]) {
        out.fill(self.frame as u8);
    }
    fn grayscale(&self, out: &mut [u8]) {
        out.fill(self.frame as u8);
    }
    fn rgb(&self, out: &mut [u8]) {
        out.fill(self.frame as u8);
    }
}

fn config() -> AtariConfig {
    let mut c = AtariConfig::new("scripted", Protocol::V4);
    c.noop_max = 0;
    c
}

fn env(emu: Scripted, needs_fire: bool, config: AtariConfig) -> AtariEnv<Scripted> {
    AtariEnv::with_emulator(emu, vec![0, 1, 3, 4], needs_fire, config)
}

fn flat(frame: &[u8]) -> u8 {
    assert!(frame.iter().all(|&p| p == frame[0]), "frame is not flat");
    frame[0]
}

#[test]
fn a_step_repeats_the_action_and_pools_its_last_two_frames() {
    let mut e = env(
        Scripted {
            start_lives: 3,
            ..Default::default()
        },
        false,
        config(),
    );
    e.reset();
    assert_eq!(flat(e.frame()), 0);
    e.step(2);
    assert_eq!(e.emu.log, vec![3, 3, 3, 3]);
    // Frames 3 and 4 were captured; the brighter one wins the max-pool.
    assert_eq!(flat(e.frame()), 4);
    e.step(3);
    assert_eq!(flat(e.frame()), 8);
    let stack: Vec<u8> = e.obs().chunks(FRAME_PIXELS).map(flat).collect();
    assert_eq!(stack, vec![0, 0, 4, 8]);
}

#[test]
fn rewards_are_summed_over_repeats_then_clipped_to_their_sign() {
    let emu = Scripted {
        start_lives: 1,
        rewards: vec![(1, 4), (3, 3), (6, -2)],
        ..Default::default()
    };
    let mut e = env(emu, false, config());
    e.reset();
    let s = e.step(0);
    assert_eq!((s.raw_reward, s.reward), (7, 1.0));
    let s = e.step(0);
    assert_eq!((s.raw_reward, s.reward), (-2, -1.0));
    let s = e.step(0);
    assert_eq!((s.raw_reward, s.reward), (0, 0.0));
    assert_eq!(clip_reward(-300), -1.0);
}

#[test]
fn noop_starts_are_seeded_and_between_one_and_noop_max() {
    let noops = |seed| {
        let mut c = config();
        c.noop_max = 30;
        c.seed = seed;
        let mut e = env(
            Scripted {
                start_lives: 1,
                ..Default::default()
            },
            false,
            c,
        );
        e.reset();
        assert!(e.emu.log.iter().all(|&a| a == NOOP));
        e.emu.log.len()
    };
    let counts: Vec<usize> = (0..40).map(noops).collect();
    assert!(counts.iter().all(|&n| (1..=30).contains(&n)), "{counts:?}");
    assert!(
        counts.iter().any(|&n| n != counts[0]),
        "no-op counts never vary: {counts:?}"
    );
    assert_eq!(
        counts,
        (0..40).map(noops).collect::<Vec<_>>(),
        "same seeds, same no-ops"
    );
}

#[test]
fn fire_games_press_fire_on_reset_and_others_do_not() {
    let mut e = env(
        Scripted {
            start_lives: 1,
            ..Default::default()
        },
        true,
        config(),
    );
    e.reset();
    assert_eq!(e.emu.log, vec![FIRE; 4]);
    let mut e = env(
        Scripted {
            start_lives: 1,
            ..Default::default()
        },
        false,
        config(),
    );
    e.reset();
    assert!(e.emu.log.is_empty());
    let mut c = config();
    c.fire_reset = false;
    let mut e = env(
        Scripted {
            start_lives: 1,
            ..Default::default()
        },
        true,
        c,
    );
    e.reset();
    assert!(e.emu.log.is_empty());
}

#[test]
fn life_loss_ends_the_training_episode_but_not_the_game() {
    let emu = Scripted {
        start_lives: 2,
        rewards: vec![(2, 5), (10, 1)],
        lives_lost_at: vec![6, 13],
        game_over_at: Some(13),
        ..Default::default()
    };
    let mut e = env(emu, true, config());
    e.reset(); // frames 1-4: FIRE
    let s = e.step(0); // frames 5, 6: life lost at 6, stop early
    assert!(s.terminal && !s.truncated && s.game.is_none());
    assert_eq!((s.lives, e.emu.frame), (1, 6));
    assert_eq!(e.emu.resets, 1);
    e.reset(); // the game goes on: FIRE, frames 7-10, no restart
    assert_eq!(e.emu.resets, 1);
    assert_eq!(&e.emu.log[6..], &[FIRE; 4]);
    let s = e.step(0); // frames 11-13: game over
    assert!(s.terminal);
    let game = s.game.expect("the game ended");
    assert_eq!(
        game,
        GameSummary {
            raw_score: 6,
            frames: 13,
            agent_steps: 2
        }
    );
    e.reset();
    assert_eq!(e.emu.resets, 2, "a game over restarts the game");
}

#[test]
fn without_life_loss_terminals_only_the_game_over_ends_an_episode() {
    let emu = Scripted {
        start_lives: 2,
        lives_lost_at: vec![3, 9],
        game_over_at: Some(9),
        ..Default::default()
    };
    let mut c = config();
    c.terminal_on_life_loss = false;
    let mut e = env(emu, false, c);
    e.reset();
    let s = e.step(0);
    assert!(!s.done() && s.lives == 1);
    assert_eq!(e.emu.frame, 4, "a life loss does not cut the repeat short");
    assert!(!e.step(0).done());
    assert!(e.step(0).terminal);
}

#[test]
fn an_early_stop_keeps_the_previous_frames_as_gymnasium_does() {
    let emu = Scripted {
        start_lives: 1,
        game_over_at: Some(7),
        ..Default::default()
    };
    let mut e = env(emu, false, config());
    e.reset();
    e.step(0);
    assert_eq!(flat(e.frame()), 4);
    let s = e.step(0);
    assert!(s.terminal);
    assert_eq!(flat(e.frame()), 4);
}

#[test]
fn the_frame_cap_truncates_and_the_next_reset_restarts() {
    let mut c = config();
    c.max_episode_frames = 10;
    let mut e = env(
        Scripted {
            start_lives: 3,
            ..Default::default()
        },
        false,
        c,
    );
    e.reset();
    assert!(!e.step(0).done());
    assert!(!e.step(0).done());
    let s = e.step(0);
    assert!(s.truncated && !s.terminal);
    assert_eq!(e.emu.frame, 10);
    assert_eq!(s.game.map(|g| g.frames), Some(10));
    // The truncated observation shows frame 10, not the stale frames of the
    // previous step: it is bootstrapped from.
    assert_eq!(flat(e.frame()), 10);
    e.reset();
    assert_eq!(e.emu.resets, 2);
}

#[test]
#[should_panic(expected = "call reset() first")]
fn stepping_a_finished_episode_is_a_bug() {
    let emu = Scripted {
        start_lives: 1,
        game_over_at: Some(1),
        ..Default::default()
    };
    let mut e = env(emu, false, config());
    e.reset();
    e.step(0);
    e.step(0);
}

#[test]
fn no_seed_asks_ale_for_a_clock_seed() {
    // ALE seeds from the clock when given 0.
    assert_ne!(ale_seed(0), 0);
    assert_ne!(ale_seed(i32::MAX as u64 - 1), 0);
    assert_ne!(ale_seed(u64::MAX), 0);
    assert!(ale_seed(u64::MAX) > 0);
    assert_ne!(ale_seed(1), ale_seed(2));
}
