#!/usr/bin/env bash
# Measures `fraiseql serve`: time from exec to the first 200 from /readyz, and resident
# memory once idle. Usage: bench/startup.sh [BINARY] (default target/release/fraiseql).
set -euo pipefail
BIN=${1:-target/release/fraiseql}
URL=${FRAISEQL_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=18089
runs=5
times=(); rss=()
for i in $(seq 1 $runs); do
  start=$(date +%s%N)
  FRAISEQL_DATABASE_URL=$URL FRAISEQL_LOG=warn "$BIN" serve --listen 127.0.0.1:$PORT &
  pid=$!
  until curl -sf -o /dev/null http://127.0.0.1:$PORT/readyz; do sleep 0.002; done
  ready=$(date +%s%N)
  times+=($(( (ready - start) / 1000000 )))
  sleep 2
  rss+=($(awk '/VmRSS/ {print $2}' /proc/$pid/status))
  kill -TERM $pid; wait $pid
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
echo "serve start-up to ready: median $(median "${times[@]}") ms (runs: ${times[*]} ms)"
echo "serve idle RSS: median $(( $(median "${rss[@]}") / 1024 )) MiB (runs: ${rss[*]} KiB)"
