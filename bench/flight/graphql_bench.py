#!/usr/bin/env python3
"""Side-by-side: one GraphQL list query fetched as JSON over HTTP POST /graphql (decoded by
the client with the standard library's json) and as an Arrow Flight GraphQL ticket (read by
pyarrow into a Table), from the same `fraiseql serve --with-flight` process, in alternating
runs within one process. Both run the same query through the same engine, reading the whole
tv_bench_row table (--rows must be its row count, so both return the same set of rows); the
row counts and the smallest and largest ids are checked to be equal. Reports rows/s for both
and the ratio.

    python3 bench/flight/graphql_bench.py --http 127.0.0.1:18552 --flight 127.0.0.1:50552 \
        --token bench --rows 250000 --runs 3
"""
import argparse
import json
import statistics
import time
import urllib.request

import pyarrow.flight as flight

FIELDS = "id qty price name createdAt active note"


def query(rows):
    return f"{{ benchRows(limit: {rows}) {{ {FIELDS} }} }}"


def read_http(args):
    body = json.dumps({"query": query(args.rows)}).encode()
    req = urllib.request.Request(
        f"http://{args.http}/graphql", data=body,
        headers={"content-type": "application/json", "accept": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as resp:
        raw = resp.read()
    doc = json.loads(raw)
    dt = time.perf_counter() - t0
    if "errors" in doc:
        raise SystemExit(f"/graphql errors: {doc['errors'][:3]}")
    rows = doc["data"]["benchRows"]
    ids = [r["id"] for r in rows]
    return len(rows), len(raw), dt, (min(ids), max(ids)) if ids else None


def read_flight(args):
    client = flight.FlightClient(f"grpc+tcp://{args.flight}")
    options = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {args.token}".encode())])
    ticket = flight.Ticket(json.dumps({"type": "graphql", "query": query(args.rows)}).encode())
    t0 = time.perf_counter()
    table = client.do_get(ticket, options).read_all()
    dt = time.perf_counter() - t0
    client.close()
    ids = table.column("id").to_pylist()
    ends = (min(ids), max(ids)) if ids else None
    return table.num_rows, table.nbytes, dt, ends


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--http", default="127.0.0.1:18552")
    p.add_argument("--flight", default="127.0.0.1:50552")
    p.add_argument("--token", default="bench")
    p.add_argument("--rows", type=int, default=250_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON summary line")
    args = p.parse_args()

    readers = {"graphql-json": read_http, "flight-arrow": read_flight}
    results = {k: [] for k in readers}
    # One warm-up each (buffer cache, prepared statements, connections), not counted.
    seen = {name: r(args) for name, r in readers.items()}
    counts = {name: (s[0], s[3]) for name, s in seen.items()}
    if len(set(counts.values())) != 1:
        raise SystemExit(f"the two paths returned different rows: {counts}")
    for i in range(args.runs):
        for name, r in readers.items():
            rows, nbytes, dt, _ = r(args)
            results[name].append((rows, nbytes, dt))
            what = "JSON body" if name == "graphql-json" else "Arrow table"
            print(f"run {i + 1} {name}: {rows:,} rows ({nbytes / 1e6:,.1f} MB {what}) in "
                  f"{dt:.2f} s = {rows / dt:,.0f} rows/s", flush=True)
    summary = {}
    for name, rs in results.items():
        med = statistics.median(dt for _, _, dt in rs)
        summary[name] = {"rows": rs[0][0], "mb": round(rs[0][1] / 1e6, 1),
                         "median_s": round(med, 3), "rows_per_s": round(rs[0][0] / med)}
    ratio = summary["flight-arrow"]["rows_per_s"] / summary["graphql-json"]["rows_per_s"]
    print()
    for name, s in summary.items():
        print(f"{name:12s} median {s['median_s']:.2f} s: {s['rows_per_s']:,} rows/s")
    print(f"flight-arrow / graphql-json rows/s = {ratio:.2f}")
    if args.json:
        summary["ratio_flight_graphql_json"] = round(ratio, 3)
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
