#!/usr/bin/env python3
"""GraphQL side by side: fraiseql serve vs PostGraphile on the same data, one load generator.

Creates the database `fraiseql_bench` from examples/blog (schema + seed), starts
`fraiseql serve` (release build) and PostGraphile v4 (npm, installed into
bench/postgraphile4 on first use), then drives both with wrk (POST bodies via a Lua script)
at 1, 16 and 64 connections for two queries: a list of 20 users with their posts, and one
user by id. Prints requests/s, p50 and p99 for each and the ratios fraiseql / PostGraphile,
and the ceiling: the exact statement fraiseql runs (`fraiseql explain --inline`) driven by
`pgbench -M prepared` at the same concurrency — what PostgreSQL itself can give.

Usage: bench/graphql_bench.py [--duration SECONDS] [--binary PATH]
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DB = "fraiseql_bench"
ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
URL = f"postgres://postgres@127.0.0.1:5432/{DB}"
FRAISEQL_PORT = 18100
PG_PORT = 18101


def psql(db, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres",
                    "-d", db, "-c", sql], check=True, stdout=subprocess.DEVNULL)


def psql_file(db, path):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", "postgres",
                    "-d", db, "-f", path], check=True, stdout=subprocess.DEVNULL)


def psql_value(db, sql):
    out = subprocess.run(["psql", "-tA", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def wait_http(url, body=None, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.read()
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def post(url, query, headers=None):
    body = json.dumps({"query": query}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                          **(headers or {})})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def ensure_postgraphile():
    # Its own directory: bench/package.json holds PostGraphile v5 (bench/shop_bench.py).
    prefix = os.path.join(ROOT, "bench", "postgraphile4")
    binary = os.path.join(prefix, "node_modules", ".bin", "postgraphile")
    if not os.path.exists(binary):
        os.makedirs(prefix, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", prefix, "--no-save", "--no-package-lock",
                        "--no-audit", "--no-fund", "postgraphile@4"], check=True)
    return binary


# wrk's Lua hooks: every thread counts the responses that are not 2xx and the 2xx ones whose
# body holds "errors" (a GraphQL error); done() prints the sums for wrk() to read.
WRK_COUNTERS = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0; gql_errors = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1
  elseif body and string.find(body, '"errors"', 1, true) then gql_errors = gql_errors + 1 end
end
function done(summary, latency, requests)
  local n, g = 0, 0
  for _, t in ipairs(threads) do n = n + t:get("non2xx"); g = g + t:get("gql_errors") end
  io.write(string.format("bench-non2xx %d\nbench-gql-errors %d\n", n, g))
end
"""


def wrk(url, body, connections, duration, headers=None, timeout=None):
    """One wrk run POSTing `body`: req/s, p50 and p99 in ms, and its failures — `errors`
    (responses that are not 2xx), `gql_errors` (2xx with "errors" in the body) and
    `socket_errors` (connect, read, write, timeout); `failures` is their sum."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\n')
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        for k, v in (headers or {}).items():
            f.write(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n")
        if "]==]" in body:
            raise SystemExit("request body contains ]==]")
        f.write(f"wrk.body = [==[{body}]==]\n")
        f.write(WRK_COUNTERS)
        script = f.name
    threads = min(2, connections)
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
           "-s", script]
    if timeout:
        cmd += ["--timeout", f"{timeout}s"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True).stdout
    os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    r = {"rps": rps, "p50": lat(50), "p99": lat(99), "requests": requests,
         "errors": int(re.search(r"bench-non2xx (\d+)", out).group(1)),
         "gql_errors": int(re.search(r"bench-gql-errors (\d+)", out).group(1)),
         "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0}
    r["failures"] = r["errors"] + r["gql_errors"] + r["socket_errors"]
    return r


def pgbench(sql, connections, duration, db=DB):
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(sql.strip().rstrip(";") + ";\n")
        script = f.name
    out = subprocess.run(["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-M", "prepared", "-n",
                          "-c", str(connections), "-j", str(min(2, connections)), "-T", str(duration),
                          "-f", script, db], capture_output=True, text=True)
    os.unlink(script)
    m = re.search(r"tps = ([\d.]+)", out.stdout)
    if not m:
        raise SystemExit(f"pgbench failed: {out.stderr}")
    return float(m.group(1))


def explain_sql(binary, schema, query, url=URL):
    """The statement the server runs for `query`: explain reads the views' native columns
    from `url`'s catalog, as the server does."""
    out = subprocess.run([binary, "explain", "--inline", "--schema", schema, query],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, FRAISEQL_DATABASE_URL=url))
    statements = [l for l in out.stdout.splitlines() if not l.startswith("--")]
    if len(statements) != 1:
        raise SystemExit(f"expected one statement for {query}: {out.stdout}")
    return statements[0]


