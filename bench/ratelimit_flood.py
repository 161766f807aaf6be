#!/usr/bin/env python3
"""Does a rate limit protect other clients? One `fraiseql serve` with a per-client budget
(client = 600/min, burst 60, trusted proxy 127.0.0.1 so X-Forwarded-For names the client).
A well-behaved client asks 5 times a second (one connection, its own address) for 20 s
alone, then for 60 s while an abusive client floods with wrk at 64 connections from another
address. Prints the well-behaved client's p50/p99 in both phases, how many of its requests
were refused (must be none), and what the flood got (mostly 429).

Goal (the hardening issue): p99 under the flood within 2x of the unloaded p99.

Usage: bench/ratelimit_flood.py [--flood-seconds 60] [--binary PATH]
"""
import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from graphql_bench import ROOT, psql, psql_file, stop, wait_http  # noqa: E402

DB = "fraiseql_ratelimit_bench"
URL = f"postgres://postgres@127.0.0.1:5432/{DB}"
PORT = 18130
QUERY = "{ users(limit: 5) { id name posts { id title } } }"
RATE = 5  # the well-behaved client's requests per second (its budget: 10 per second)


def polite(seconds, out):
    """Asks RATE times a second for `seconds`; appends (latency_s, status) per request."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    body = json.dumps({"query": QUERY})
    headers = {"content-type": "application/json", "x-forwarded-for": "198.51.100.7"}
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        due = start + n / RATE
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        t0 = time.perf_counter()
        conn.request("POST", "/graphql", body, headers)
        r = conn.getresponse()
        data = r.read()
        out.append((time.perf_counter() - t0, r.status, b'"errors"' in data))
        n += 1
    conn.close()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def summary(name, samples):
    lat = [s[0] * 1000 for s in samples]
    bad = sum(1 for s in samples if s[1] != 200 or s[2])
    print(f"{name:<28} {len(samples):>6} requests  p50 {pct(lat, 0.5):7.2f} ms  "
          f"p99 {pct(lat, 0.99):7.2f} ms  refused or failed: {bad}")
    return pct(lat, 0.99), bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flood-seconds", type=int, default=60)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fraiseql"))
    args = ap.parse_args()

    psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {DB}")
    env = dict(os.environ, FRAISEQL_DATABASE_URL=URL, FRAISEQL_LOG="warn")
    subprocess.run([args.binary, "db", "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    for f in ("schema.sql", "seed.sql"):
        psql_file(DB, os.path.join(ROOT, "examples", "blog", f))
    tmp = tempfile.mkdtemp()
    config = os.path.join(tmp, "rl.toml")
    with open(config, "w") as f:
        f.write("""
[rate_limit]
trusted_proxies = ["127.0.0.1/32"]
client = { requests_per_minute = 600, burst = 60 }
""")
    lua = os.path.join(tmp, "flood.lua")
    with open(lua, "w") as f:
        f.write(f"""
wrk.method = "POST"
wrk.body = {json.dumps(json.dumps({"query": QUERY}))}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Forwarded-For"] = "203.0.113.66"
done = function(summary, latency, requests)
  io.write(string.format("flood: %d requests, %.0f req/s\\n", summary.requests,
    summary.requests / (summary.duration / 1e6)))
end
""")
    procs = []
    try:
        procs.append(subprocess.Popen([args.binary, "--config", config, "serve", "--listen",
                                       f"127.0.0.1:{PORT}", "--schema",
                                       os.path.join(ROOT, "examples", "blog", "schema.json")],
                                      env=env))
        wait_http(f"http://127.0.0.1:{PORT}/readyz")
        warm = []
        polite(2, warm)
        alone = []
        polite(20, alone)
        loaded = []
        flood = subprocess.Popen(["wrk", "-t1", "-c64", f"-d{args.flood_seconds}s", "-s", lua,
                                  f"http://127.0.0.1:{PORT}/graphql"],
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(1)
        t = threading.Thread(target=polite, args=(args.flood_seconds - 2, loaded))
        t.start()
        t.join()
        flood_out = flood.communicate()[0]
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{PORT}/metrics"],
                                 capture_output=True, text=True).stdout
        print()
        p99_alone, _ = summary("well-behaved, alone", alone)
        p99_loaded, bad = summary("well-behaved, under flood", loaded)
        for line in flood_out.splitlines():
            if line.startswith("flood:") or "Requests/sec" in line or "Non-2xx" in line:
                print(line.strip())
        for line in metrics.splitlines():
            if line.startswith("fraiseql_rate_limit_decisions_total{") and 'rule="client"' in line \
                    and not line.endswith(" 0"):
                print(line)
        ratio = p99_loaded / p99_alone
        print(f"\np99 under flood / p99 alone = {ratio:.2f}x (goal <= 2x); "
              f"the well-behaved client was refused {bad} times (goal 0)")
        return 0 if bad == 0 else 1
    finally:
        stop(procs, DB)


if __name__ == "__main__":
    sys.exit(main())
