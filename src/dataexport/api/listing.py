"""Shared query parameters of the list endpoints: page, limit, order and case-insensitive enum filters."""

from __future__ import annotations

from enum import StrEnum

from fastapi import Query

from dataexport.domain.enums import Order, parse_enum
from dataexport.errors import validation_error
from dataexport.metadata.repositories.paging import Page

MAX_LIMIT = 100


def enum_filter(enum_cls: type[StrEnum], raw: str | None, field: str):
    if raw is None:
        return None
    member = parse_enum(enum_cls, raw)
    if member is None:
        raise validation_error(field, "must be one of " + ", ".join(m.value for m in enum_cls))
    return member


# async: FastAPI would run a sync dependency in the thread pool, a hop per request.
async def page_params(
    page: int = Query(1, ge=1, le=1_000_000, description="1-based page number"),
    limit: int = Query(25, ge=1, le=MAX_LIMIT, description="Page size (25 by default, 100 max)"),
    order: str = Query("DESC", max_length=16, description="ASC or DESC (on the id), case-insensitive"),
) -> Page:
    return Page(page=page, limit=limit, order=enum_filter(Order, order, "order"))
