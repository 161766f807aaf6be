#!/usr/bin/env python3
"""pyarrow Flight client used by the Rust integration tests.

Each subcommand prints one JSON document on stdout. Values are normalised so the Rust side
can compare them with rows read through tokio-postgres:

  decimal -> str (keeps the scale: "12.50"), uuid -> canonical str, timestamp ->
  "%Y-%m-%dT%H:%M:%S.%f" (+ "Z" when the Arrow type has a time zone, converted to UTC),
  date -> ISO, time -> "%H:%M:%S.%f", bytes -> hex, arrow.json -> parsed JSON,
  NaN/inf -> "NaN"/"Infinity"/"-Infinity".

A Flight error is printed as {"error": {"class": ..., "message": ...}} (exit status 0), so
tests can assert on it.
"""
import argparse
import base64
import datetime
import decimal
import json
import math
import sys
import uuid

import pyarrow as pa
import pyarrow.flight as fl


def client(args):
    if args.tls_ca:
        kwargs = {"tls_root_certs": open(args.tls_ca, "rb").read()}
        if args.cert:
            kwargs["cert_chain"] = open(args.cert, "rb").read()
            kwargs["private_key"] = open(args.key, "rb").read()
        if args.override_hostname:
            kwargs["override_hostname"] = args.override_hostname
        return fl.FlightClient(f"grpc+tls://{args.host}:{args.port}", **kwargs)
    return fl.FlightClient(f"grpc+tcp://{args.host}:{args.port}")


def options(args):
    headers = []
    if args.token is not None:
        headers.append((b"authorization", f"Bearer {args.token}".encode()))
    return fl.FlightCallOptions(headers=headers, timeout=args.timeout)


def is_json_type(t):
    return isinstance(t, pa.BaseExtensionType) and t.extension_name == "arrow.json"


def is_uuid_type(t):
    return isinstance(t, pa.BaseExtensionType) and t.extension_name == "arrow.uuid"


def norm(v, t):
    """Normalises one Python value of Arrow type t."""
    if v is None:
        return None
    if is_json_type(t):
        return json.loads(v) if isinstance(v, str) else v
    if is_uuid_type(t):
        return str(v if isinstance(v, uuid.UUID) else uuid.UUID(bytes=v))
    if isinstance(t, pa.BaseExtensionType):
        t = t.storage_type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [norm(x, t.value_type) for x in v]
    if pa.types.is_struct(t):
        return {t.field(i).name: norm(v.get(t.field(i).name), t.field(i).type) for i in range(t.num_fields)}
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return v.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, datetime.time):
        return v.strftime("%H:%M:%S.%f")
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
    return v


def schema_json(schema):
    out = []
    for f in schema:
        md = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        out.append({"name": f.name, "type": str(f.type), "nullable": f.nullable, "metadata": md})
    return out


def table_json(table):
    cols = table.schema
    rows = []
    for r in table.to_pylist():
        rows.append({f.name: norm(r[f.name], f.type) for f in cols})
    return {"schema": schema_json(cols), "rows": rows, "num_rows": table.num_rows}


def cmd_get(args, c):
    ticket = args.ticket.encode() if args.ticket is not None else bytes.fromhex(args.ticket_hex)
    reader = c.do_get(fl.Ticket(ticket), options(args))
    if args.batches is not None:
        # Read a few batches and go away (the cancellation test).
        got = 0
        for _ in range(args.batches):
            chunk = reader.read_chunk()
            got += chunk.data.num_rows
        print(json.dumps({"rows_read": got}), flush=True)
        if args.then_sleep:
            import time

            time.sleep(args.then_sleep)
        reader.cancel()
        return None
    table = reader.read_all()
    out = table_json(table)
    out["batches"] = len(table.to_batches())
    return out


def descriptor(args):
    if args.path is not None:
        return fl.FlightDescriptor.for_path(args.path)
    return fl.FlightDescriptor.for_command(args.cmd)


def cmd_info(args, c):
    info = c.get_flight_info(descriptor(args), options(args))
    return {
        "schema": schema_json(info.schema),
        "tickets": [e.ticket.ticket.decode() for e in info.endpoints],
        "total_records": info.total_records,
    }


def cmd_schema(args, c):
    return {"schema": schema_json(c.get_schema(descriptor(args), options(args)).schema)}


