//! Throughput measurements behind `apex-bench env`: the wrapped environment
//! (preprocessing and frame stack included, no policy) and the bare emulator.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::ale::{Ale, AleSettings};
use crate::atari::{AtariConfig, AtariEnv};
use crate::{rom, EnvError};

/// What a throughput measurement found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Units of work per wall-clock second, all threads together.
    pub per_sec: f64,
    /// Units per second of CPU time the measuring threads were given:
    /// steadier than `per_sec` when other work shares the cores. None where
    /// the OS does not tell a thread's CPU time.
    pub per_cpu_sec: Option<f64>,
}

/// Agent steps/s of `threads` threads, each stepping one environment with
/// random actions, over `duration` after a short warm-up.
pub fn env_steps_per_sec(
    config: &AtariConfig,
    threads: usize,
    duration: Duration,
) -> Result<f64, EnvError> {
    Ok(env_throughput(config, threads, duration)?.per_sec)
}

/// Emulator frames/s of `threads` threads, each running one bare ALE with
/// random minimal-set actions: the ceiling the wrapper is measured against.
pub fn raw_frames_per_sec(
    config: &AtariConfig,
    threads: usize,
    duration: Duration,
) -> Result<f64, EnvError> {
    Ok(raw_throughput(config, threads, duration)?.per_sec)
}

/// Agent steps of the wrapped environment, counted as [`env_steps_per_sec`] does.
pub fn env_throughput(
    config: &AtariConfig,
    threads: usize,
    duration: Duration,
) -> Result<Throughput, EnvError> {
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

/// Frames of the bare emulator, counted as [`raw_frames_per_sec`] does.
pub fn raw_throughput(
    config: &AtariConfig,
    threads: usize,
    duration: Duration,
) -> Result<Throughput, EnvError> {
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

/// Runs `work` on each item in its own thread and totals the units of work.
fn run_threads<T: Send>(
    items: Vec<T>,
    duration: Duration,
    work: impl Fn(&mut T, &mut ChaCha8Rng) -> u64 + Sync,
    start: impl Fn(&mut T) + Sync,
) -> Throughput {
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
                    let cpu1 = thread_cpu_seconds();
                    let mut n = 0;
                    while t1.elapsed() < duration {
                        for _ in 0..64 {
                            n += work(&mut item, &mut rng);
                        }
                    }
                    let cpu = cpu1.zip(thread_cpu_seconds()).map(|(a, b)| b - a);
                    (n as f64, t1.elapsed().as_secs_f64(), cpu)
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect();
        let units: f64 = results.iter().map(|r| r.0).sum();
        let cpu: Option<f64> = results.iter().map(|r| r.2).sum();
        Throughput {
            per_sec: results.iter().map(|(n, wall, _)| n / wall).sum(),
            per_cpu_sec: cpu.filter(|&c| c > 0.0).map(|c| units / c),
        }
    })
}

/// The calling thread's CPU time, user and system, where Linux tells it
/// (in ticks of 1/100 s, the USER_HZ of every Linux architecture in use).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // The fields after the command name, which may hold spaces: the first
    // is stat(5)'s third (state), so utime and stime (14th, 15th) are 11, 12.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_busy_thread_is_charged_cpu_time() {
        let start = thread_cpu_seconds().expect("linux tells a thread's cpu time");
        let t = Instant::now();
        let mut x = 0u64;
        while thread_cpu_seconds().unwrap() - start < 0.05 {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            assert!(t.elapsed() < Duration::from_secs(20), "no cpu time charged");
        }
    }
}
