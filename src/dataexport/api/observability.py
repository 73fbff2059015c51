"""Request ids, one structured log line per request, and Prometheus metrics at `/metrics`.

Run-level metrics are read from the metadata DB at scrape time, so they are true for the whole deployment
(every worker process), not only for this API process. `/metrics` tells how busy the deployment is and how much
it exported: with `metrics_token` set it requires `Authorization: Bearer <metrics_token>` (401 otherwise);
without, it answers loopback clients only (403 otherwise; behind a trusted proxy, the client is the address the
proxy forwards).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
import uuid
from collections.abc import Callable

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dataexport.api.context import AppContext
from dataexport.api.schemas import ErrorEnvelope
from dataexport.domain.enums import RunState
from dataexport.errors import AuthError, DataExportError, Forbidden
from dataexport.metadata.models import JobRun, RunFile

log = structlog.get_logger()

_TEARDOWN = "dataexport.teardown"


def at_request_end(scope: Scope, fn: Callable[[], None]) -> None:
    """Run `fn` when the request is over (response sent, or failed), whatever happened in between.

    Cheaper than a generator dependency, which FastAPI drives through an AsyncExitStack on every request.
    """
    scope[_TEARDOWN].append(fn)  # a KeyError here means the app was built without ObservabilityMiddleware


class RunCollector:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def collect(self):
        now = self.ctx.clock()
        with self.ctx.sessions() as session:
            by_state = dict(session.execute(select(JobRun.state, func.count()).group_by(JobRun.state)).all())
            queue = session.scalar(
                select(func.count()).where(JobRun.state == RunState.RUNNABLE.value, JobRun.runnable_at <= now)
            )
            expired = session.scalar(
                select(func.count()).where(JobRun.state == RunState.RUNNING.value, JobRun.lease_expires_at < now)
            )
            rows = session.scalar(
                select(func.coalesce(func.sum(JobRun.rows), 0)).where(JobRun.state == RunState.SUCCESS.value)
            )
            size = session.scalar(select(func.coalesce(func.sum(RunFile.size), 0)))
        runs = GaugeMetricFamily("dataexport_runs", "Job runs by state", labels=["state"])
        for state in RunState:
            runs.add_metric([state.value], by_state.get(state.value, 0))
        yield runs
        yield GaugeMetricFamily("dataexport_queue_depth", "Runs due and waiting for a worker", value=queue)
        yield GaugeMetricFamily(
            "dataexport_expired_leases", "Running runs whose worker stopped renewing its lease", value=expired
        )
        yield GaugeMetricFamily("dataexport_exported_rows", "Rows written by successful runs", value=rows)
        yield GaugeMetricFamily("dataexport_exported_bytes", "Compressed bytes of all exported parts", value=size)


class ObservabilityMiddleware:
    """Request id, metrics, one `http.request` log line and the `at_request_end` calls of each request, as a
    plain ASGI middleware.

    Plain ASGI rather than `@app.middleware("http")` (BaseHTTPMiddleware), which costs a task and a stream
    per request. Never logs the query string or headers: signed URLs and tokens must not reach the logs.
    """

    def __init__(self, app: ASGIApp, *, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
                break
        request_id = request_id or uuid.uuid4().hex
        header = (b"x-request-id", request_id.encode("latin-1"))
        structlog.contextvars.bind_contextvars(request_id=request_id)
        teardown: list[Callable[[], None]] = []
        scope[_TEARDOWN] = teardown
        started = time.perf_counter()
        status, elapsed = 500, None

        async def send_with_id(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                # Latency to the response head, as before: a long download's streaming is not counted.
                status, elapsed = message["status"], time.perf_counter() - started
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            for fn in teardown:
                fn()
            if elapsed is None:
                elapsed = time.perf_counter() - started
            # The route template, not the raw path: ids must not explode the label space.
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.requests.labels(method, route, str(status)).inc()
            self.latency.labels(method, route).observe(elapsed)
            log.info("http.request", method=method, route=route, status=status, duration_ms=round(elapsed * 1000, 2))
            structlog.contextvars.unbind_contextvars("request_id")


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback address (::ffff:127.0.0.1); not a name, not unknown."""
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def metrics_refusal(token: str | None, authorization: str | None, client_host: str | None) -> DataExportError | None:
    """Why a scrape of `/metrics` is refused (None: it is not). Pure: the request's parts are passed in."""
    if token:
        scheme, _, sent = (authorization or "").partition(" ")
        sent = sent.strip()
        # Compared as bytes in constant time: the answer must not reveal how much of the token was right.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            sent.encode("utf-8", "surrogatepass"), token.encode("utf-8", "surrogatepass")
        ):
            return AuthError("The metrics token is missing or wrong.", error_code="METRICS_TOKEN_INVALID")
        return None
    if not is_loopback(client_host):
        return Forbidden(
            "Metrics answer loopback clients only (set metrics_token to scrape them from elsewhere).",
            error_code="METRICS_FORBIDDEN",
        )
    return None


def install_observability(app: FastAPI, ctx: AppContext) -> None:
    registry = CollectorRegistry()
    requests = Counter("dataexport_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
    latency = Histogram(
        "dataexport_http_request_seconds",
        "HTTP request latency",
        ["method", "route"],
        registry=registry,
        buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    )
    registry.register(RunCollector(ctx))

    app.add_middleware(ObservabilityMiddleware, requests=requests, latency=latency)

    # Documented as text: the Prometheus exposition format, not JSON.
    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        include_in_schema=True,
        response_class=PlainTextResponse,
        responses={
            401: {"model": ErrorEnvelope, "description": "metrics_token is set: not sent as the bearer token"},
            403: {"model": ErrorEnvelope, "description": "No metrics_token: the client is not on loopback"},
        },
    )
    def metrics(request: Request) -> Response:
        refusal = metrics_refusal(
            ctx.settings.metrics_token,
            request.headers.get("authorization"),
            request.client.host if request.client else None,
        )
        if refusal is not None:
            raise refusal
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
