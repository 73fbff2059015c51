"""Every query parameter of this API takes one value: a repeated one (`?ids=1&ids=2`) is an error, not a guess.

Async, so FastAPI runs it on the event loop rather than adding a thread-pool hop to every request.
"""

from __future__ import annotations

from fastapi import Request

from dataexport.errors import validation_error


async def single_valued_query(request: Request) -> None:
    params = request.query_params
    for name in params:
        if len(params.getlist(name)) > 1:
            raise validation_error(name[:64], "must be given once")
