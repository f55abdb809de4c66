//! `apex-bench actor` end to end, briefly: it measures the environments
//! alone, then the actor loop against a live replay server, and stops the
//! actor before the server so nothing it sends is refused.

use std::process::Command;

#[test]
fn the_actor_bench_measures_both_and_stops_cleanly() {
    // Passes on the stepping thread (the default) and overlapped.
    for groups in ["1", "2"] {
        let o = Command::new(env!("CARGO_BIN_EXE_apex-bench"))
            .args(["actor", "--game", "catch", "--envs", "4", "--seconds", "1"])
            .args(["--inference-groups", groups])
            .output()
            .unwrap();
        let out = apex_system_tests::ok(&o);
        let rate = |key: &str| -> f64 {
            out.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {out}"))
        };
        assert!(rate("env_alone_steps_per_sec") > 0.0);
        assert!(rate("actor_loop_steps_per_sec") > 0.0);
        assert!(out.contains("actor loop / env alone = "), "{out}");
    }
}
