#!/usr/bin/env bash
# Container healthcheck: this process serves metrics and, given a gRPC port,
# its server reports SERVING on gRPC health (`apex health`), which a stuck
# server stops doing though its port stays open. The image has no curl:
# bash's /dev/tcp reads the metrics.
set -eu
metrics_port=${APEX_METRICS_ADDR##*:}
exec 3<>"/dev/tcp/127.0.0.1/${metrics_port:-9100}"
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
head -n 1 <&3 | grep -q ' 200 '
exec 3<&-
if [ $# -gt 0 ]; then
  # The learner's image carries apex-probe, apex built without libtorch:
  # it answers in milliseconds where apex loading CUDA's libraries takes
  # seconds. The health service takes no token: leave the token settings out.
  probe=$(command -v apex-probe || echo apex)
  exec env -u APEX_TOKEN -u APEX_TOKEN_FILE "$probe" health "127.0.0.1:$1" --timeout 4 >/dev/null
fi
