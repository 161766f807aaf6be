#!/usr/bin/env bash
# One side-by-side run: builds the release server, creates the 5M-row ta_bench table if it
# is missing, then runs the Flight-vs-ADBC throughput benchmark and the 10M-row peak-RSS
# measurement. (`make bench` in the main crate calls this.)
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${BENCH_DB:-postgres://postgres@127.0.0.1:5432/fraiseql_flight_bench}
ADMIN=${BENCH_ADMIN_DB:-postgres://postgres@127.0.0.1:5432/postgres}
DBNAME=${DB##*/}
cargo build --release --example flight_server
if ! psql -qtA "$ADMIN" -c "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'" | grep -q 1; then
  psql -q "$ADMIN" -c "CREATE DATABASE $DBNAME"
fi
if ! psql -qtA "$DB" -c "SELECT to_regclass('ta_bench') IS NOT NULL" | grep -q t; then
  psql -q "$DB" -f bench/make_table.sql
fi
SERVER=target/release/examples/flight_server
PORT=${BENCH_PORT:-50551}
"$SERVER" --db "$DB" --listen "127.0.0.1:$PORT" --token bench > /tmp/fraiseql_flight_bench.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening /tmp/fraiseql_flight_bench.log && break; sleep 0.1; done
python3 bench/flight_bench.py --db "$DB" --flight "127.0.0.1:$PORT" --token bench --table ta_bench --runs "${RUNS:-3}"
kill $PID; wait $PID 2>/dev/null || true
trap - EXIT
python3 bench/flight_rss.py --server "$SERVER" --db "$DB" --view va_stream10m
