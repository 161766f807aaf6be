#!/usr/bin/env python3
"""Peak RSS of the Flight server process while a client streams 10 million rows.

Starts the server binary (`fraiseql flight`
in the main crate), streams the va_stream10m view batch by batch (the client keeps no
rows), and reads the kernel's peak-RSS counter (VmHWM in /proc/PID/status) of the server.

    python3 bench/flight_rss.py --server target/release/fraiseql \
        --db postgres://postgres@127.0.0.1:5432/fraiseql_flight_bench --view va_stream10m
"""
import argparse
import json
import os
import socket
import subprocess
import time

import pyarrow.flight as flight


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", default="target/release/fraiseql")
    p.add_argument("--db", required=True)
    p.add_argument("--view", default="va_stream10m")
    p.add_argument("--token", default="bench")
    args = p.parse_args()

    port = free_port()
    proc = subprocess.Popen(
        [args.server, "flight", "--listen", f"127.0.0.1:{port}"],
        env=dict(os.environ, FRAISEQL_DATABASE_URL=args.db, FRAISEQL_LOG="warn",
                 FRAISEQL_FLIGHT_TOKENS=json.dumps([args.token]),
                 FRAISEQL_SERVER_LISTEN=f"127.0.0.1:{port + 1}"),
        stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        idle_kb = status_kb(proc.pid, "VmRSS")
        client = flight.FlightClient(f"grpc+tcp://127.0.0.1:{port}")
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {args.token}".encode())])
        t0 = time.perf_counter()
        reader = client.do_get(flight.Ticket(json.dumps({"type": "view", "view": args.view}).encode()), options)
        rows = 0
        nbytes = 0
        sampled_max = 0
        batches = 0
        for chunk in reader:
            rows += chunk.data.num_rows
            nbytes += chunk.data.nbytes
            batches += 1
            if batches % 8 == 0:
                sampled_max = max(sampled_max, status_kb(proc.pid, "VmRSS"))
        dt = time.perf_counter() - t0
        peak_kb = status_kb(proc.pid, "VmHWM")
        result = {
            "rows": rows,
            "batches": batches,
            "seconds": round(dt, 2),
            "rows_per_s": round(rows / dt),
            "mb_per_s": round(nbytes / 1e6 / dt, 1),
            "idle_rss_mb": round(idle_kb / 1024, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "sampled_max_rss_mb": round(sampled_max / 1024, 1),
        }
        print(json.dumps(result))
        print(f"streamed {rows:,} rows in {dt:.1f} s; server peak RSS {peak_kb / 1024:.1f} MB "
              f"(idle {idle_kb / 1024:.1f} MB) — goal < 200 MB")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
