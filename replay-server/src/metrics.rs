//! The replay server's metrics.

pub const INSERTED: &str = "apex_replay_inserted_transitions_total";
pub const SAMPLED: &str = "apex_replay_sampled_transitions_total";
pub const SIZE: &str = "apex_replay_size_transitions";
pub const CAPACITY: &str = "apex_replay_capacity_transitions";
pub const PRIORITY_UPDATES: &str = "apex_replay_priority_updates_total";
pub const INSERT_STREAMS: &str = "apex_replay_insert_streams";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
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
}
