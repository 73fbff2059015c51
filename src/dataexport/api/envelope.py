"""The documented envelope: `{"payload": ..., "success": true}` and the error shape of contract.md section 2."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from dataexport.errors import DataExportError, TooManyRequests

# Token answers, errors included, must not be cached by anyone on the way (RFC 6749 section 5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

log = structlog.get_logger()

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    408: "REQUEST_TIMEOUT",
    410: "GONE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
}


CLIENT_CLOSED_REQUEST = 499  # the status logged for a request whose client left before its answer


def ok(payload: Any) -> dict:
    return {"payload": payload, "success": True}


class EnvelopeResponse(Response):
    """An answer already in its documented shape, rendered by orjson, for the hot endpoints.

    FastAPI validates a returned dict against the route's `response_model` and serialises it again; a
    returned Response it sends as is. The routes keep `response_model=` (the OpenAPI document is unchanged)
    and their presenters build exactly that shape (tests/integration/test_fuzz_contract.py checks answers
    against the document): the same bytes, without ~0.1 ms of validation per answer.
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_body(code: str, message: str, errors: list[dict] | None = None) -> dict:
    body: dict[str, Any] = {"success": False, "errorCode": code, "errorMessage": message}
    if errors:
        body["errors"] = errors
    return body


def _location(loc: tuple) -> str:
    parts = [p for p in loc if p not in ("query", "path", "body", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "request"


def _document_validation_as_400(app: FastAPI) -> None:
    """Drop FastAPI's automatic 422 answers from the OpenAPI document: request validation errors are
    answered 400 with the envelope (the handler below), so a documented 422 would be a false promise."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = generate()
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if "HTTPValidationError" in str(responses.get("422", {})):  # FastAPI's own, not a route's
                        del responses["422"]
            schemas = document.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    _document_validation_as_400(app)

    @app.exception_handler(DataExportError)
    async def _domain(_: Request, exc: DataExportError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
        return JSONResponse(
            error_body(exc.error_code, exc.message, [e.as_dict() for e in exc.errors]),
            status_code=exc.status,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _location(tuple(e.get("loc", ()))), "message": e.get("msg", "is invalid")} for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "request", "message": "is invalid"}
        return JSONResponse(
            error_body("VALIDATION_ERROR", f"Invalid value for {first['field']}: {first['message']}.", errors),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and message == "Not Found":
            message = "No such resource."
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RecursionError)
    async def _too_deep(_: Request, exc: RecursionError) -> JSONResponse:
        # Input nested deeper than a parser or validator could walk (the edge guard refuses deep JSON bodies
        # first; this keeps anything else that gets through a 400, not a 500 with two tracebacks).
        return JSONResponse(
            error_body(
                "INVALID_JSON",
                "The request is nested too deeply.",
                [{"field": "body", "message": "is nested too deeply"}],
            ),
            status_code=400,
        )

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, __: ClientDisconnect) -> Response:
        # The client hung up while its body was being read: nobody to answer, nothing went wrong here (it was
        # logged with a traceback as a 500). 499 is what the log line and the metrics say (nginx's "client
        # closed request"); uvicorn sends nothing to a closed connection.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never a traceback to the client; the log keeps it for the operator. This answer leaves from outside
        # the edge guard (Starlette's outermost middleware), so it carries the guard's header itself.
        log.exception("api.unhandled_error", path=request.url.path, error_type=type(exc).__name__)
        return JSONResponse(
            error_body("INTERNAL_ERROR", "An internal error occurred."),
            status_code=500,
            headers={"X-Content-Type-Options": "nosniff"},
        )
