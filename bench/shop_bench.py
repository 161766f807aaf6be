#!/usr/bin/env python3
"""The shop side by side: FraiseQL over v_ views and over tv_ tables vs PostGraphile v5.

Creates the database `fraiseql_shop_bench` from examples/shop (schema, seed; tv_order from
`fraiseql generate-views --entity order --apply`, or examples/shop/tv.sql with
--tv handwritten), starts
`fraiseql serve` twice — examples/shop/schema.json as exported (orders from v_order, whose
native columns number, status, placed_at sit beside `data`) and the same schema with Order
pointed at tv_order (the stored copy) — and PostGraphile v5 (amber preset,
bench/shop.graphile.config.mjs, on the Node 22 that `npm install` puts in
bench/node_modules) over the tb_ tables. Three questions, each asked of all three in its own
dialect:

  list      20 orders by number, each with its customer (object) and items (list, by line,
            each with its product)
  filtered  the same, status = "shipped"
  by id     one order by id, with the same nested objects

Before any timing, the answers are normalised into the same canonical rows (PostGraphile's
`rowId` → `id`, its relation fields → `customer`/`items`/`product`, `nodes` unwrapped,
numeric strings and numbers → decimals, timestamps → UTC instants) and asserted equal,
rows and order; the run stops if they differ. Then each is driven with wrk at 1, 16 and 64
connections (a Lua script counts non-2xx responses and bodies with "errors": a run with any
failure, or a socket error, is reported FAILED, not as throughput), and each FraiseQL
statement (`fraiseql explain --inline`) is driven with `pgbench -M prepared` at the same
concurrency: the ceiling, what PostgreSQL itself gives for that response.

Goals (printed as met or missed; the exit status is 0 unless --strict): over tv_ ≥ 4× the
requests/s of PostGraphile v5 with a p99 no worse; over v_ ≥ 1×; every FraiseQL row ≥ 0.9×
its pgbench ceiling.

Usage: bench/shop_bench.py [--duration SECONDS] [--quick] [--binary PATH] [--json PATH]
                           [--connections 1,16,64] [--tv generated|handwritten] [--strict]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from graphql_bench import (  # noqa: E402
    ROOT, explain_sql, pgbench, post, psql, psql_file, psql_value, stop, wait_http, wrk)

DB = "fraiseql_shop_bench"
URL = f"postgres://postgres@127.0.0.1:5432/{DB}"
FQ_V_PORT, FQ_TV_PORT, PG_PORT = 18120, 18121, 18122
BENCH = os.path.join(ROOT, "bench")
SHOP = os.path.join(ROOT, "examples", "shop")
# wrk's per-request timeout: a response slower than this is a socket error (a failure).
WRK_TIMEOUT_S = 10

ORDER_FIELDS_FQ = ("id number status placedAt total customer { id name email } "
                   "items { id line quantity unitPrice product { id sku name } }")
ORDER_FIELDS_PG = ("rowId number status placedAt total tbCustomerByFkCustomer { rowId name email } "
                   "tbOrderItemsByFkOrderList(orderBy: LINE_ASC) { rowId line quantity unitPrice "
                   "tbProductByFkProduct { rowId sku name } }")
SERVERS = ("fraiseql tv_", "fraiseql v_", "PostGraphile v5")

# PostGraphile's names → FraiseQL's, for the canonical rows.
RENAMES = {
    "rowId": "id",
    "allTbOrdersList": "orders", "allTbOrders": "orders", "tbOrderByRowId": "order",
    "tbCustomerByFkCustomer": "customer",
    "tbOrderItemsByFkOrderList": "items", "tbOrderItemsByFkOrder": "items",
    "tbProductByFkProduct": "product",
}
DECIMAL_KEYS = {"total", "unitPrice", "price"}
TIME_KEYS = {"placedAt"}


def queries(order_id):
    """name → (FraiseQL query, PostGraphile v5 query): the same question in each dialect."""
    return {
        "list": (
            "{ orders(limit: 20, orderBy: [{number: ASC}]) { %s } }" % ORDER_FIELDS_FQ,
            "{ allTbOrdersList(first: 20, orderBy: NUMBER_ASC) { %s } }" % ORDER_FIELDS_PG,
        ),
        "filtered": (
            '{ orders(limit: 20, where: {status: {eq: "shipped"}}, orderBy: [{number: ASC}]) { %s } }'
            % ORDER_FIELDS_FQ,
            '{ allTbOrdersList(first: 20, condition: {status: "shipped"}, orderBy: NUMBER_ASC) { %s } }'
            % ORDER_FIELDS_PG,
        ),
        "by id": (
            '{ order(id: "%s") { %s } }' % (order_id, ORDER_FIELDS_FQ),
            '{ tbOrderByRowId(rowId: "%s") { %s } }' % (order_id, ORDER_FIELDS_PG),
        ),
    }


def canon(value, key=None):
    """One answer as canonical rows: names as FraiseQL's, connections' `nodes` unwrapped,
    decimals as Decimal (PostGraphile sends numeric as strings), timestamps as UTC instants."""
    if isinstance(value, dict):
        if set(value) == {"nodes"}:
            return canon(value["nodes"], key)
        return {RENAMES.get(k, k): canon(v, RENAMES.get(k, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [canon(v, key) for v in value]
    if value is None:
        return None
    if key in DECIMAL_KEYS:
        return Decimal(str(value))
    if key in TIME_KEYS:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
    return value


def answer(url, query):
    """The canonical root value of one query, and the response's size in bytes; stops on
    any GraphQL error."""
    raw = post(url, query)
    if "errors" in raw or not isinstance(raw.get("data"), dict) or len(raw["data"]) != 1:
        raise SystemExit(f"{url}: {query}\n  failed: {json.dumps(raw)[:2000]}")
    # Decimals exactly as sent: numbers parsed as Decimal, not float.
    exact = json.loads(json.dumps(raw), parse_float=Decimal)
    return canon(next(iter(exact["data"].values()))), len(json.dumps(raw))


def check_sense(name, rows):
    """The answer is the question's: 20 orders by number, all shipped when filtered, one
    order by id, every order with a customer and items — equality of empty answers proves
    nothing."""
    orders = rows if isinstance(rows, list) else [rows]
    assert orders and all(o for o in orders), f"{name}: empty answer"
    if name != "by id":
        assert len(orders) == 20, f"{name}: {len(orders)} orders, expected 20"
        numbers = [o["number"] for o in orders]
        assert numbers == sorted(numbers), f"{name}: not ordered by number"
    if name == "filtered":
        assert all(o["status"] == "shipped" for o in orders), f"{name}: a status is not shipped"
    assert all(o["customer"] and o["items"] for o in orders), f"{name}: missing customer or items"


def assert_same_answers(urls, qs):
    """Asserts that every server gives the same canonical rows in the same order, per query;
    prints what was compared."""
    print("answers (normalised: rowId→id, relations→customer/items/product, nodes unwrapped, "
          "numeric→decimal, timestamps→UTC):")
    for name, (fq_q, pg_q) in qs.items():
        got = {s: answer(u, pg_q if s == "PostGraphile v5" else fq_q) for s, u in urls.items()}
        rows = {s: r for s, (r, _) in got.items()}
        check_sense(name, rows["PostGraphile v5"])
        ref = rows["PostGraphile v5"]
        for s, r in rows.items():
            if r != ref:
                a, b = (r if isinstance(r, list) else [r]), (ref if isinstance(ref, list) else [ref])
                diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                raise SystemExit(
                    f"ANSWERS DIFFER for {name}: {s} vs PostGraphile v5 at row {diff}:\n"
                    f"  {s}: {a[diff] if diff < len(a) else '(none)'}\n"
                    f"  PostGraphile v5: {b[diff] if diff < len(b) else '(none)'}")
        orders = ref if isinstance(ref, list) else [ref]
        sizes = ", ".join(f"{s} {n} B" for s, (_, n) in got.items())
        print(f"  {name:9} equal, same order: {len(orders)} orders, "
              f"{sum(len(o['items']) for o in orders)} items, numbers "
              f"{orders[0]['number']}..{orders[-1]['number']} ({sizes})")


def ensure_postgraphile5():
    """bench/node_modules from bench/package.json (PostGraphile v5, Node 22); the Node
    binary and PostGraphile's CLI script."""
    node = os.path.join(BENCH, "node_modules", ".bin", "node")
    cli = os.path.join(BENCH, "node_modules", "postgraphile", "dist", "cli-run.js")
    if not (os.path.exists(node) and os.path.exists(cli)):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=BENCH, check=True)
    major = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if int(major.strip().lstrip("v").split(".")[0]) < 22:
        raise SystemExit(f"PostGraphile v5 needs Node 22, {node} is {major.strip()}")
    with open(os.path.join(BENCH, "node_modules", "postgraphile", "package.json")) as f:
        version = json.load(f)["version"]
    if not version.startswith("5."):
        raise SystemExit(f"bench/node_modules has PostGraphile {version}, expected 5.x: npm install")
    return node, cli, version, major.strip()


