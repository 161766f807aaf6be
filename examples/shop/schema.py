"""The shop example's GraphQL schema, written with the FraiseQL SDK (2.18).

Export it with:  python schema.py   (writes schema.json beside this file)
Orders are read from v_order (examples/shop/schema.sql): native columns id, number,
placed_at, status and fk_customer beside `data`, which embeds the customer and the items
(each with its product). bench/shop_bench.py also serves it with Order and the order
queries pointed at the stored copy tv_order (examples/shop/tv.sql).
"""

import decimal
from pathlib import Path

import fraiseql
from fraiseql.scalars import ID, DateTime


@fraiseql.type(sql_source="v_customer")
class Customer:
    """A customer; embedded in an order as id, name and email."""

    id: ID
    name: str
    email: str
    country: str | None


@fraiseql.type(sql_source="v_product")
class Product:
    """A product; embedded in an order item as id, sku and name."""

    id: ID
    sku: str
    name: str
    price: decimal.Decimal | None


@fraiseql.type(sql_source="v_order")
class OrderItem:
    """One line of an order (embedded in the order's `items`)."""

    id: ID
    line: int
    quantity: int
    unit_price: decimal.Decimal
    product: Product


@fraiseql.type(sql_source="v_order")
class Order:
    """An order with its customer and its items, by line."""

    id: ID
    number: int
    status: str
    placed_at: DateTime
    total: decimal.Decimal
    customer: Customer
    items: list[OrderItem]


@fraiseql.query(sql_source="v_order", auto_params=True)
def orders(limit: int = 20) -> list[Order]:
    """Orders; `where` and `orderBy` on number, status or placed_at can use v_order's columns."""


@fraiseql.query(sql_source="v_order")
def order(id: ID) -> Order | None:
    """One order by id."""


@fraiseql.query(sql_source="v_customer", auto_params=True)
def customers(limit: int = 20) -> list[Customer]:
    """Customers."""


@fraiseql.query(sql_source="v_customer")
def customer(id: ID) -> Customer | None:
    """One customer by id."""


@fraiseql.query(sql_source="v_product", auto_params=True)
def products(limit: int = 20) -> list[Product]:
    """Products."""


if __name__ == "__main__":
    fraiseql.export_schema(str(Path(__file__).with_name("schema.json")))
