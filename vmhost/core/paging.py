"""Keyset pagination: every collection answers a page of at most `limit` items and, when more follow,
an opaque cursor for the next page.

A cursor holds the sort key of the last item given (urlsafe base64 of a small JSON list, led by the
collection's name), and the next page starts after that key. Unlike an offset, a key does not move
when rows are inserted or deleted meanwhile: a new row never shifts or repeats the items of later
pages. Each order ends with a unique column (the id) as a tiebreaker, so no two items share a key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from vmhost.errors import InvalidInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_CURSOR_LENGTH = 1024

T = TypeVar("T")
R = TypeVar("R")

Key = tuple[str | int, ...]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None = None

    def map(self, convert: Callable[[T], R]) -> Page[R]:
        return Page([convert(item) for item in self.items], self.next_cursor)


@dataclass(frozen=True)
class Order:
    """How a collection is sorted: by `columns` (each with the type of its values), all ascending or all
    descending, the last one unique. `collection` names it in its cursors, so that one collection's
    cursor is refused by another."""

    collection: str
    columns: dict[str, type[str | int]]
    descending: bool = False

    @property
    def sql(self) -> str:
        """The ORDER BY clause's terms."""
        way = " DESC" if self.descending else ""
        return ", ".join(f"{column}{way}" for column in self.columns)

    def after(self, cursor: str) -> tuple[str, list[str | int]]:
        """The SQL condition (with its parameters) that keeps the rows after the cursor's key."""
        key = self.decode(cursor)
        columns = ", ".join(self.columns)
        marks = ", ".join("?" for _ in self.columns)
        return f"({columns}) {'<' if self.descending else '>'} ({marks})", list(key)

    def encode(self, key: Key) -> str:
        text = json.dumps([self.collection, *key], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    def decode(self, cursor: str) -> Key:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise _refused(cursor, f"longer than {MAX_CURSOR_LENGTH} characters")
        try:
            data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        except ValueError:  # not base64 (binascii.Error), not UTF-8, not JSON
            raise _refused(cursor, "not a cursor this daemon wrote") from None
        if not isinstance(data, list) or not data or data[0] != self.collection:
            raise _refused(cursor, f"not a cursor of the {self.collection} list")
        key = tuple(data[1:])
        if len(key) != len(self.columns) or any(type(v) is not t for v, t in zip(key, self.columns.values())):
            raise _refused(cursor, "its sort key is damaged")
        return key

    def page(self, rows: Sequence[T], limit: int, key: Callable[[T], Key]) -> Page[T]:
        """The first `limit` of `rows` (fetched as `limit + 1`, to know whether more follow)."""
        if len(rows) <= limit:
            return Page(list(rows))
        kept = list(rows[:limit])
        return Page(kept, self.encode(key(kept[-1])))

    def page_of(self, items: Iterable[T], limit: int, cursor: str | None, key: Callable[[T], Key]) -> Page[T]:
        """A page of a collection computed in memory, sorted and cut the way SQL would."""
        check_limit(limit)
        ordered = sorted(items, key=key, reverse=self.descending)
        if cursor is not None:
            start = self.decode(cursor)
            ordered = [item for item in ordered if (key(item) < start if self.descending else key(item) > start)]
        return self.page(ordered, limit, key)


def check_limit(limit: int) -> int:
    """The page size; the API checks it first, this is for callers that do not come through it."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return limit


def _refused(cursor: str, why: str) -> InvalidInput:
    shown = cursor if len(cursor) <= 64 else cursor[:64] + "..."
    return InvalidInput(f"cursor {shown!r} is not valid here ({why}): pass the next_cursor of the previous page "
                        "unchanged, with the same filters, or leave cursor out to start from the first page")
