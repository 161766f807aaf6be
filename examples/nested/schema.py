"""The nested example's GraphQL schema, written with the FraiseQL SDK (2.18).

Export it with:  python schema.py   (writes schema.json beside this file)
Publishers embed their authors and each author's books (three levels: publisher → author →
book → chapters, tags); books embed their author (v_author, whose review statistics
aggregate every review of every book of the author) and their tags (a many-to-many).
`fraiseql generate-views` derives tv_publisher, tv_author, tv_book and tv_tag and their
triggers from examples/nested/schema.sql.
"""

import decimal
from pathlib import Path

import fraiseql
from fraiseql.scalars import ID, DateTime


@fraiseql.type(sql_source="v_tag")
class Tag:
    """A tag; `book_count` counts the books carrying it."""

    id: ID
    name: str
    book_count: int | None


@fraiseql.type(sql_source="v_publisher")
class PublisherRef:
    """A publisher as embedded in an author."""

    id: ID
    name: str


@fraiseql.type(sql_source="v_author")
class Author:
    """An author with the statistics of every review of their books."""

    id: ID
    name: str
    tier: str
    publisher: PublisherRef
    review_count: int
    total_stars: int


@fraiseql.type(sql_source="v_book")
class Chapter:
    """One chapter of a book (embedded in the book's `chapters`)."""

    id: ID
    number: int
    title: str


@fraiseql.type(sql_source="v_book")
class Book:
    """A book with its author, its tags and its chapters."""

    id: ID
    title: str
    price: decimal.Decimal
    published_at: DateTime
    author: Author
    tags: list[Tag]
    chapters: list[Chapter]


@fraiseql.type(sql_source="v_publisher")
class AuthorBooks:
    """An author as embedded in a publisher, with their books."""

    id: ID
    name: str
    books: list[Book]


@fraiseql.type(sql_source="v_publisher")
class Publisher:
    """A publisher with its authors and their books."""

    id: ID
    name: str
    authors: list[AuthorBooks]


@fraiseql.query(sql_source="v_publisher", auto_params=True)
def publishers(limit: int = 20) -> list[Publisher]:
    """Publishers."""


@fraiseql.query(sql_source="v_author", auto_params=True)
def authors(limit: int = 20) -> list[Author]:
    """Authors."""


@fraiseql.query(sql_source="v_book", auto_params=True)
def books(limit: int = 20) -> list[Book]:
    """Books."""


@fraiseql.query(sql_source="v_tag", auto_params=True)
def tags(limit: int = 20) -> list[Tag]:
    """Tags."""


if __name__ == "__main__":
    fraiseql.export_schema(str(Path(__file__).with_name("schema.json")))
