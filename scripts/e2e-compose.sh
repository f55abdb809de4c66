#!/usr/bin/env bash
# End-to-end test of the Docker Compose stack, on this machine:
#   1. base images (scripts/docker-base-images.sh) and the three apex images
#      (replay-server, actor, learner) are built; each image's size is checked
#      against its limit and the replay server's binary for libtorch;
#   2. replay-server, learner, 2 actors, the evaluator and Prometheus come up (Grafana cannot
#      be pulled or built without a registry: its files are checked by
#      scripts/validate-deploy.sh instead);
#   3. the servers' healthchecks (gRPC health) pass, transitions flow, the
#      actors' weights versions rise, every Prometheus target is up, every
#      query of the Grafana dashboard returns data (the evaluation and
#      data-wait panels numbers, not only NaN);
#   4. the actors are scaled to 4: the new ones show up in Prometheus and in
#      the replay server's inserts, with distinct ladder indices and epsilons;
#   5. a second actor host, played by this one: 2 actors of
#      deploy/docker-compose.actor.yml as their own compose project, joining
#      through the stack's published ports at this host's address (as another
#      machine would; E2E_HOST_ADDR overrides it), their metrics published on
#      host ports and listed in deploy/prometheus/targets/ as
#      remote-actors.yml.example says: Prometheus scrapes both (remote-actor
#      targets up), and the replay takes their inserts as actors 4 and 5;
#      each container's memory (docker stats) is printed;
#   6. the stack and the second host's actors are taken down with their
#      volumes (E2E_KEEP=1 leaves them up).
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

# Host ports away from the defaults, so a stack already running is not hit.
export APEX_REPLAY_PORT=${APEX_REPLAY_PORT:-25051}
export APEX_LEARNER_PORT=${APEX_LEARNER_PORT:-25052}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-29090}
. scripts/e2e-settings.sh
export APEX_CHECKPOINT_EVERY=${APEX_CHECKPOINT_EVERY:-200}
# The replay's variables under their current names (e2e-settings.sh may give
# the old ones, which apex still reads with a warning).
export APEX_CAPACITY=${APEX_CAPACITY:-${APEX_REPLAY_CAPACITY:-20000}}
export APEX_MIN_SIZE=${APEX_MIN_SIZE:-${APEX_REPLAY_MIN_SIZE:-500}}
# Evaluation rounds often, so that the evaluation panels have data soon
# (the stack's own default is apex local's 0.1 of a core).
export APEX_EVAL_BUDGET=${APEX_EVAL_BUDGET:-0.5}
# The second actor host: its compose project, its metrics ports, the
# Prometheus targets file that lists them, and the address it reaches the
# stack at (this host's, not loopback: as from another machine).
remote_project=${COMPOSE_PROJECT_NAME}-remote
remote_ports=${E2E_REMOTE_METRICS_PORTS:-29101-29164}
remote_targets=deploy/prometheus/targets/e2e-remote-actors.yml
host_addr=${E2E_HOST_ADDR:-$( (hostname -I 2>/dev/null || true) | awk '{print $1}')}
remote() { "${compose_cmd[@]}" -p "$remote_project" -f deploy/docker-compose.actor.yml "$@"; }
services=(replay-server learner actor evaluator prometheus)
replay_image=$APEX_REPLAY_IMAGE
actor_image=$APEX_ACTOR_IMAGE
learner_image=$APEX_LEARNER_IMAGE
# Image size limits, bytes (docker's MB and GB are decimal).
max_replay_bytes=${E2E_MAX_REPLAY_BYTES:-150000000}
max_actor_bytes=${E2E_MAX_ACTOR_BYTES:-1500000000}

