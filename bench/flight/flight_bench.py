#!/usr/bin/env python3
"""Side-by-side read throughput: FraiseQL Flight vs the ADBC PostgreSQL driver.

Both read the same ta_ table into a pyarrow Table, in alternating runs within one process,
so the comparison is a ratio measured under the same conditions. Reports rows/s and MB/s
(MB = the Arrow table's in-memory bytes, the same measure for both).

    pip install -r requirements-test.txt
    python3 bench/flight_bench.py --db postgres://postgres@127.0.0.1:5432/fraiseql_flight_bench \
        --flight 127.0.0.1:50051 --token bench --table ta_bench --runs 3
"""
import argparse
import json
import statistics
import time

import pyarrow.flight as flight
import adbc_driver_postgresql.dbapi as adbc


def read_flight(args):
    client = flight.FlightClient(f"grpc+tcp://{args.flight}")
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {args.token}".encode())])
    t0 = time.perf_counter()
    reader = client.do_get(flight.Ticket(json.dumps({"type": "view", "view": args.table}).encode()), options)
    table = reader.read_all()
    dt = time.perf_counter() - t0
    client.close()
    return table.num_rows, table.nbytes, dt


def read_adbc(args):
    t0 = time.perf_counter()
    with adbc.connect(args.db) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT * FROM {args.table}")
            table = cur.fetch_arrow_table()
    dt = time.perf_counter() - t0
    return table.num_rows, table.nbytes, dt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--flight", default="127.0.0.1:50051")
    p.add_argument("--token", default="bench")
    p.add_argument("--table", default="ta_bench")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON summary line")
    args = p.parse_args()

    readers = {"flight": read_flight, "adbc": read_adbc}
    results = {k: [] for k in readers}
    # One warm-up each (buffer cache, connection setup), not counted.
    for r in readers.values():
        r(args)
    for i in range(args.runs):
        for name, r in readers.items():
            rows, nbytes, dt = r(args)
            results[name].append((rows, nbytes, dt))
            print(f"run {i + 1} {name:6s}: {rows:,} rows, {nbytes / 1e6:,.0f} MB in {dt:.2f} s "
                  f"= {rows / dt:,.0f} rows/s, {nbytes / 1e6 / dt:,.0f} MB/s", flush=True)
    summary = {}
    for name, rs in results.items():
        med = statistics.median(dt for _, _, dt in rs)
        rows, nbytes = rs[0][0], rs[0][1]
        summary[name] = {"rows": rows, "mb": round(nbytes / 1e6, 1), "median_s": round(med, 3),
                         "rows_per_s": round(rows / med), "mb_per_s": round(nbytes / 1e6 / med, 1)}
    ratio = summary["flight"]["rows_per_s"] / summary["adbc"]["rows_per_s"]
    print()
    for name, s in summary.items():
        print(f"{name:6s} median {s['median_s']:.2f} s: {s['rows_per_s']:,} rows/s, {s['mb_per_s']:,} MB/s")
    print(f"flight / adbc rows/s = {ratio:.2f}")
    if args.json:
        summary["ratio_flight_adbc"] = round(ratio, 3)
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
