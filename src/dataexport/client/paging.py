"""Walking a paginated listing: pages of the largest size until a short one, each item once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from dataexport.client.calls import MAX_LIMIT

T = TypeVar("T")

PAGE = MAX_LIMIT


def fresh(items: Iterable[T], key: Callable[[T], Any], seen: set[Any]) -> Iterator[T]:
    """The items not seen before. Pages are offsets: a row inserted meanwhile shifts the next page by one, which
    would show an item twice."""
    for item in items:
        k = key(item)
        if k not in seen:
            seen.add(k)
            yield item