t0=$(date +%s)
failed=0
# deploy/docker-compose.actor.yml refuses to start without these; set for
# `down` and `logs` too, with the real values once the stack runs.
remote_env() {
  APEX_REPLAY=${remote_replay:-http://unset:1} APEX_LEARNER=${remote_learner:-http://unset:1} \
    APEX_TOKEN=${remote_token:-unset} APEX_METRICS_PORTS=$remote_ports "$@"
}
finish() {
  local rc=$?
  if [ "$failed" != 0 ] || [ "$rc" != 0 ]; then
    say "failed: logs of the stack follow"
    compose logs --tail=30 >&2 || true
    remote_env remote logs --tail=30 >&2 || true
  fi
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    say "stack left up (project $COMPOSE_PROJECT_NAME); take it down with: ${compose_cmd[*]} -p $COMPOSE_PROJECT_NAME down -v"
    say "second host's actors left up (project $remote_project): ${compose_cmd[*]} -p $remote_project -f deploy/docker-compose.actor.yml down -v; rm $remote_targets"
  else
    remote_env remote down -v --remove-orphans >/dev/null 2>&1 || true
    rm -f "$remote_targets"
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
  say "building the apex images"
  tb=$(date +%s)
  # One build: the three targets share every stage but the last. The
  # evaluator runs the actor's image.
  compose build replay-server actor learner
  say "images built in $(( $(date +%s) - tb ))s"
fi
size() { docker image inspect -f '{{.Size}}' "$1"; }
human() { awk '{printf "%.0f MB", $1/1e6}'; }
for image in "$replay_image" "$actor_image" "$learner_image"; do
  say "image size: $image $(size "$image" | human)"
done
[ "$(size "$replay_image")" -le "$max_replay_bytes" ] ||
  { say "FAIL: $replay_image is over $(echo "$max_replay_bytes" | human)"; failed=1; }
[ "$(size "$actor_image")" -le "$max_actor_bytes" ] ||
  { say "FAIL: $actor_image is over $(echo "$max_actor_bytes" | human)"; failed=1; }
if docker run --rm --entrypoint ldd "$replay_image" /usr/local/bin/apex | grep -E 'libtorch|libc10'; then
  say "FAIL: the replay server's binary links libtorch"; failed=1
fi
if docker run --rm --entrypoint ldd "$actor_image" /usr/local/bin/apex | grep -E 'libtorch_cuda|libc10_cuda|not found'; then
  say "FAIL: the actor's binary links libtorch_cuda or misses a library"; failed=1
fi
docker run --rm "$actor_image" doctor
docker run --rm "$learner_image" doctor

say "starting ${services[*]} with 2 actors"
tu=$(date +%s)
APEX_ACTORS=2 compose up -d --scale actor=2 "${services[@]}"
healthy() {
  local c status
  c=$(compose ps -q "$1")
  for _ in $(seq 1 30); do
    status=$(docker inspect -f '{{.State.Health.Status}}' "$c")
    [ "$status" = healthy ] && { echo "ok   $1 healthy (gRPC health SERVING)"; return 0; }
    sleep 3
  done
  echo "FAIL $1 is $status: $(docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$c" | tail -2)"
  return 1
}
healthy replay-server || failed=1
healthy learner || failed=1
check targets replay-server=1 learner=1 actor=2 evaluator=1 prometheus=1 || failed=1
check positive 'sum(rate(apex_replay_inserted_transitions_total[1m]))' || failed=1
check positive 'max by (actor) (apex_actor_transitions_sent_total)' || failed=1
check positive 'min by (actor) (apex_actor_weights_version)' || failed=1
check rises 'max by (actor) (apex_actor_weights_version)' 20 || failed=1
check positive 'sum(rate(apex_learner_updates_total[1m]))' || failed=1
# The learner's data-wait panel (32) and the evaluation row (35-39) must
# show numbers: the evaluator's short rounds finish within the deadline.
check dashboard deploy/grafana/dashboards/apex.json 32 35 36 37 38 39 || failed=1
say "2 actors checked in $(( $(date +%s) - tu ))s"

say "scaling to 4 actors"
ts=$(date +%s)
APEX_ACTORS=4 compose up -d --no-recreate --scale actor=4 actor
check targets replay-server=1 learner=1 actor=4 evaluator=1 prometheus=1 || failed=1
check labels 'sum by (actor) (apex_replay_inserted_transitions_total)' actor 0 1 2 3 || failed=1
check labels 'max by (actor) (apex_actor_weights_version)' actor 0 1 2 3 || failed=1
check distinct 'max by (actor) (apex_actor_epsilon_max)' actor 4 || failed=1
say "4 actors checked in $(( $(date +%s) - ts ))s"

say "a second actor host: 2 actors joining at $host_addr, scraped on host ports of $remote_ports"
tr=$(date +%s)
if [ -z "$host_addr" ]; then
  say "FAIL: no address of this host found (hostname -I): set E2E_HOST_ADDR"; failed=1
else
  remote_replay=http://$host_addr:$APEX_REPLAY_PORT
  remote_learner=http://$host_addr:$APEX_LEARNER_PORT
  remote_token=${APEX_TOKEN:-$(compose exec -T replay-server cat /var/lib/apex/secrets/token)}
  # The ladder runs over the stack's 4 and these 2: indices 4 and 5.
  APEX_ACTORS=6 APEX_ACTOR_INDEX_OFFSET=4 remote_env remote up -d --scale actor=2
  # Each replica's published metrics port, listed for Prometheus as
  # deploy/prometheus/targets/remote-actors.yml.example says.
  targets=()
  for c in $(remote_env remote ps -q actor); do
    port=$(docker port "$c" 9100/tcp | head -1 | sed 's/.*://')
    targets+=("\"$host_addr:$port\"")
  done
  say "remote actor targets: ${targets[*]}"
  ( IFS=,; printf -- '- targets: [%s]\n  labels: {run: apex, site: e2e-remote}\n' "${targets[*]}" ) >"$remote_targets"
  check targets replay-server=1 learner=1 actor=4 evaluator=1 prometheus=1 remote-actor=2 || failed=1
  check labels 'sum by (actor) (apex_replay_inserted_transitions_total)' actor 4 5 || failed=1
  check labels 'max by (actor) (apex_actor_weights_version{job="remote-actor"})' actor 4 5 || failed=1
  check labels 'max by (actor) (apex_actor_env_steps_total{job="remote-actor", run="apex"})' actor 4 5 || failed=1
fi
say "second host checked in $(( $(date +%s) - tr ))s"
# What each process holds, for sizing deploy/k8s's requests and limits.
# shellcheck disable=SC2046 # one argument per container id
docker stats --no-stream --format '{{.Name}}: {{.MemUsage}}, CPU {{.CPUPerc}}' $(compose ps -q) $(remote_env remote ps -q) >&2
check show 'max by (job) (max_over_time(process_resident_memory_bytes[10m]))'
check show 'max(apex_replay_bytes_per_transition)'
check show 'sum(apex_replay_size_transitions)'

if [ "$failed" != 0 ]; then say "FAILED"; exit 1; fi
say "passed"
