#!/usr/bin/env bash
# Container healthcheck: this process serves metrics and, given a port,
# accepts connections on it. The image has no curl or gRPC probe; bash's
# /dev/tcp is enough for both.
set -eu
metrics_port=${APEX_METRICS_ADDR##*:}
exec 3<>"/dev/tcp/127.0.0.1/${metrics_port:-9100}"
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
head -n 1 <&3 | grep -q ' 200 '
exec 3<&-
if [ $# -gt 0 ]; then
  exec 4<>"/dev/tcp/127.0.0.1/$1"
  exec 4<&-
fi
