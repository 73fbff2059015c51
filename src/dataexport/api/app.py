"""The FastAPI app factory. Settings come in; nothing is configured at import time."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from dataexport import __version__
from dataexport.api.context import AppContext, ProjectConcurrency, db_request_slots
from dataexport.api.envelope import install_error_handlers
from dataexport.api.http_guards import install_http_guards
from dataexport.api.observability import install_observability
from dataexport.api.query_guard import single_valued_query
from dataexport.api.routers import catalog, collect, exports, files, health, ingest, oauth, segments
from dataexport.clock import Clock, system_clock
from dataexport.config import Settings
from dataexport.console import install_console
from dataexport.engine.runtime import background_for
from dataexport.gc_tuning import settle_heap, shorten_thread_switches
from dataexport.metadata.db import make_engine, make_sessionmaker, migrate
from dataexport.security.keys import resolve_jwt_key
from dataexport.serving import SERVE_SETTINGS_ENV
from dataexport.warehouse.backend import open_warehouse

DESCRIPTION = """
Self-hosted, API-compatible implementation of the Contentsquare Data Export API.

Get a token from `POST /v1/oauth/token` (client credentials), then call the `/v1` endpoints with
`Authorization: Bearer <token>`. Every answer is `{"payload": ..., "success": true}`; every error is
`{"success": false, "errorCode": "...", "errorMessage": "...", "errors": [{"field", "message"}]}`.

Extensions beyond the vendor: `DELETE /v1/exports/{jobId}`, `POST /v1/exports/{jobId}/suspend` and
`/resume`, run details with `from`, `to`, `rows`, `manifestUrl` and `errorMessage`, `/healthz`, `/readyz`.
"""


# Threads running the requests' DB work (api.deps.Db): more than a few only add GIL contention.
MAX_DB_THREADS = 16


def prepare_shared_state(settings: Settings) -> None:
    """What several processes serving one deployment must not race on: the schema migration, the generated key."""
    engine = make_engine(settings.resolved_database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    resolve_jwt_key(settings)


def build_context(settings: Settings, *, clock: Clock = system_clock, storage=None) -> AppContext:
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    jwt_key = resolve_jwt_key(settings)
    if storage is None:
        from dataexport.storage import build_storage

        storage = build_storage(settings, secret=jwt_key)
    return AppContext(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        jwt_key=jwt_key,
        clock=clock,
        concurrency=ProjectConcurrency(settings.max_concurrent_requests_per_project),
        storage=storage,
        warehouse=open_warehouse(settings),
        db_request_slots=db_request_slots(engine),
    )


def _db_executor(ctx: AppContext) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(min(ctx.db_request_slots, MAX_DB_THREADS), thread_name_prefix="db")


def create_app(settings: Settings, *, context: AppContext | None = None) -> FastAPI:
    ctx = context or build_context(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # The embedded default is one process: the scheduler and a worker run beside the API unless disabled.
        background = background_for(ctx.settings, ctx.sessions, ctx.storage, ctx.clock, ctx.warehouse)
        background.start()
        try:
            yield
        finally:
            background.stop()
            # Its threads end; a fresh executor (threads start on demand) serves a restarted lifespan.
            app.state.db_executor.shutdown(wait=False)
            app.state.db_executor = _db_executor(ctx)

    app = FastAPI(
        title="dataexport",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(single_valued_query)],
    )
    app.state.context = ctx
    # Bounds the requests using a pooled DB connection at once to fewer than the pool has, keeping connections
    # free for what runs outside it (the in-process worker and scheduler, token checks, job creation). Each
    # request takes and returns its connection inside one thread call, so a DB thread never waits for a
    # connection held by a request that waits for a thread. One per app, so it belongs to the event loop
    # serving it (an asyncio primitive binds to one loop).
    app.state.db_slots = asyncio.Semaphore(ctx.db_request_slots)
    app.state.db_executor = _db_executor(ctx)
    app.state.ingest_gate = asyncio.Semaphore(ingest.INGEST_BATCHES_AT_ONCE)
    app.state.collection = collect.Collection(ctx, app.state.ingest_gate)
    install_error_handlers(app)
    install_http_guards(app, ctx)  # before: it runs inside the observability middleware
    install_observability(app, ctx)
    for module in (oauth, exports, catalog, segments, files, ingest, collect, health):
        app.include_router(module.router)
    install_console(app, ctx)
    return app


def served_app(settings: Settings) -> FastAPI:
    """The app as `dataexport serve` runs it in each of its processes: logging configured, startup heap settled."""
    from dataexport.logging import configure_logging

    configure_logging(settings.log_level, settings.log_json)
    app = create_app(settings)
    settle_heap()
    shorten_thread_switches()
    return app


def app_for_serve_process() -> FastAPI:
    """The app of one process of `dataexport serve --processes N` (a uvicorn factory, see serving.py): the
    settings the command resolved reach it as JSON in the environment."""
    return served_app(Settings.model_validate_json(os.environ[SERVE_SETTINGS_ENV]))
