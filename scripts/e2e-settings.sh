# Sourced by scripts/e2e-compose.sh and scripts/e2e-swarm.sh: the stack's
# settings shrunk for a 2-core machine (a tiny replay, few environments,
# frequent publication, short evaluation rounds soon and often so that the
# evaluation panels have data), and `check`, which asks Prometheus. Each
# setting can be overridden from the environment. Set PROMETHEUS_PORT first.
export APEX_CAPACITY=${APEX_CAPACITY:-20000}
export APEX_MIN_SIZE=${APEX_MIN_SIZE:-500}
export APEX_ENVS=${APEX_ENVS:-2}
export APEX_SEND_BATCH=${APEX_SEND_BATCH:-16}
export APEX_BATCH_SIZE=${APEX_BATCH_SIZE:-8}
export APEX_PUBLISH_EVERY=${APEX_PUBLISH_EVERY:-5}
export APEX_EVAL_EPISODES=${APEX_EVAL_EPISODES:-2}
export APEX_EVAL_EVERY_SECS=${APEX_EVAL_EVERY_SECS:-15}
export APEX_REPLAY_IMAGE=${APEX_REPLAY_IMAGE:-apex-replay-server:latest}
export APEX_ACTOR_IMAGE=${APEX_ACTOR_IMAGE:-apex-actor:latest}
export APEX_LEARNER_IMAGE=${APEX_LEARNER_IMAGE:-apex-learner:latest}
prom=http://127.0.0.1:$PROMETHEUS_PORT
check() { python3 deploy/tests/promcheck.py "$prom" "$@"; }
