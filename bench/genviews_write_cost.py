#!/usr/bin/env python3
"""What the triggers `fraiseql generate-views` derives cost a writer, and how fast --apply fills.

On the shop example (examples/shop: tb_customer, tb_product, tb_order, tb_order_item; v_order
embeds its customer and its items with their products), seeded at --orders orders (4 items
each on average, one customer per 10 orders, one product per 30 orders), this measures with
pgbench, each statement its own transaction, per-transaction latencies from pgbench's log:

  single-row   one UPDATE of one random row of each base table, of a column the views embed
               (customer name, product name, order status, item quantity): median and p99
  10k-row      one UPDATE of 10,000 consecutive rows of tb_order_item and of tb_order
  concurrent   the item UPDATE from 8 sessions at once: transactions/s (the triggers take one
               advisory lock per schema, so concurrent writers of one schema serialise)

once on the bare tables and once after `generate-views --apply` (every entity: tv_customer,
tv_product, tv_order), then asserts `generate-views --check` finds no drift (tv_ equal to v_
after all the writes). Then it seeds --fill-orders orders in a second database and times
`generate-views --apply --entity order`: the initial fill, in rows/s.

Usage: bench/genviews_write_cost.py [--binary PATH] [--orders N] [--fill-orders N]
                                    [--transactions N] [--json PATH]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from graphql_bench import ROOT, psql, psql_file, psql_value  # noqa: E402

DB = "fraiseql_wc_bench"
FILL_DB = "fraiseql_wc_fill"
SHOP = os.path.join(ROOT, "examples", "shop")

# The seed of examples/shop/seed.sql, scaled: the same formulas with the sizes as parameters.
SEED = """
INSERT INTO tb_customer (email, name, country)
SELECT 'customer' || n || '@example.com', 'Customer ' || n, (ARRAY['FR','DE','US','JP'])[n % 4 + 1]
  FROM generate_series(1, {customers}) AS n;
INSERT INTO tb_product (sku, name, price)
SELECT 'SKU-' || n, 'Product ' || n, round(((n * 37) % 200 + 1) + (n % 4) * 0.25, 2)
  FROM generate_series(1, {products}) AS n;
INSERT INTO tb_order (number, fk_customer, status, placed_at)
SELECT 100000 + o, (o * 13) % {customers} + 1,
       (ARRAY['pending','paid','shipped','delivered','cancelled'])[o % 5 + 1],
       timestamptz '2025-01-01 00:00:00+00' + o * interval '37 seconds'
  FROM generate_series(1, {orders}) AS o;
INSERT INTO tb_order_item (fk_order, fk_product, line, quantity, unit_price)
SELECT o, (o * 31 + i * 17) % {products} + 1, i, 1 + (o + i) % 3, 10
  FROM generate_series(1, {orders}) AS o
  CROSS JOIN LATERAL generate_series(1, 2 + o % 5) AS i;
ANALYZE;
"""

# One UPDATE per base table, of a column the views embed, on a random row.
SINGLE = {
    "tb_customer": ("\\set k random(1, {customers})\n"
                    "UPDATE tb_customer SET name = 'Customer ' || :k || ' ' || (random() * 1000)::int "
                    "WHERE pk_customer = :k;"),
    "tb_product": ("\\set k random(1, {products})\n"
                   "UPDATE tb_product SET name = 'Product ' || :k || ' ' || (random() * 1000)::int "
                   "WHERE pk_product = :k;"),
    "tb_order": ("\\set k random(1, {orders})\n"
                 "UPDATE tb_order SET status = (ARRAY['pending','paid','shipped','delivered','cancelled'])"
                 "[1 + (random() * 4)::int] WHERE pk_order = :k;"),
    "tb_order_item": ("\\set k random(1, {items})\n"
                      "UPDATE tb_order_item SET quantity = 1 + quantity % 3 WHERE pk_order_item = :k;"),
}
BULK = {
    "tb_order_item": ("\\set lo random(1, {items} - 10000)\n"
                      "UPDATE tb_order_item SET quantity = 1 + quantity % 3 "
                      "WHERE pk_order_item BETWEEN :lo AND :lo + 9999;"),
    "tb_order": ("\\set lo random(1, {orders} - 10000)\n"
                 "UPDATE tb_order SET status = CASE status WHEN 'paid' THEN 'shipped' ELSE 'paid' END "
                 "WHERE pk_order BETWEEN :lo AND :lo + 9999;"),
}


def sizes(orders):
    return {"orders": orders, "customers": max(orders // 10, 1), "products": max(orders // 30, 1)}


def create(db, orders):
    psql("postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {db}")
    psql_file(db, os.path.join(SHOP, "schema.sql"))
    s = sizes(orders)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(SEED.format(**s))
    started = time.monotonic()
    psql_file(db, f.name)
    os.unlink(f.name)
    s["items"] = int(psql_value(db, "SELECT count(*) FROM tb_order_item"))
    print(f"  {db}: seeded {orders:,} orders, {s['items']:,} items, {s['customers']:,} customers, "
          f"{s['products']:,} products in {time.monotonic() - started:.1f} s", flush=True)
    return s


def pgbench_latencies(db, script, clients, transactions):
    """Runs the script `transactions` times per client; returns (latencies in ms, tps)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "script.sql")
        with open(path, "w") as f:
            f.write(script + "\n")
        out = subprocess.run(
            ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-c", str(clients),
             "-j", str(min(clients, 2)), "-t", str(transactions), "-f", path, "-l",
             "--log-prefix", os.path.join(d, "log"), db],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"pgbench failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
        latencies = []
        for name in os.listdir(d):
            if name.startswith("log"):
                with open(os.path.join(d, name)) as f:
                    for line in f:
                        latencies.append(int(line.split()[2]) / 1000.0)
    tps = float(out.stdout.split("tps = ")[1].split()[0])
    if len(latencies) != clients * transactions:
        raise SystemExit(f"pgbench logged {len(latencies)} transactions, expected {clients * transactions}")
    return latencies, tps


