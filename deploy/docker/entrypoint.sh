#!/usr/bin/env bash
# Runs `apex "$@"`. For `actor`, finds the replica's index on the exploration
# ladder when APEX_ACTOR_INDEX is not given (Kubernetes gives it: the
# StatefulSet's pod index), in this order:
#   APEX_ACTOR_SLOT   a number: Docker Swarm's 1-based {{.Task.Slot}}
#   reverse DNS       the container's name ends in actor-N or actor_N, as
#                     compose names replicas (N is 1-based)
#   APEX_ACTOR_PEERS  a DNS name listing every actor (a Kubernetes headless
#                     Service): the index is this pod's place among the
#                     sorted addresses
# APEX_ACTOR_INDEX_OFFSET (default 0) is added to an index found this way, so
# that replicas on several hosts do not repeat each other's indices.
# APEX_ACTOR_COUNT is raised to index+1 when replicas outnumber it, so a scaled
# actor still starts; the ladder is then longer than the count said.
set -euo pipefail
say() { echo "apex-entrypoint: $*" >&2; }

my_ip() {
  getent hosts "$(cat /etc/hostname)" | awk '{print $1; exit}'
}

actor_index() {
  if [[ "${APEX_ACTOR_SLOT:-}" =~ ^[0-9]+$ ]] && [ "$APEX_ACTOR_SLOT" -ge 1 ]; then
    echo $((APEX_ACTOR_SLOT - 1)); return
  fi
  local ip name n
  ip=$(my_ip)
  if [ -n "$ip" ]; then
    # Docker's DNS answers the reverse query with <container>.<network>;
    # /etc/hosts would answer with the container id, so ask DNS alone.
    name=$(getent -s dns hosts "$ip" | awk '{print $2; exit}')
    if [[ "${name%%.*}" =~ [-_]actor[-_]([0-9]+)$ ]]; then
      n=${BASH_REMATCH[1]}
      echo $((n - 1)); return
    fi
  fi
  if [ -n "${APEX_ACTOR_PEERS:-}" ] && [ -n "$ip" ]; then
    n=$(getent ahostsv4 "$APEX_ACTOR_PEERS" | awk '{print $1}' | sort -u -V | grep -nxF "$ip" | cut -d: -f1 || true)
    if [ -n "$n" ]; then echo $((n - 1)); return; fi
  fi
  return 1
}

if [ "${1:-}" = actor ]; then
  if [ -z "${APEX_ACTOR_INDEX:-}" ]; then
    # Peers may not be in DNS yet right after a scale-up: retry for a while.
    for _ in $(seq 1 30); do
      if APEX_ACTOR_INDEX=$(actor_index); then break; fi
      APEX_ACTOR_INDEX=""
      sleep 1
    done
    if [ -z "$APEX_ACTOR_INDEX" ]; then
      say "cannot tell this actor's index: set APEX_ACTOR_INDEX (or APEX_ACTOR_SLOT / APEX_ACTOR_PEERS)"
      exit 2
    fi
    APEX_ACTOR_INDEX=$((APEX_ACTOR_INDEX + ${APEX_ACTOR_INDEX_OFFSET:-0}))
    export APEX_ACTOR_INDEX
  fi
  count=${APEX_ACTOR_COUNT:-1}
  if [ "$APEX_ACTOR_INDEX" -ge "$count" ]; then
    say "actor index $APEX_ACTOR_INDEX is not below APEX_ACTOR_COUNT=$count: using $((APEX_ACTOR_INDEX + 1)); set APEX_ACTOR_COUNT (APEX_ACTORS in compose) to the number of actors"
    count=$((APEX_ACTOR_INDEX + 1))
  fi
  export APEX_ACTOR_COUNT=$count
  say "actor $APEX_ACTOR_INDEX of $APEX_ACTOR_COUNT"
fi
# The shared bearer token: APEX_TOKEN when given; otherwise the file
# APEX_TOKEN_FILE names, made once (with a random token) by whichever
# service starts first. Linking a finished file into place is atomic, so
# services starting together agree on one token.
if [ -n "${APEX_TOKEN:-}" ]; then
  unset APEX_TOKEN_FILE
elif [ -n "${APEX_TOKEN_FILE:-}" ] && [ ! -s "$APEX_TOKEN_FILE" ]; then
  tmp="$APEX_TOKEN_FILE.$$"
  if (od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$tmp") 2>/dev/null; then
    ln "$tmp" "$APEX_TOKEN_FILE" 2>/dev/null || true
    rm -f "$tmp"
  fi
  [ -s "$APEX_TOKEN_FILE" ] || { say "cannot write the token file $APEX_TOKEN_FILE: mount a writable volume there or set APEX_TOKEN"; exit 2; }
fi
exec apex "$@"
