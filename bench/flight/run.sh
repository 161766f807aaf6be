#!/usr/bin/env bash
# One side-by-side run: `fraiseql flight` (BINARY, default target/release/fraiseql) against
# ADBC on the same 5M-row ta_bench table (created if missing); then one GraphQL list query
# reading all of tv_bench_row (GRAPHQL_ROWS rows, default 250k) as JSON over /graphql vs as
# a Flight GraphQL ticket, from one `fraiseql serve --with-flight`; then the peak RSS of
# `fraiseql flight` while streaming 10M rows. Needs: pip install pyarrow adbc-driver-postgresql.
set -euo pipefail
cd "$(dirname "$0")/../.."
SERVER=${BINARY:-target/release/fraiseql}
DB=${BENCH_DB:-postgres://postgres@127.0.0.1:5432/fraiseql_flight_bench}
ADMIN=${BENCH_ADMIN_DB:-postgres://postgres@127.0.0.1:5432/postgres}
DBNAME=${DB##*/}
if ! psql -qtA "$ADMIN" -c "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'" | grep -q 1; then
  psql -q "$ADMIN" -c "CREATE DATABASE $DBNAME"
fi
if ! psql -qtA "$DB" -c "SELECT to_regclass('ta_bench') IS NOT NULL" | grep -q t; then
  psql -q "$DB" -f bench/flight/make_table.sql
fi
PORT=${BENCH_PORT:-50551}
FRAISEQL_DATABASE_URL="$DB" FRAISEQL_FLIGHT_TOKENS='["bench"]' FRAISEQL_SERVER_LISTEN=127.0.0.1:18551 \
  FRAISEQL_LOG=warn "$SERVER" flight --listen "127.0.0.1:$PORT" > /tmp/fraiseql_flight_bench.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
python3 bench/flight/flight_bench.py --db "$DB" --flight "127.0.0.1:$PORT" --token bench --table ta_bench \
  --runs "${RUNS:-3}" --json | tee /tmp/fraiseql_flight_bench.out
kill $PID; wait $PID 2>/dev/null || true
trap - EXIT

GRAPHQL_ROWS=${GRAPHQL_ROWS:-250000}
if ! psql -qtA "$DB" -c "SELECT count(*) = $GRAPHQL_ROWS FROM tv_bench_row" 2>/dev/null | grep -q t; then
  psql -q "$DB" -v rows="$GRAPHQL_ROWS" -f bench/flight/make_graphql_table.sql
fi
GQL_HTTP=127.0.0.1:${BENCH_GRAPHQL_HTTP_PORT:-18552}
GQL_FLIGHT=127.0.0.1:${BENCH_GRAPHQL_FLIGHT_PORT:-50552}
FRAISEQL_DATABASE_URL="$DB" FRAISEQL_FLIGHT_TOKENS='["bench"]' FRAISEQL_SERVER_LISTEN=$GQL_HTTP \
  FRAISEQL_FLIGHT_LISTEN=$GQL_FLIGHT FRAISEQL_GRAPHQL_SCHEMA=bench/flight/graphql_schema.json \
  FRAISEQL_GRAPHQL_MAX_LIMIT=1000000 FRAISEQL_SERVER_REQUEST_TIMEOUT_MS=600000 \
  FRAISEQL_DATABASE_STATEMENT_TIMEOUT_MS=0 FRAISEQL_LOG=warn \
  "$SERVER" serve --with-flight > /tmp/fraiseql_graphql_bench.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/${GQL_FLIGHT/://}") 2>/dev/null && break; sleep 0.1; done
python3 bench/flight/graphql_bench.py --http "$GQL_HTTP" --flight "$GQL_FLIGHT" --token bench \
  --rows "$GRAPHQL_ROWS" --runs "${RUNS:-3}" --json | tee /tmp/fraiseql_graphql_bench.out
kill $PID; wait $PID 2>/dev/null || true
trap - EXIT
python3 bench/flight/flight_rss.py --server "$SERVER" --db "$DB" --view va_stream10m

# For scale: PostgreSQL's own binary COPY of the same table, written by psql to /dev/null.
T0=$(date +%s.%N)
psql -qAt "$DB" -c "COPY ta_bench TO STDOUT (FORMAT binary)" > /dev/null
COPY_S=$(python3 -c "print($(date +%s.%N) - $T0)")

# The issue's three-way comparison, rows/s from the runs above: Flight on the ta_ table vs
# ADBC on the same table, and vs the same kind of rows as GraphQL JSON over /graphql.
python3 - /tmp/fraiseql_flight_bench.out /tmp/fraiseql_graphql_bench.out "$COPY_S" <<'PY'
import json, sys
last = lambda p: json.loads([l for l in open(p) if l.startswith("{")][-1])
f, g = last(sys.argv[1]), last(sys.argv[2])
copy = {"rows": f["flight"]["rows"], "rows_per_s": round(f["flight"]["rows"] / float(sys.argv[3]))}
flight, adbc, gql, gqlf = f["flight"], f["adbc"], g["graphql-json"], g["flight-arrow"]
print()
print("| path | rows | rows/s | Flight ÷ path |")
print("|---|---|---|---|")
for name, s in [("Flight view ticket (ta_bench, 10 columns)", flight),
                ("ADBC PostgreSQL driver (same table)", adbc),
                ("GraphQL JSON over /graphql (tv_bench_row, 7 fields)", gql),
                ("Flight GraphQL ticket (same query)", gqlf),
                ("for scale: PostgreSQL COPY BINARY of ta_bench, psql to /dev/null", copy)]:
    print(f"| {name} | {s['rows']:,} | {s['rows_per_s']:,} | {flight['rows_per_s'] / s['rows_per_s']:.2f}x |")
PY