def cmd_list(args, c):
    flights = []
    for info in c.list_flights(options=options(args)):
        flights.append(
            {
                "path": [p.decode() if isinstance(p, bytes) else p for p in info.descriptor.path],
                "ticket": info.endpoints[0].ticket.ticket.decode(),
                "fields": [f.name for f in info.schema],
            }
        )
    return {"flights": flights}


def cmd_action(args, c):
    results = [json.loads(r.body.to_pybytes()) for r in c.do_action(fl.Action(args.type, b""), options(args))]
    return {"results": results}


def cmd_actions(args, c):
    return {"actions": [a.type for a in c.list_actions(options(args))]}


def cmd_handshake(args, c):
    header = c.authenticate_basic_token(args.user, args.password, fl.FlightCallOptions(timeout=args.timeout))
    key, value = header
    # Use the returned header for a call, as pandas users do.
    c2 = fl.FlightCallOptions(headers=[header], timeout=args.timeout)
    actions = [a.type for a in c.list_actions(c2)]
    return {"header": [key.decode(), value.decode()], "actions": actions}


TYPES = {
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date32": pa.date32(),
    "timestamp_us": pa.timestamp("us"),
    "timestamp_ns_utc": pa.timestamp("ns", tz="UTC"),
    "timestamp_us_utc": pa.timestamp("us", tz="UTC"),
    "uuid": pa.binary(16),
    "binary": pa.binary(),
    "list_string": pa.list_(pa.string()),
    "list_int32": pa.list_(pa.int32()),
}


def arrow_type(name):
    if name.startswith("decimal("):
        p, s = name[len("decimal(") : -1].split(",")
        return pa.decimal128(int(p), int(s))
    return TYPES[name]


def convert(v, name):
    if v is None:
        return None
    if name.startswith("decimal("):
        return decimal.Decimal(v)
    if name == "uuid":
        return uuid.UUID(v).bytes
    if name.startswith("timestamp"):
        return datetime.datetime.fromisoformat(v)
    if name == "date32":
        return datetime.date.fromisoformat(v)
    if name == "binary":
        return bytes.fromhex(v)
    return v


def cmd_put(args, c):
    spec = json.loads(args.data)
    names = [n for n, _ in spec["columns"]]
    schema = pa.schema([pa.field(n, arrow_type(t)) for n, t in spec["columns"]])
    batches = []
    for rows in spec["batches"]:
        cols = [[convert(r[i], t) for r in rows] for i, (_, t) in enumerate(spec["columns"])]
        batches.append(pa.record_batch([pa.array(col, type=schema.field(i).type) for i, col in enumerate(cols)], schema=schema))
    d = fl.FlightDescriptor.for_path(args.table) if not args.cmd else fl.FlightDescriptor.for_command(args.cmd)
    writer, meta_reader = c.do_put(d, schema, options(args))
    for b in batches:
        writer.write_batch(b)
    writer.done_writing()
    buf = meta_reader.read()
    writer.close()
    return {"result": json.loads(buf.to_pybytes()) if buf is not None else None, "columns": names}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", required=True)
    p.add_argument("--token")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--tls-ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--override-hostname")
    sub = p.add_subparsers(dest="cmd_name", required=True)
    g = sub.add_parser("get")
    g.add_argument("--ticket")
    g.add_argument("--ticket-hex")
    g.add_argument("--batches", type=int)
    g.add_argument("--then-sleep", type=float)
    for name in ("info", "schema"):
        s = sub.add_parser(name)
        s.add_argument("--path")
        s.add_argument("--cmd")
    sub.add_parser("list")
    a = sub.add_parser("action")
    a.add_argument("--type", required=True)
    sub.add_parser("actions")
    h = sub.add_parser("handshake")
    h.add_argument("--user", default="user")
    h.add_argument("--password", required=True)
    u = sub.add_parser("put")
    u.add_argument("--table")
    u.add_argument("--cmd")
    u.add_argument("--data", required=True)
    args = p.parse_args()
    handlers = {
        "get": cmd_get,
        "info": cmd_info,
        "schema": cmd_schema,
        "list": cmd_list,
        "action": cmd_action,
        "actions": cmd_actions,
        "handshake": cmd_handshake,
        "put": cmd_put,
    }
    try:
        c = client(args)
        out = handlers[args.cmd_name](args, c)
    except (fl.FlightError, pa.ArrowException, KeyError) as e:
        out = {"error": {"class": type(e).__name__, "message": str(e)}}
    if out is not None:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
