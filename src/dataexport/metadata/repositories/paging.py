from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select

from dataexport.domain.enums import Order


@dataclass(frozen=True)
class Page:
    page: int = 1
    limit: int = 25
    order: Order = Order.DESC

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


def paginate(stmt: Select, page: Page, *order_columns) -> Select:
    ordering = [c.asc() if page.order is Order.ASC else c.desc() for c in order_columns]
    return stmt.order_by(*ordering).limit(page.limit).offset(page.offset)
