//! The figures of `apex-bench env` from this crate alone, so they can be
//! taken while the rest of the workspace is being changed, plus the same
//! rates per CPU-second of the measuring threads (steadier on shared cores):
//! `cargo bench -p apex-env --bench throughput -- [--threads 1,2] [--seconds 10] [--game breakout] [--only env|raw]`.
//! Prints `name threads=N value` lines, as `apex-bench env` does.

use std::time::Duration;

use apex_env::bench::{self, Throughput};
use apex_env::{AtariConfig, Protocol};

fn main() {
    let mut threads = vec![1, 2];
    let mut seconds = 10.0;
    let mut game = "breakout".to_owned();
    let (mut env, mut raw) = (true, true);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the flag");
        match arg.as_str() {
            "--threads" => {
                threads = value()
                    .split(',')
                    .map(|t| t.parse().expect("--threads takes numbers like 1,2"))
                    .collect()
            }
            "--seconds" => seconds = value().parse().expect("--seconds takes a number"),
            "--game" => game = value(),
            "--only" => match value().as_str() {
                "env" => raw = false,
                "raw" => env = false,
                other => panic!("--only {other}: use env or raw"),
            },
            // Added by `cargo bench`.
            "--bench" => {}
            other => panic!("unknown argument {other}: use --threads, --seconds, --game or --only"),
        }
    }
    let config = AtariConfig::new(&game, Protocol::V4);
    let duration = Duration::from_secs_f64(seconds);
    for t in threads {
        if raw {
            let r = bench::raw_throughput(&config, t, duration).expect("raw emulator bench");
            print("apex_raw_ale_frames", t, r);
        }
        if env {
            let r = bench::env_throughput(&config, t, duration).expect("environment bench");
            print("apex_env_steps", t, r);
        }
    }
}

fn print(name: &str, threads: usize, r: Throughput) {
    println!("{name}_per_sec threads={threads} {:.0}", r.per_sec);
    if let Some(cpu) = r.per_cpu_sec {
        println!("{name}_per_cpu_sec threads={threads} {cpu:.0}");
    }
}
