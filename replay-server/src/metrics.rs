//! The replay server's metrics.

pub const INSERTED: &str = "apex_replay_inserted_transitions_total";
pub const SAMPLED: &str = "apex_replay_sampled_transitions_total";
pub const SIZE: &str = "apex_replay_size_transitions";
pub const CAPACITY: &str = "apex_replay_capacity_transitions";
pub const PRIORITY_UPDATES: &str = "apex_replay_priority_updates_total";
pub const INSERT_STREAMS: &str = "apex_replay_insert_streams";
pub const STORED_BYTES: &str = "apex_replay_stored_bytes";
pub const BYTES_PER_TRANSITION: &str = "apex_replay_bytes_per_transition";
pub const INSERT_LATENCY: &str = "apex_replay_insert_latency_seconds";
pub const SAMPLE_LATENCY: &str = "apex_replay_sample_latency_seconds";
/// Each wait on the rate limiter, by side: its `_sum` is the seconds waited
/// (a true counter) and its `_count` the waits.
pub const LIMITER_WAIT: &str = "apex_replay_rate_limiter_wait_seconds";
/// Deprecated, kept for one release: the same seconds in a gauge named like
/// a counter. Dashboards read `LIMITER_WAIT`'s `_sum` instead.
pub const LIMITER_WAIT_TOTAL: &str = "apex_replay_rate_limiter_wait_seconds_total";
pub const LIMITER_WAITING: &str = "apex_replay_rate_limiter_waiting";
pub const CHECKPOINTS: &str = "apex_replay_checkpoints_total";
pub const CHECKPOINT_SECONDS: &str = "apex_replay_checkpoint_duration_seconds";
pub const DUPLICATES: &str = "apex_replay_duplicate_batches_total";
pub const WINDOW_BYTES: &str = "apex_replay_stream_window_bytes";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(INSERTED, Unit::Count, "transitions inserted by actors");
    describe_counter!(SAMPLED, Unit::Count, "transitions sampled by the learner");
    describe_gauge!(SIZE, Unit::Count, "transitions held");
    describe_gauge!(
        CAPACITY,
        Unit::Count,
        "most transitions held before FIFO eviction"
    );
    describe_counter!(
        PRIORITY_UPDATES,
        Unit::Count,
        "priority updates applied, by outcome"
    );
    describe_gauge!(INSERT_STREAMS, Unit::Count, "open actor insert streams");
    describe_gauge!(
        STORED_BYTES,
        Unit::Bytes,
        "bytes the held transitions and their distinct frames take"
    );
    describe_gauge!(
        BYTES_PER_TRANSITION,
        Unit::Bytes,
        "stored bytes per held transition"
    );
    describe_histogram!(
        INSERT_LATENCY,
        Unit::Seconds,
        "from an insert batch's arrival to its acknowledgement, rate-limiter wait included"
    );
    describe_histogram!(
        SAMPLE_LATENCY,
        Unit::Seconds,
        "from a sample request's arrival to its batch, rate-limiter wait included"
    );
    describe_histogram!(
        LIMITER_WAIT,
        Unit::Seconds,
        "each wait on the rate limiter, by side (insert or sample)"
    );
    describe_gauge!(
        LIMITER_WAIT_TOTAL,
        Unit::Seconds,
        "deprecated (use apex_replay_rate_limiter_wait_seconds_sum): time spent waiting on the rate limiter, by side"
    );
    describe_gauge!(
        LIMITER_WAITING,
        Unit::Count,
        "calls waiting on the rate limiter now, by side"
    );
    describe_counter!(CHECKPOINTS, Unit::Count, "checkpoints written");
    describe_counter!(
        DUPLICATES,
        Unit::Count,
        "resent batches the replay already held (acknowledged, not stored again)"
    );
    describe_gauge!(
        WINDOW_BYTES,
        Unit::Bytes,
        "bytes the open insert streams' frame windows hold (bounded by --stream-window-mb)"
    );
    describe_histogram!(
        CHECKPOINT_SECONDS,
        Unit::Seconds,
        "time to write a checkpoint (inserts and sampling go on meanwhile)"
    );
}
