#!/usr/bin/env python3
"""What authentication costs: the same fraiseql binary, schema and data served twice side by
side, once without [auth] and once verifying an RS256 JWT on every request, applying
[auth.settings] (two transaction-local settings) and SET LOCAL ROLE. One load generator
(wrk) drives the GraphQL list query at 1, 16 and 64 connections against both; before
timing, both must return the same response. Prints requests/s, p50, p99 and the ratios.

The token is signed here with openssl (RS256 = RSASSA-PKCS1-v1_5 with SHA-256) by the test
key in tests/fixtures/jwt, whose public half the verifier is configured with.

Usage: bench/auth_bench.py [--duration SECONDS] [--binary PATH]
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from graphql_bench import ROOT, post, psql, psql_file, stop, wait_http, wrk  # noqa: E402

DB = "fraiseql_auth_bench"
URL = f"postgres://postgres@127.0.0.1:5432/{DB}"
PLAIN_PORT, AUTH_PORT = 18110, 18111
QUERY = "{ users(limit: 20) { id name email posts { id title } } }"
ROLES = ("fq_bench_anon", "fq_bench_reader")


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256_token(key_file, claims):
    signing_input = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + \
        b64(json.dumps(claims).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_file],
                         input=signing_input.encode(), capture_output=True, check=True).stdout
    return signing_input + "." + b64(sig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "fraiseql"))
    ap.add_argument("--verify-only", action="store_true",
                    help="no [auth.settings] and no db_roles: the JWT is verified, nothing is set")
    args = ap.parse_args()

    psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql("postgres", f"CREATE DATABASE {DB}")
    env = dict(os.environ, FRAISEQL_DATABASE_URL=URL, FRAISEQL_LOG="warn")
    subprocess.run([args.binary, "db", "init"], env=env, check=True, stdout=subprocess.DEVNULL)
    for f in ("schema.sql", "tv.sql", "seed.sql"):
        psql_file(DB, os.path.join(ROOT, "examples", "blog", f))
    # Roles are cluster-wide: created if missing, granted what the views need.
    for role in ROLES:
        psql(DB, f"DO $$ BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        psql(DB, f"GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    psql(DB, "ANALYZE")

    with open(os.path.join(ROOT, "examples", "blog", "schema.json")) as f:
        sdk = json.load(f)
    for item in sdk.get("types", []) + sdk.get("queries", []):
        if str(item.get("sql_source", "")).startswith("v_"):
            item["sql_source"] = "t" + item["sql_source"]
    tmp = tempfile.mkdtemp()
    schema = os.path.join(tmp, "schema.json")
    with open(schema, "w") as f:
        json.dump(sdk, f)
    auth_config = os.path.join(tmp, "auth.toml")
    with open(auth_config, "w") as f:
        f.write(f"""
[auth]
mode = "required"
anonymous_role = "{ROLES[0]}"
{"" if args.verify_only else f'db_roles = ["{ROLES[0]}", "{ROLES[1]}"]'}

[[auth.jwt]]
algorithms = ["RS256"]
public_key_file = "{os.path.join(ROOT, 'tests', 'fixtures', 'jwt', 'rsa1.pub')}"
issuer = "https://idp.bench/"
audience = ["fraiseql"]
required_claims = ["sub", "exp"]
""" + ("" if args.verify_only else """
[auth.settings]
"app.user_id" = "sub"
"request.jwt.claims" = "$"
"""))
    token = rs256_token(os.path.join(ROOT, "tests", "fixtures", "jwt", "rsa1.key"), {
        "sub": "bench-user", "iss": "https://idp.bench/", "aud": "fraiseql",
        "exp": int(time.time()) + 3600, "role": ROLES[1]})

    procs = []
    try:
        procs.append(subprocess.Popen([args.binary, "serve", "--listen", f"127.0.0.1:{PLAIN_PORT}",
                                       "--schema", schema], env=env))
        procs.append(subprocess.Popen([args.binary, "--config", auth_config, "serve", "--listen",
                                       f"127.0.0.1:{AUTH_PORT}", "--schema", schema], env=env))
        plain = f"http://127.0.0.1:{PLAIN_PORT}/graphql"
        authed = f"http://127.0.0.1:{AUTH_PORT}/graphql"
        wait_http(f"http://127.0.0.1:{PLAIN_PORT}/readyz")
        wait_http(f"http://127.0.0.1:{AUTH_PORT}/readyz")
        a = post(plain, QUERY)
        b = post(authed, QUERY, headers={"Authorization": f"Bearer {token}"})
        if "errors" in a or a != b:
            raise SystemExit(f"the two servers answer differently:\n{a}\n{b}")
        what = "verifies the JWT and sets nothing" if args.verify_only else \
            f"runs as {ROLES[1]} (SET LOCAL ROLE) with 2 settings, in a transaction"
        print(f"both answer the same ({len(json.dumps(a))} bytes); the authenticated one {what}")
        body = json.dumps({"query": QUERY})
        rows = []
        for c in (1, 16, 64):
            wrk(plain, body, c, 2)
            wrk(authed, body, c, 2, headers={"Authorization": f"Bearer {token}"})
            r_plain = wrk(plain, body, c, args.duration)
            r_auth = wrk(authed, body, c, args.duration, headers={"Authorization": f"Bearer {token}"})
            rows.append((c, r_plain, r_auth))
        print()
        print(f"{'conns':>5} | {'no auth req/s':>13} {'p99 ms':>7} | {'with auth req/s':>23} "
              f"{'p99 ms':>7} | {'cost':>6} {'p99 ratio':>9}")
        failed = False
        for c, p, q in rows:
            cost = 1 - q["rps"] / p["rps"]
            print(f"{c:>5} | {p['rps']:>13.0f} {p['p99']:>7.2f} | {q['rps']:>23.0f} {q['p99']:>7.2f} | "
                  f"{cost * 100:>5.1f}% {q['p99'] / p['p99']:>8.2f}x")
            if p["errors"] or q["errors"]:
                print(f"  non-2xx responses: no auth {p['errors']}, auth {q['errors']}")
                failed = True
        print("\ncost = 1 - authenticated req/s ÷ unauthenticated req/s (goal: <= 10 % at 16 connections)")
        return 1 if failed else 0
    finally:
        stop(procs, DB)


if __name__ == "__main__":
    sys.exit(main())