def stop(procs, db):
    """Stops the servers (SIGTERM, then SIGKILL after 10 s) and drops the bench database."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fraiseql"))
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is required: apt-get install wrk")

    # Fresh database with the blog example.
    psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {DB}")
    env = dict(os.environ, FRAISEQL_DATABASE_URL=URL, FRAISEQL_LOG="warn")
    subprocess.run([args.binary, "db", "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    psql_file(DB, os.path.join(ROOT, "examples", "blog", "schema.sql"))
    psql_file(DB, os.path.join(ROOT, "examples", "blog", "tv.sql"))
    psql_file(DB, os.path.join(ROOT, "examples", "blog", "seed.sql"))
    psql(DB, "ANALYZE")
    user_id = psql_value(DB, "SELECT id FROM tb_user ORDER BY pk_user LIMIT 1")

    procs = []
    try:
        # FraiseQL reads the table-backed copies (tv_*, examples/blog/tv.sql), as a
        # production deployment would; PostGraphile reads the tb_ tables themselves.
        with open(os.path.join(ROOT, "examples", "blog", "schema.json")) as f:
            sdk = json.load(f)
        for item in sdk.get("types", []) + sdk.get("queries", []):
            if str(item.get("sql_source", "")).startswith("v_"):
                item["sql_source"] = "t" + item["sql_source"]
        schema_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        json.dump(sdk, schema_file)
        schema_file.close()
        schema = schema_file.name
        print("fraiseql serves examples/blog/schema.json over tv_ tables; PostGraphile serves the tb_ tables")
        fq = subprocess.Popen([args.binary, "serve", "--listen", f"127.0.0.1:{FRAISEQL_PORT}",
                               "--schema", schema],
                              env=env)
        procs.append(fq)
        pg_bin = ensure_postgraphile()
        pg = subprocess.Popen([pg_bin, "-c", URL, "--schema", "public", "--port", str(PG_PORT),
                               "--disable-graphiql", "--simple-collections", "both",
                               "--no-setof-functions-contain-nulls"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(pg)

        fq_url = f"http://127.0.0.1:{FRAISEQL_PORT}/graphql"
        pg_url = f"http://127.0.0.1:{PG_PORT}/graphql"
        queries = {
            "list: 20 users with posts": (
                "{ users(limit: 20) { id name email posts { id title } } }",
                "{ allTbUsersList(first: 20, orderBy: PK_USER_ASC) { id name email tbPostsByFkUserList { id title } } }",
            ),
            "single user by id": (
                '{ user(id: "%s") { id name email posts { id title } } }' % user_id,
                '{ tbUserById(id: "%s") { id name email tbPostsByFkUserList { id title } } }' % user_id,
            ),
        }
        wait_http(fq_url, json.dumps({"query": "{ __typename }"}).encode())
        wait_http(pg_url, json.dumps({"query": "{ __typename }"}).encode())
        for name, (fq_q, pg_q) in queries.items():
            a, b = post(fq_url, fq_q), post(pg_url, pg_q)
            if "errors" in a or "errors" in b:
                raise SystemExit(f"{name}: query failed: fraiseql={a.get('errors')} postgraphile={b.get('errors')}")
            size_a, size_b = len(json.dumps(a)), len(json.dumps(b))
            print(f"{name}: fraiseql {size_a} bytes, PostGraphile {size_b} bytes per response")

        rows = []
        for name, (fq_q, pg_q) in queries.items():
            for c in (1, 16, 64):
                # Warm both, then measure side by side in this run.
                wrk(fq_url, json.dumps({"query": fq_q}), c, 2)
                wrk(pg_url, json.dumps({"query": pg_q}), c, 2)
                r_fq = wrk(fq_url, json.dumps({"query": fq_q}), c, args.duration)
                r_pg = wrk(pg_url, json.dumps({"query": pg_q}), c, args.duration)
                ceiling = pgbench(explain_sql(args.binary, schema, fq_q), c, args.duration)
                rows.append((name, c, r_fq, r_pg, ceiling))
        print()
        print(f"{'query':26} {'conns':>5} | {'fraiseql req/s':>14} {'p50 ms':>7} {'p99 ms':>7} | "
              f"{'PostGraphile req/s':>18} {'p50 ms':>7} {'p99 ms':>7} | {'throughput':>10} {'p99':>6} | "
              f"{'pgbench tps':>11} {'of ceiling':>10}")
        for name, c, a, b, ceiling in rows:
            print(f"{name:26} {c:>5} | {a['rps']:>14.0f} {a['p50']:>7.2f} {a['p99']:>7.2f} | "
                  f"{b['rps']:>18.0f} {b['p50']:>7.2f} {b['p99']:>7.2f} | "
                  f"{a['rps'] / b['rps']:>9.1f}x {b['p99'] / a['p99']:>5.1f}x | "
                  f"{ceiling:>11.0f} {a['rps'] / ceiling:>9.2f}x")
            if a["errors"] or b["errors"]:
                print(f"  non-2xx responses: fraiseql {a['errors']}, PostGraphile {b['errors']}")
        print("\nthroughput = fraiseql req/s ÷ PostGraphile req/s; p99 = PostGraphile p99 ÷ fraiseql p99 "
              "(above 1 means fraiseql's tail is lower); of ceiling = fraiseql req/s ÷ pgbench tps of the "
              "same statement at the same concurrency")
    finally:
        stop(procs, DB)


if __name__ == "__main__":
    sys.exit(main())
