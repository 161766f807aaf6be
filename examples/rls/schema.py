"""The RLS example's GraphQL schema, written with the FraiseQL SDK (2.18).

Export it with:  python schema.py   (writes schema.json beside this file)
Rows are filtered by PostgreSQL's row-level security, not by the schema: every request
runs with app.tenant_id set from the token's tenant_id claim (see config.toml).
"""

import decimal
from pathlib import Path

import fraiseql
from fraiseql.scalars import ID


@fraiseql.type(sql_source="v_order")
class Order:
    """An order, visible only to its tenant (RLS on tb_order)."""

    id: ID
    tenant_id: str
    item: str
    amount: decimal.Decimal


@fraiseql.query(sql_source="v_order", auto_params=True)
def orders(limit: int = 100) -> list[Order]:
    """The caller's tenant's orders."""


@fraiseql.input
class CreateOrderInput:
    item: str
    amount: decimal.Decimal


@fraiseql.mutation(sql_source="fn_create_order", operation="CREATE")
def create_order(input: CreateOrderInput) -> Order:
    """Creates an order for the caller's tenant (the row's tenant_id defaults to it)."""


if __name__ == "__main__":
    fraiseql.export_schema(str(Path(__file__).with_name("schema.json")))
