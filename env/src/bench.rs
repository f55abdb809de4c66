//! Throughput measurements behind `apex bench env`: the wrapped environment
//! (preprocessing and frame stack included, no policy) and the bare emulator.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ale::{Ale, AleSettings};
use crate::atari::{AtariConfig, AtariEnv};
use crate::{rom, EnvError};

/// Agent steps/s of `threads` threads, each stepping one environment with
/// random actions, over `duration` after a short warm-up.
pub fn env_steps_per_sec(
    config: &AtariConfig,
    threads: usize,
    duration: Duration,
) -> Result<f64, EnvError> {
    let envs = (0..threads)
        .map(|i| {
            let mut c = config.clone();
            c.seed += i as u64;
            AtariEnv::new(&c)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(run_threads(
        envs,
        duration,
        |env, rng| {
            if env.step(rng.gen_range(0..env.num_actions())).done() {
                env.reset();
            }
            1
        },
        |env| {
            env.reset();
        },
    ))
}

/// Emulator frames/s of `threads` threads, each running one bare ALE with
/// random minimal-set actions: the ceiling the wrapper is measured against.
pub fn raw_frames_per_sec(
    config: &AtariConfig,
    threads: usize,
    duration: Duration,
) -> Result<f64, EnvError> {
    let path = rom::locate(&config.rom_dir, &config.game)?;
    let emulators = (0..threads)
        .map(|i| {
            let ale = Ale::load(
                &path,
                AleSettings {
                    seed: i as i32,
                    repeat_action_probability: config.protocol.repeat_action_probability(),
                },
            );
            let actions = ale.minimal_actions();
            (ale, actions)
        })
        .collect::<Vec<_>>();
    Ok(run_threads(
        emulators,
        duration,
        |(ale, actions), rng| {
            ale.act(actions[rng.gen_range(0..actions.len())]);
            if ale.game_over() {
                ale.reset_game();
            }
            1
        },
        |_| {},
    ))
}

/// Runs `work` on each item in its own thread; returns the summed units of work per second.
fn run_threads<T: Send>(
    items: Vec<T>,
    duration: Duration,
    work: impl Fn(&mut T, &mut ChaCha8Rng) -> u64 + Sync,
    start: impl Fn(&mut T) + Sync,
) -> f64 {
    let warmup = Duration::from_millis(500);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .into_iter()
            .enumerate()
            .map(|(i, mut item)| {
                let (work, start) = (&work, &start);
                s.spawn(move || {
                    let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
                    start(&mut item);
                    let t0 = Instant::now();
                    while t0.elapsed() < warmup {
                        work(&mut item, &mut rng);
                    }
                    let t1 = Instant::now();
                    let mut n = 0;
                    while t1.elapsed() < duration {
                        for _ in 0..64 {
                            n += work(&mut item, &mut rng);
                        }
                    }
                    n as f64 / t1.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .sum()
    })
}
