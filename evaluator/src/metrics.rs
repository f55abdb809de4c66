//! The evaluator's metrics.

pub const RAW_SCORE: &str = "apex_eval_raw_score";
pub const RAW_SCORE_MEDIAN: &str = "apex_eval_raw_score_median";
pub const GAMES: &str = "apex_eval_games_total";
pub const WEIGHTS_VERSION: &str = "apex_eval_weights_version";
pub const ROUND_SECONDS: &str = "apex_eval_round_seconds";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(
        RAW_SCORE,
        "mean raw game score of the latest evaluation round, by protocol"
    );
    describe_gauge!(
        RAW_SCORE_MEDIAN,
        "median raw game score of the latest evaluation round, by protocol"
    );
    describe_counter!(GAMES, Unit::Count, "evaluation games played, by protocol");
    describe_gauge!(
        WEIGHTS_VERSION,
        Unit::Count,
        "weights version of the latest evaluation round"
    );
    describe_gauge!(
        ROUND_SECONDS,
        Unit::Seconds,
        "wall time of the latest evaluation round"
    );
}
