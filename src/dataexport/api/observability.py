"""Request ids, one structured log line per request, and Prometheus metrics at `/metrics`.

Run-level metrics are read from the metadata DB at scrape time, so they are true for the whole deployment
(every worker process), not only for this API process.
"""

from __future__ import annotations

import time
import uuid

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from dataexport.api.context import AppContext
from dataexport.domain.enums import RunState
from dataexport.metadata.models import JobRun, RunFile

log = structlog.get_logger()


class RunCollector:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def collect(self):
        now = self.ctx.clock()
        with self.ctx.sessions() as session:
            by_state = dict(session.execute(select(JobRun.state, func.count()).group_by(JobRun.state)).all())
            queue = session.scalar(select(func.count()).where(
                JobRun.state == RunState.RUNNABLE.value, JobRun.runnable_at <= now))
            expired = session.scalar(select(func.count()).where(
                JobRun.state == RunState.RUNNING.value, JobRun.lease_expires_at < now))
            rows = session.scalar(select(func.coalesce(func.sum(JobRun.rows), 0)).where(
                JobRun.state == RunState.SUCCESS.value))
            size = session.scalar(select(func.coalesce(func.sum(RunFile.size), 0)))
        runs = GaugeMetricFamily("dataexport_runs", "Job runs by state", labels=["state"])
        for state in RunState:
            runs.add_metric([state.value], by_state.get(state.value, 0))
        yield runs
        yield GaugeMetricFamily("dataexport_queue_depth", "Runs due and waiting for a worker", value=queue)
        yield GaugeMetricFamily("dataexport_expired_leases", "Running runs whose worker stopped renewing its lease",
                                value=expired)
        yield GaugeMetricFamily("dataexport_exported_rows", "Rows written by successful runs", value=rows)
        yield GaugeMetricFamily("dataexport_exported_bytes", "Compressed bytes of all exported parts", value=size)


def install_observability(app: FastAPI, ctx: AppContext) -> None:
    registry = CollectorRegistry()
    requests = Counter("dataexport_http_requests", "HTTP requests", ["method", "route", "status"],
                       registry=registry)
    latency = Histogram("dataexport_http_request_seconds", "HTTP request latency", ["method", "route"],
                        registry=registry, buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
    registry.register(RunCollector(ctx))

    @app.middleware("http")
    async def observe(request: Request, call_next):
        request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            elapsed = time.perf_counter() - started
            # The route template, not the raw path: ids must not explode the label space.
            route = getattr(request.scope.get("route"), "path", "unmatched")
            requests.labels(request.method, route, str(status)).inc()
            latency.labels(request.method, route).observe(elapsed)
            # Never the query string or headers: signed URLs and tokens must not reach the logs.
            log.info("http.request", method=request.method, route=route, status=status,
                     duration_ms=round(elapsed * 1000, 2))
            structlog.contextvars.unbind_contextvars("request_id")

    # Documented as text: the Prometheus exposition format, not JSON.
    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=True,
             response_class=PlainTextResponse)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