def tv_schema():
    """examples/shop/schema.json with Order and the order queries reading tv_order."""
    with open(os.path.join(SHOP, "schema.json")) as f:
        sdk = json.load(f)
    for item in sdk.get("types", []) + sdk.get("queries", []):
        if item.get("sql_source") == "v_order":
            item["sql_source"] = "tv_order"
    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(sdk, f)
    f.close()
    return f.name


def wait_idle(timeout=60):
    """Waits until no other statement runs in the bench database: a server still working
    off the queue of the last run would slow the next one."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        busy = psql_value(DB, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                              "AND state = 'active' AND pid <> pg_backend_pid()")
        if busy == "0":
            return
        time.sleep(0.2)


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def fmt_run(r):
    if r["failures"]:
        return (f"{'FAILED':>9} {'':>7} {'':>7}  ({r['errors']} non-2xx, {r['gql_errors']} with errors, "
                f"{r['socket_errors']} socket errors of {r['requests']})")
    return f"{r['rps']:>9.0f} {r['p50']:>7.2f} {r['p99']:>7.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 s runs, 1 s warm-up")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fraiseql"))
    ap.add_argument("--connections", default="1,16,64")
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--tv", choices=("generated", "handwritten"), default="generated",
                    help="tv_order from `fraiseql generate-views` (default) or examples/shop/tv.sql")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when a run failed or a goal was missed")
    args = ap.parse_args()
    duration, warmup = (2, 1) if args.quick else (args.duration, 2)
    conns = [int(c) for c in args.connections.split(",")]
    for tool in ("wrk", "pgbench", "psql", "npm"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            raise SystemExit(f"{tool} is required (wrk: apt-get install wrk)")

    node, cli, pg_version, node_version = ensure_postgraphile5()
    print(f"machine: {os.cpu_count()} cores, load average {load_average()}; "
          f"{psql_value('postgres', 'SHOW server_version')} PostgreSQL; PostGraphile {pg_version} "
          f"on Node {node_version}; {subprocess.run([args.binary, '--version'], capture_output=True, text=True).stdout.strip()}")

    psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {DB}")
    env = dict(os.environ, FRAISEQL_DATABASE_URL=URL, FRAISEQL_LOG="warn")
    subprocess.run([args.binary, "db", "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    for f in ("schema.sql", "seed.sql"):
        psql_file(DB, os.path.join(SHOP, f))
    if args.tv == "generated":
        # The copy every user gets: tv_order, its triggers and indexes from generate-views.
        subprocess.run([args.binary, "generate-views", "--schema", os.path.join(SHOP, "schema.json"),
                        "--entity", "order", "--apply"], env=env, check=True, stdout=subprocess.DEVNULL)
    else:
        # tv.sql after the seed: its last statement fills tv_order in one pass.
        psql_file(DB, os.path.join(SHOP, "tv.sql"))
    psql(DB, "ANALYZE")
    order_id = psql_value(DB, "SELECT id FROM tb_order WHERE number = 100750")
    print(f"data: {psql_value(DB, 'SELECT count(*) FROM tb_order')} orders, "
          f"{psql_value(DB, 'SELECT count(*) FROM tb_order_item')} items, "
          f"{psql_value(DB, 'SELECT count(*) FROM tb_customer')} customers, "
          f"{psql_value(DB, 'SELECT count(*) FROM tb_product')} products")

    schemas = {"fraiseql v_": os.path.join(SHOP, "schema.json"), "fraiseql tv_": tv_schema()}
    urls = {"fraiseql tv_": f"http://127.0.0.1:{FQ_TV_PORT}/graphql",
            "fraiseql v_": f"http://127.0.0.1:{FQ_V_PORT}/graphql",
            "PostGraphile v5": f"http://127.0.0.1:{PG_PORT}/graphql"}
    procs = []
    try:
        for s, port in (("fraiseql v_", FQ_V_PORT), ("fraiseql tv_", FQ_TV_PORT)):
            procs.append(subprocess.Popen([args.binary, "serve", "--listen", f"127.0.0.1:{port}",
                                           "--schema", schemas[s]], env=env))
        procs.append(subprocess.Popen(
            [node, cli, "-C", os.path.join(BENCH, "shop.graphile.config.mjs")], cwd=BENCH,
            env=dict(os.environ, DATABASE_URL=URL, PORT=str(PG_PORT), NODE_ENV="production",
                     GRAPHILE_ENV="production"),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for u in urls.values():
            wait_http(u, json.dumps({"query": "{ __typename }"}).encode())

        qs = queries(order_id)
        assert_same_answers(urls, qs)
        statements = {(name, s): explain_sql(args.binary, schemas[s], fq_q, URL)
                      for name, (fq_q, _) in qs.items() for s in schemas}
        print("FraiseQL's statements (the pgbench ceilings), ORDER BY/WHERE as compiled:")
        for (name, s), sql in statements.items():
            tail = sql[sql.rfind(" FROM "):] if " FROM " in sql else sql
            print(f"  {name:9} {s:13} …{tail[:160]}")

        rows = []
        for name, (fq_q, pg_q) in qs.items():
            for c in conns:
                runs = {}
                for s, u in urls.items():
                    body = json.dumps({"query": pg_q if s == "PostGraphile v5" else fq_q})
                    wrk(u, body, c, warmup, timeout=WRK_TIMEOUT_S)
                    wait_idle()
                    runs[s] = wrk(u, body, c, duration, timeout=WRK_TIMEOUT_S)
                    wait_idle()
                ceilings = {s: pgbench(statements[(name, s)], c, duration, DB) for s in schemas}
                rows.append({"query": name, "connections": c, "runs": runs, "ceilings": ceilings})
                print(f"  measured {name} at {c} connection(s); load average {load_average()}",
                      file=sys.stderr)
        ok = report(rows)
        print(f"\nload average at the end: {load_average()}; {duration} s per run")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"duration": duration, "rows": rows}, f, indent=1)
    finally:
        stop(procs, DB)
        os.unlink(schemas["fraiseql tv_"])
    return 0 if ok or not args.strict else 1


def report(rows):
    """Prints the table and the goals; True when every run succeeded and every goal is met."""
    print()
    print(f"{'query':9} {'conns':>5} {'server':15} | {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} | "
          f"{'vs PG5':>7} {'p99 PG5/it':>10} | {'pgbench tps':>11} {'of ceiling':>10}")
    goals = []
    for row in rows:
        runs, pg = row["runs"], row["runs"]["PostGraphile v5"]
        for s in SERVERS:
            r = runs[s]
            line = f"{row['query']:9} {row['connections']:>5} {s:15} | {fmt_run(r)}"
            if s != "PostGraphile v5" and not r["failures"]:
                ceiling = row["ceilings"][s]
                if not pg["failures"]:
                    line += f" | {r['rps'] / pg['rps']:>6.2f}x {pg['p99'] / r['p99']:>9.2f}x"
                else:
                    line += f" | {'-':>7} {'-':>10}"
                line += f" | {ceiling:>11.0f} {r['rps'] / ceiling:>9.2f}x"
            print(line)
        where = f"{row['query']} @{row['connections']}"
        tv, v = runs["fraiseql tv_"], runs["fraiseql v_"]
        for s, r in (("fraiseql tv_", tv), ("fraiseql v_", v)):
            ceiling = row["ceilings"][s]
            goals.append((f"{s} ≥ 0.9× pgbench ceiling", where,
                          not r["failures"] and r["rps"] >= 0.9 * ceiling,
                          "FAILED run" if r["failures"] else f"{r['rps'] / ceiling:.2f}×"))
        if pg["failures"]:
            goals.append(("PostGraphile v5 run succeeded", where, False, "FAILED run"))
            continue
        goals.append(("fraiseql tv_ ≥ 4× PG5, p99 ≤ PG5", where,
                      not tv["failures"] and tv["rps"] >= 4 * pg["rps"] and tv["p99"] <= pg["p99"],
                      "FAILED run" if tv["failures"] else
                      f"{tv['rps'] / pg['rps']:.2f}×, p99 {tv['p99']:.2f} vs {pg['p99']:.2f} ms"))
        goals.append(("fraiseql v_ ≥ 1× PG5", where, not v["failures"] and v["rps"] >= pg["rps"],
                      "FAILED run" if v["failures"] else f"{v['rps'] / pg['rps']:.2f}×"))
    print("\nvs PG5 = req/s ÷ PostGraphile v5 req/s; p99 PG5/it = PostGraphile v5 p99 ÷ this p99 "
          "(≥ 1: a tail no worse); of ceiling = req/s ÷ pgbench tps of the same statement at the "
          "same concurrency. FAILED: non-2xx, GraphQL errors or socket errors/timeouts "
          f"(> {WRK_TIMEOUT_S} s) during the run.")
    print("\ngoals:")
    for goal in dict.fromkeys(g for g, *_ in goals):
        mine = [x for x in goals if x[0] == goal]
        met = sum(1 for x in mine if x[2])
        print(f"  {goal}: {met}/{len(mine)} met")
        for _, where, good, detail in mine:
            print(f"    {'met   ' if good else 'MISSED'} {where:14} {detail}")
    return all(g[2] for g in goals)


if __name__ == "__main__":
    sys.exit(main())
