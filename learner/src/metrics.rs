//! The learner's metrics.

pub const UPDATES: &str = "apex_learner_updates_total";
pub const LOSS: &str = "apex_learner_loss";
pub const MEAN_Q: &str = "apex_learner_mean_q";
pub const WEIGHTS_VERSION: &str = "apex_learner_weights_version";
pub const SAMPLED: &str = "apex_learner_sampled_transitions_total";
pub const DATA_WAIT: &str = "apex_learner_data_wait_seconds";
pub const CHECKPOINTS: &str = "apex_learner_checkpoints_total";
pub const CHECKPOINT_FAILURES: &str = "apex_learner_checkpoint_failures_total";
pub const BAD_BATCHES: &str = "apex_learner_bad_batches_total";
pub const NONFINITE_UPDATES: &str = "apex_learner_nonfinite_updates_total";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(UPDATES, Unit::Count, "gradient updates");
    describe_gauge!(LOSS, "Huber loss of the last update");
    describe_gauge!(
        MEAN_Q,
        "mean Q-value of the taken actions in the last batch"
    );
    describe_gauge!(
        WEIGHTS_VERSION,
        Unit::Count,
        "version of the newest published weights"
    );
    describe_counter!(SAMPLED, Unit::Count, "transitions trained on");
    metrics::describe_histogram!(
        DATA_WAIT,
        Unit::Seconds,
        "time the training loop waited for each batch"
    );
    describe_counter!(CHECKPOINTS, Unit::Count, "checkpoints written");
    describe_counter!(
        CHECKPOINT_FAILURES,
        Unit::Count,
        "periodic checkpoints that could not be written (training went on)"
    );
    describe_counter!(
        BAD_BATCHES,
        Unit::Count,
        "sampled batches dropped because they do not fit the network (bad action, shape or frames)"
    );
    describe_counter!(
        NONFINITE_UPDATES,
        Unit::Count,
        "updates skipped because their loss or gradient was not finite"
    );
}
