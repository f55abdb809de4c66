#!/usr/bin/env bash
# The Compose file as a Docker Swarm stack, for real, on this machine:
#   1. a single-node swarm (`docker swarm init`, unless this engine is in one);
#   2. `docker stack deploy -c docker-compose.yml` with 2 actors (Prometheus
#      then published on this node: the routing mesh needs IPVS);
#   3. Prometheus discovers every actor task (DNS of the dnsrr service) and
#      each actor's ladder index is distinct (its task slot);
#   4. the actors are scaled to 4 by redeploying with APEX_ACTORS=4 (which
#      also lengthens the ladder): 4 actor targets, indices 0-3, 4 distinct
#      epsilons; each task's index is also read from its log;
#   5. the stack is removed with its volumes and the swarm left (only if this
#      script made it), also when a check fails (E2E_KEEP=1 leaves it up).
# Needs the images (scripts/e2e-compose.sh or `docker compose build` builds
# them; a swarm does not build). Grafana has no image on a machine with no
# registry: its service is then scaled to 0. Not part of CI.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
say() { echo "e2e-swarm: $*" >&2; }

stack=${E2E_STACK:-apexswarm}
# On ports of their own, away from e2e-compose.sh's.
export APEX_REPLAY_PORT=${APEX_REPLAY_PORT:-26051}
export APEX_LEARNER_PORT=${APEX_LEARNER_PORT:-26052}
export PROMETHEUS_PORT=${PROMETHEUS_PORT:-29091}
export GRAFANA_PORT=${GRAFANA_PORT:-23001}
. scripts/e2e-settings.sh
# Prometheus's port goes through the routing mesh, which needs the kernel's
# IPVS (absent on some hosts): after each deploy, publish it on this node
# directly so that the checks reach it either way.
deploy() {
  docker stack deploy --resolve-image never -c docker-compose.yml "$stack" >&2
  docker service update -d --publish-rm 9090 \
    --publish-add "mode=host,published=$PROMETHEUS_PORT,target=9090" "${stack}_prometheus" >/dev/null
}

# A redeploy replaces a service's running tasks one at a time (a rolling
# update): until it has finished, some tasks still run the old settings.
updated() {
  local state=""
  for _ in $(seq 1 60); do
    state=$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$1")
    case "$state" in "" | completed) return 0 ;; esac
    sleep 2
  done
  say "FAIL: the update of $1 is still $state after 120 s"
  return 1
}

for image in "$APEX_REPLAY_IMAGE" "$APEX_ACTOR_IMAGE" "$APEX_LEARNER_IMAGE"; do
  docker image inspect "$image" >/dev/null 2>&1 ||
    { say "no image $image: build the images first (docker compose build, or scripts/e2e-compose.sh)"; exit 2; }
done

t0=$(date +%s)
failed=0
made_swarm=0
finish() {
  local rc=$?
  [ "$failed" = 0 ] && [ "$rc" = 0 ] || {
    say "failed: the stack's tasks and logs follow"
    docker stack ps --no-trunc "$stack" >&2 || true
    for s in replay-server learner actor evaluator prometheus; do
      docker service logs --tail 20 "${stack}_$s" >&2 2>&1 || true
    done
  }
  if [ "${E2E_KEEP:-0}" = 1 ]; then
    say "stack left up; remove it with: docker stack rm $stack$([ "$made_swarm" = 1 ] && echo " && docker swarm leave --force")"
  else
    say "removing the stack"
    docker stack rm "$stack" >/dev/null 2>&1 || true
    # Volumes and the network go once the tasks' containers are gone.
    for _ in $(seq 1 60); do
      [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")" ] && break
      sleep 2
    done
    docker volume ls -q --filter "label=com.docker.stack.namespace=$stack" | xargs -r docker volume rm >/dev/null 2>&1 || true
    if [ "$made_swarm" = 1 ]; then
      docker swarm leave --force >/dev/null 2>&1 && say "left the swarm"
    fi
  fi
  say "took $(( $(date +%s) - t0 ))s in all"
}
trap finish EXIT

if [ "$(docker info -f '{{.Swarm.LocalNodeState}}')" = active ]; then
  say "this engine is already in a swarm: using it, and leaving it as it is"
else
  # One address to advertise, for hosts with several.
  docker swarm init --advertise-addr "${E2E_ADVERTISE_ADDR:-127.0.0.1}" >/dev/null
  made_swarm=1
  say "single-node swarm made"
fi

say "deploying stack $stack with 2 actors"
APEX_ACTORS=2 deploy
if ! docker image inspect "${GRAFANA_IMAGE:-grafana/grafana:11.6.0}" >/dev/null 2>&1; then
  say "no Grafana image here: its service is scaled to 0"
  docker service scale -d "${stack}_grafana=0" >/dev/null
fi
docker stack services "$stack" >&2
check targets replay-server=1 learner=1 actor=2 evaluator=1 prometheus=1 || failed=1
check positive 'sum(rate(apex_replay_inserted_transitions_total[1m]))' || failed=1
check rises 'max by (actor) (apex_actor_weights_version)' 20 || failed=1
check distinct 'max by (actor) (apex_actor_epsilon_max)' actor 2 || failed=1

say "scaling to 4 actors (redeploy with APEX_ACTORS=4)"
APEX_ACTORS=4 deploy
updated "${stack}_actor" || failed=1
check targets replay-server=1 learner=1 actor=4 evaluator=1 prometheus=1 || failed=1
check labels 'sum by (actor) (apex_replay_inserted_transitions_total)' actor 0 1 2 3 || failed=1
check distinct 'max by (actor) (apex_actor_epsilon_max)' actor 4 || failed=1
# Each running task's own word for its index (the entrypoint logs it).
indices=$(docker service logs --raw "${stack}_actor" 2>&1 | sed -n 's/^apex-entrypoint: actor \([0-9]*\) of 4$/\1/p' | sort -n | uniq | tr '\n' ' ')
say "actor indices in the tasks' logs (ladder of 4): $indices"
[ "$indices" = "0 1 2 3 " ] || { say "FAIL: expected indices 0 1 2 3"; failed=1; }
docker stack ps --filter desired-state=running --format '{{.Name}} {{.CurrentState}}' "$stack" >&2
docker stats --no-stream --format '{{.Name}}: {{.MemUsage}}, CPU {{.CPUPerc}}' \
  $(docker ps -q --filter "label=com.docker.stack.namespace=$stack") >&2

if [ "$failed" != 0 ]; then say "FAILED"; exit 1; fi
say "passed"
