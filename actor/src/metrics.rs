//! The actor's metrics; every series carries the actor's index as `actor`.

pub const ENV_STEPS: &str = "apex_actor_env_steps_total";
pub const EPISODES: &str = "apex_actor_episodes_total";
pub const EPISODE_SCORE: &str = "apex_actor_episode_raw_score";
pub const LAST_SCORE: &str = "apex_actor_last_episode_raw_score";
pub const TRANSITIONS_SENT: &str = "apex_actor_transitions_sent_total";
pub const WEIGHTS_VERSION: &str = "apex_actor_weights_version";
pub const EPSILON_MIN: &str = "apex_actor_epsilon_min";
pub const EPSILON_MAX: &str = "apex_actor_epsilon_max";
pub const SEND_WAIT: &str = "apex_actor_send_wait_seconds";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        ENV_STEPS,
        Unit::Count,
        "agent steps taken, over all of the actor's environments"
    );
    describe_counter!(EPISODES, Unit::Count, "games finished (all lives)");
    describe_histogram!(EPISODE_SCORE, "raw game score of finished games");
    describe_gauge!(LAST_SCORE, "raw game score of the latest finished game");
    describe_counter!(
        TRANSITIONS_SENT,
        Unit::Count,
        "transitions acknowledged by the replay server"
    );
    describe_gauge!(
        WEIGHTS_VERSION,
        Unit::Count,
        "version of the weights the actor plays with"
    );
    describe_gauge!(
        EPSILON_MIN,
        "smallest exploration rate among the actor's environments"
    );
    describe_gauge!(
        EPSILON_MAX,
        "largest exploration rate among the actor's environments"
    );
    describe_histogram!(
        SEND_WAIT,
        Unit::Seconds,
        "time stepping waited for the replay server to take a batch"
    );
}
