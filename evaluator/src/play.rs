//! Whole games with a fixed policy: several games stepped together with one
//! batched forward pass, each with its own seeds, so a game's outcome does
//! not depend on which others ran beside it. Every game keeps its actions,
//! which with its seed replay it frame for frame (for its GIF) at a
//! fraction of the cost of recording screens while playing.

use std::path::Path;

use apex_env::{EnvError, EnvSpec, Environment};
use apex_media::gif::{GifError, GifWriter};
use apex_model::policy::{argmax, epsilon_greedy, PolicyNet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Who picks the actions.
pub enum Player {
    /// The network's greedy action, random with probability `epsilon`.
    Greedy { net: PolicyNet, epsilon: f64 },
    /// Uniformly random actions (the baseline every Atari table starts with).
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayConfig {
    pub games: usize,
    /// Game `g` uses seed `seed + g` for its environment and its exploration.
    pub seed: u64,
    /// Games stepped together.
    pub parallel: usize,
}

/// One finished game.
#[derive(Debug, Clone, PartialEq)]
pub struct GameRecord {
    pub seed: u64,
    pub score: i64,
    /// Emulator frames (Atari) or steps (small environments).
    pub frames: u64,
    pub steps: u64,
    /// Every action index played, resets excluded.
    pub actions: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Gif(#[from] GifError),
    #[error("cannot create folder {path}: {source}")]
    Folder {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("replaying game {seed} scored {got}, but it scored {played} when played: the environment is not deterministic for this seed")]
    Diverged { seed: u64, played: i64, got: i64 },
}

struct Slot {
    env: Box<dyn Environment>,
    rng: ChaCha8Rng,
    seed: u64,
    actions: Vec<u8>,
}

fn exploration_rng(seed: u64) -> ChaCha8Rng {
    // Apart from the environment's own use of the seed.
    ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15)
}

/// Plays `config.games` whole games (every life; under v4 a lost life
/// resets the episode the way training sees it, pressing FIRE, but the game
/// and its score go on). Stops early, returning the games finished so far,
/// when `stop()` turns true.
pub fn play(
    spec: &EnvSpec,
    player: &Player,
    config: &PlayConfig,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<GameRecord>, PlayError> {
    let start = |g: usize| -> Result<Slot, EnvError> {
        let seed = config.seed + g as u64;
        let mut env = spec.make(seed)?;
        env.reset();
        Ok(Slot {
            env,
            rng: exploration_rng(seed),
            seed,
            actions: Vec::new(),
        })
    };
    let mut next = config.parallel.max(1).min(config.games);
    let mut slots: Vec<Slot> = (0..next).map(start).collect::<Result<_, _>>()?;
    let mut done = Vec::with_capacity(config.games);
    let Some(first) = slots.first() else {
        return Ok(done);
    };
    let actions = first.env.num_actions();
    let per: usize = first.env.obs_shape().iter().product();
    let mut input = Vec::new();
    while !slots.is_empty() && !stop() {
        let q = match player {
            Player::Greedy { net, .. } => {
                input.clear();
                for s in &slots {
                    input.extend_from_slice(s.env.obs());
                }
                debug_assert_eq!(input.len(), per * slots.len());
                net.q_values(&input, slots.len())
            }
            Player::Random => Vec::new(),
        };
        let mut i = 0;
        while i < slots.len() {
            let s = &mut slots[i];
            let action = match player {
                Player::Greedy { epsilon, .. } => {
                    let greedy = argmax(&q[i * actions..(i + 1) * actions]);
                    epsilon_greedy(greedy, *epsilon, actions, &mut s.rng)
                }
                Player::Random => s.rng.gen_range(0..actions),
            };
            s.actions.push(action as u8);
            let step = s.env.step(action);
            if let Some(game) = step.game {
                done.push(GameRecord {
                    seed: s.seed,
                    score: game.raw_score,
                    frames: game.frames,
                    steps: game.agent_steps,
                    actions: std::mem::take(&mut s.actions),
                });
                if next < config.games {
                    slots[i] = start(next)?;
                    next += 1;
                } else {
                    slots.remove(i);
                    continue;
                }
            } else if step.done() {
                s.env.reset();
            }
            i += 1;
        }
    }
    // Slots finish in any order; report games in seed order.
    done.sort_by_key(|g| g.seed);
    Ok(done)
}

/// Plays `game` again from its seed and actions, writing each screen to
/// `gif` (the first after the reset, then one per step). Returns the
/// screens written.
pub fn replay_into(
    spec: &EnvSpec,
    game: &GameRecord,
    gif: &mut GifWriter,
) -> Result<u64, PlayError> {
    let mut env = spec.make(game.seed)?;
    env.reset();
    gif.push_rgb(&env.render().rgb)?;
    let mut written = 1;
    let mut score = None;
    for &a in &game.actions {
        let step = env.step(a as usize);
        gif.push_rgb(&env.render().rgb)?;
        written += 1;
        if let Some(g) = step.game {
            score = Some(g.raw_score);
            break;
        }
        if step.done() {
            env.reset();
        }
    }
    match score {
        Some(s) if s == game.score => Ok(written),
        got => Err(PlayError::Diverged {
            seed: game.seed,
            played: game.score,
            got: got.unwrap_or(i64::MIN),
        }),
    }
}

/// Hundredths of a second per agent step: Atari runs at 60 frames a second
/// and an agent step lasts `frame_skip` frames.
pub fn gif_delay(spec: &EnvSpec) -> u16 {
    match spec {
        EnvSpec::Atari(c) => ((c.frame_skip as f64 * 100.0 / 60.0).round() as u16).max(2),
        EnvSpec::Catch(_) => 10,
    }
}

/// Writes `games` (replayed one after another) as one GIF at `path`.
pub fn write_gif(spec: &EnvSpec, games: &[GameRecord], path: &Path) -> Result<u64, PlayError> {
    let screen = spec.make(0)?.render();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| PlayError::Folder {
            path: dir.to_owned(),
            source,
        })?;
    }
    let mut gif = GifWriter::create(
        path,
        screen.width as u16,
        screen.height as u16,
        gif_delay(spec),
    )?;
    for g in games {
        replay_into(spec, g, &mut gif)?;
    }
    Ok(gif.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apex_env::CatchConfig;

    fn catch() -> EnvSpec {
        EnvSpec::Catch(CatchConfig::default())
    }

    #[test]
    fn random_games_are_whole_and_reproducible() {
        let config = PlayConfig {
            games: 30,
            seed: 5,
            parallel: 4,
        };
        let a = play(&catch(), &Player::Random, &config, &|| false).unwrap();
        assert_eq!(a.len(), 30);
        assert!(a.iter().all(|g| g.score.abs() == 1 && g.steps == 9));
        assert_eq!(
            a.iter().map(|g| g.seed).collect::<Vec<_>>(),
            (5..35).collect::<Vec<_>>()
        );
        let b = play(
            &catch(),
            &Player::Random,
            &PlayConfig {
                parallel: 7,
                ..config
            },
            &|| false,
        )
        .unwrap();
        assert_eq!(a, b, "batching does not change a game");
    }

    #[test]
    fn a_sticky_action_game_replays_exactly_seconds_later() {
        // Seed 0 once meant "seed ALE from the clock": a replay a second
        // later played a different game.
        let spec = EnvSpec::Atari(apex_env::AtariConfig::new(
            "breakout",
            apex_env::Protocol::V5,
        ));
        let config = PlayConfig {
            games: 1,
            seed: 0,
            parallel: 1,
        };
        let games = play(&spec, &Player::Random, &config, &|| false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let dir = tempfile::tempdir().unwrap();
        let frames = write_gif(&spec, &games, &dir.path().join("g.gif")).unwrap();
        assert_eq!(frames, games[0].steps + 1);
    }

    #[test]
    fn stopping_early_keeps_finished_games_only() {
        let config = PlayConfig {
            games: 100,
            seed: 0,
            parallel: 2,
        };
        let calls = std::cell::Cell::new(0);
        let games = play(&catch(), &Player::Random, &config, &|| {
            calls.set(calls.get() + 1);
            calls.get() > 20
        })
        .unwrap();
        assert_eq!(games.len(), 4, "2 at a time, 9 steps each, 20 steps");
    }
}
