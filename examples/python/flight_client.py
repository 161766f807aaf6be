#!/usr/bin/env python3
"""Read FraiseQL data over Arrow Flight into pandas DataFrames.

    pip install pyarrow pandas
    FRAISEQL_FLIGHT_TOKEN=... python3 flight_client.py --view va_orders \
        --graphql '{ posts { id title author { name } } }'

It lists the available flights, reads a va_/ta_ view (optionally filtered) and a GraphQL
list query, and prints each DataFrame. Use --tls-ca (and --cert/--key for mutual TLS) when
the server has TLS configured.
"""
import argparse
import json
import os

import pyarrow.flight as flight


def connect(args):
    if args.tls_ca:
        kwargs = {"tls_root_certs": open(args.tls_ca, "rb").read()}
        if args.cert:
            kwargs["cert_chain"] = open(args.cert, "rb").read()
            kwargs["private_key"] = open(args.key, "rb").read()
        return flight.FlightClient(f"grpc+tls://{args.host}:{args.port}", **kwargs)
    return flight.FlightClient(f"grpc+tcp://{args.host}:{args.port}")


def read(client, options, ticket):
    """Runs one ticket (a dict) and returns a pandas DataFrame."""
    reader = client.do_get(flight.Ticket(json.dumps(ticket).encode()), options)
    return reader.read_pandas()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default="50051")
    p.add_argument("--token", default=os.environ.get("FRAISEQL_FLIGHT_TOKEN"))
    p.add_argument("--tls-ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--view", default="va_orders")
    p.add_argument("--where", help='JSON filter, e.g. {"status": {"eq": "paid"}}')
    p.add_argument("--limit", type=int)
    p.add_argument("--graphql", help="a GraphQL list query")
    args = p.parse_args()

    client = connect(args)
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {args.token}".encode())])

    print("flights:", ", ".join(i.descriptor.path[0].decode() for i in client.list_flights(options=options)))

    ticket = {"type": "view", "view": args.view}
    if args.where:
        ticket["where"] = json.loads(args.where)
    if args.limit is not None:
        ticket["limit"] = args.limit
    df = read(client, options, ticket)
    print(f"view {args.view}: {len(df)} rows x {len(df.columns)} columns")
    print(df.dtypes.to_string())
    print(df.to_string())

    if args.graphql:
        df = read(client, options, {"type": "graphql", "query": args.graphql})
        print(f"graphql: {len(df)} rows x {len(df.columns)} columns")
        print(df.to_string())


if __name__ == "__main__":
    main()