def pct(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(db, s, transactions):
    rows = {}
    for table, script in SINGLE.items():
        lat, _ = pgbench_latencies(db, script.format(**s), 1, transactions)
        rows[f"single-row {table}"] = {"median_ms": statistics.median(lat), "p99_ms": pct(lat, 0.99),
                                       "n": len(lat)}
    for table, script in BULK.items():
        lat, _ = pgbench_latencies(db, script.format(**s), 1, 10)
        rows[f"10k-row {table}"] = {"median_ms": statistics.median(lat), "p99_ms": pct(lat, 0.99),
                                    "n": len(lat)}
    lat, tps = pgbench_latencies(db, SINGLE["tb_order_item"].format(**s), 8, transactions // 4)
    rows["8 sessions tb_order_item"] = {"median_ms": statistics.median(lat), "p99_ms": pct(lat, 0.99),
                                        "n": len(lat), "tps": tps}
    return rows


def generate(binary, db, *args):
    env = dict(os.environ, FRAISEQL_DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}")
    started = time.monotonic()
    out = subprocess.run([binary, "generate-views", "--schema", os.path.join(SHOP, "schema.json"), *args],
                         env=env, capture_output=True, text=True)
    return out, time.monotonic() - started


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fraiseql"))
    ap.add_argument("--orders", type=int, default=30000)
    ap.add_argument("--fill-orders", type=int, default=1000000)
    ap.add_argument("--transactions", type=int, default=400)
    ap.add_argument("--json")
    args = ap.parse_args()

    print(f"generate-views write cost: shop at {args.orders:,} orders", flush=True)
    s = create(DB, args.orders)
    bare = measure(DB, s, args.transactions)
    out, took = generate(args.binary, DB, "--apply")
    if out.returncode != 0:
        raise SystemExit(f"generate-views --apply failed: {out.stderr.strip()}")
    print(f"  generate-views --apply (all entities): {took:.1f} s", flush=True)
    triggered = measure(DB, s, args.transactions)
    out, _ = generate(args.binary, DB, "--check")
    if out.returncode != 0:
        raise SystemExit(f"drift after the writes: generate-views --check said\n{out.stdout}{out.stderr}")
    print("  generate-views --check after every write: no drift", flush=True)

    print(f"\n{'statement':32} {'bare median':>12} {'p99':>9} {'triggers median':>16} {'p99':>9} {'ratio':>7}")
    for name in bare:
        b, t = bare[name], triggered[name]
        line = (f"{name:32} {b['median_ms']:10.2f}ms {b['p99_ms']:7.2f}ms {t['median_ms']:14.2f}ms "
                f"{t['p99_ms']:7.2f}ms {t['median_ms'] / b['median_ms']:6.1f}×")
        if "tps" in b:
            line += f"   tps {b['tps']:.0f} → {t['tps']:.0f}"
        print(line)

    fill = None
    if args.fill_orders:
        print(f"\ninitial fill: shop at {args.fill_orders:,} orders", flush=True)
        create(FILL_DB, args.fill_orders)
        out, took = generate(args.binary, FILL_DB, "--apply", "--entity", "order")
        if out.returncode != 0:
            raise SystemExit(f"generate-views --apply failed: {out.stderr.strip()}")
        copied = int(psql_value(FILL_DB, "SELECT count(*) FROM tv_order"))
        if copied != args.fill_orders:
            raise SystemExit(f"tv_order holds {copied} rows, expected {args.fill_orders}")
        fill = {"rows": copied, "seconds": took, "rows_per_s": copied / took}
        print(f"  generate-views --apply --entity order: {copied:,} rows in {took:.1f} s "
              f"= {copied / took:,.0f} rows/s", flush=True)
        psql("postgres", f"DROP DATABASE IF EXISTS {FILL_DB} WITH (FORCE)")
    psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sizes": s, "bare": bare, "triggers": triggered, "fill": fill}, f, indent=2)


if __name__ == "__main__":
    main()
