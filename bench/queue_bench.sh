#!/usr/bin/env bash
# Side-by-side queue benchmark on the same Redis, in one run: BullMQ (npm bullmq) and the
# FraiseQL Redis queue (examples/queue_bench.rs, release), each enqueueing N no-op jobs, then
# processing N no-op jobs at each concurrency. Prints a table with the ratios.
#
# Usage: bench/queue_bench.sh [jobs=100000] [concurrencies=10,50]
# Env: REDIS_HOST (127.0.0.1), REDIS_PORT (6379), ROUNDS (2): the two sides run alternately
# ROUNDS times and each side's best figure per measure is kept, so that a burst of load from
# something else on a small machine does not decide the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
CONC="${2:-10,50}"
HOST="${REDIS_HOST:-127.0.0.1}"
PORT="${REDIS_PORT:-6379}"

redis-cli -h "$HOST" -p "$PORT" ping >/dev/null || { echo "no Redis at $HOST:$PORT" >&2; exit 1; }
[ -d bench/node_modules/bullmq ] || (cd bench && npm install --no-audit --no-fund >/dev/null)
cargo build --release --quiet --example queue_bench
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

echo "Redis $(redis-cli -h "$HOST" -p "$PORT" info server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r'), $N jobs, concurrency $CONC, $(nproc) cores" >&2
BULLMQ_VERSION=$(node -p "require('./bench/node_modules/bullmq/package.json').version")
BULL="" OURS=""
for round in $(seq 1 "${ROUNDS:-2}"); do
  echo "round $round: BullMQ $BULLMQ_VERSION ..." >&2
  BULL="$BULL$(node bench/queue_bench.js "$HOST" "$PORT" "$N" "$CONC")"$'\n'
  echo "round $round: FraiseQL ..." >&2
  OURS="$OURS$("$TARGET_DIR/release/examples/queue_bench" "redis://$HOST:$PORT" "$N" "$CONC")"$'\n'
done
echo "BullMQ runs:   $(echo "$BULL" | tr '\n' ' ')" >&2
echo "FraiseQL runs: $(echo "$OURS" | tr '\n' ' ')" >&2

python3 - "$BULL" "$OURS" "$CONC" <<'PY'
import json, sys
def best(text):
    runs = [json.loads(line) for line in text.splitlines() if line.strip()]
    return {k: max(r[k] for r in runs) for k in runs[0]}
bull, ours, conc = best(sys.argv[1]), best(sys.argv[2]), sys.argv[3].split(",")
rows = [("enqueue", "enqueue (jobs/s)")] + [(f"c{c}", f"process, concurrency {c} (jobs/s)") for c in conc]
print(f"| {'measure':<34} | {'BullMQ':>9} | {'FraiseQL':>9} | {'ratio':>6} |")
print(f"|{'-'*36}|{'-'*11}|{'-'*11}|{'-'*8}|")
for key, label in rows:
    b, o = bull[key], ours[key]
    print(f"| {label:<34} | {b:>9,} | {o:>9,} | {o / b:>5.2f}x |")
PY
