#!/usr/bin/env bash
# End-to-end test of the Docker Compose stack, on this machine:
#   1. base images (scripts/docker-base-images.sh) and the apex image are built;
#   2. replay-server, learner, 2 actors, the evaluator and Prometheus come up (Grafana cannot
#      be pulled or built without a registry: its files are checked by
#      scripts/validate-deploy.sh instead);
#   3. transitions flow, the actors' weights versions rise, every Prometheus
#      target is up, every query of the Grafana dashboard returns data;
#   4. the actors are scaled to 4: the new ones show up in Prometheus and in
#      the replay server's inserts;
#   5. the stack is taken down with its volumes (E2E_KEEP=1 leaves it up).
# Settings are shrunk for a 2-core machine. Takes a few minutes once the
# image is built; the first image build takes much longer (torch download,
# full compile); E2E_SKIP_BUILD=1 uses the image as it is. Not part of CI.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
say() { echo "e2e: $*" >&2; }

if docker compose version >/dev/null 2>&1; then compose_cmd=(docker compose); else compose_cmd=(docker-compose); fi
export COMPOSE_PROJECT_NAME=${E2E_PROJECT:-apexe2e}
compose() { "${compose_cmd[@]}" -f docker-compose.yml "$@"; }

# Small and quick: a tiny replay, few environments, frequent publication.
export APEX_REPLAY_CAPACITY=${APEX_REPLAY_CAPACITY:-20000}
export APEX_REPLAY_MIN_SIZE=${APEX_REPLAY_MIN_SIZE:-500}
export APEX_ENVS=${APEX_ENVS:-2}
export APEX_SEND_BATCH=${APEX_SEND_BATCH:-16}
export APEX_BATCH_SIZE=${APEX_BATCH_SIZE:-8}
export APEX_PUBLISH_EVERY=${APEX_PUBLISH_EVERY:-5}
export APEX_CHECKPOINT_EVERY=${APEX_CHECKPOINT_EVERY:-200}
# Short evaluation rounds, soon and often, so its panels have data.
export APEX_EVAL_EPISODES=${APEX_EVAL_EPISODES:-2}
export APEX_EVAL_EVERY_SECS=${APEX_EVAL_EVERY_SECS:-15}
# Host ports away from the defaults, so a stack already running is not hit.
export APEX_REPLAY_PORT=${APEX_REPLAY_PORT:-25051}
export APEX_LEARNER_PORT=${APEX_LEARNER_PORT:-25052}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-29090}
prom=http://127.0.0.1:$PROMETHEUS_PORT
check() { python3 deploy/tests/promcheck.py "$prom" "$@"; }
services=(replay-server learner actor evaluator prometheus)

t0=$(date +%s)
failed=0
finish() {
  local rc=$?
  [ "$failed" = 0 ] && [ "$rc" = 0 ] || { say "failed: logs of the stack follow"; compose logs --tail=30 >&2 || true; }
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    say "stack left up (project $COMPOSE_PROJECT_NAME); take it down with: ${compose_cmd[*]} -p $COMPOSE_PROJECT_NAME down -v"
  else
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  say "took $(( $(date +%s) - t0 ))s in all"
}
trap finish EXIT

scripts/docker-base-images.sh
# Behind an HTTPS-inspecting proxy the build must trust what this host trusts
# beyond the usual CAs: Debian keeps local additions in this folder.
if [ -z "${APEX_EXTRA_CA_CERTS:-}" ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  APEX_EXTRA_CA_CERTS=$(cat /usr/local/share/ca-certificates/*.crt)
  export APEX_EXTRA_CA_CERTS
fi
if [ "${E2E_SKIP_BUILD:-0}" = 1 ]; then
  say "using the image already built (E2E_SKIP_BUILD=1)"
else
  say "building the apex image"
  tb=$(date +%s)
  compose build replay-server
  say "image built in $(( $(date +%s) - tb ))s"
fi
say "image size: $(docker image inspect -f '{{.Size}}' "${APEX_IMAGE:-apex:latest}" | awk '{printf "%.2f GB", $1/1e9}')"
docker run --rm "${APEX_IMAGE:-apex:latest}" doctor

say "starting ${services[*]} with 2 actors"
tu=$(date +%s)
APEX_ACTORS=2 compose up -d --scale actor=2 "${services[@]}"
check targets replay-server=1 learner=1 actor=2 evaluator=1 prometheus=1 || failed=1
check positive 'sum(rate(apex_replay_inserted_transitions_total[1m]))' || failed=1
check positive 'max by (actor) (apex_actor_transitions_sent_total)' || failed=1
check positive 'min by (actor) (apex_actor_weights_version)' || failed=1
check rises 'max by (actor) (apex_actor_weights_version)' 20 || failed=1
check positive 'sum(rate(apex_learner_updates_total[1m]))' || failed=1
check dashboard deploy/grafana/dashboards/apex.json || failed=1
say "2 actors checked in $(( $(date +%s) - tu ))s"

say "scaling to 4 actors"
ts=$(date +%s)
APEX_ACTORS=4 compose up -d --no-recreate --scale actor=4 actor
check targets replay-server=1 learner=1 actor=4 evaluator=1 prometheus=1 || failed=1
check labels 'sum by (actor) (apex_replay_inserted_transitions_total)' actor 0 1 2 3 || failed=1
check labels 'max by (actor) (apex_actor_weights_version)' actor 0 1 2 3 || failed=1
say "4 actors checked in $(( $(date +%s) - ts ))s"

if [ "$failed" != 0 ]; then say "FAILED"; exit 1; fi
say "passed"
