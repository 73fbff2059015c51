"""Engine and sessions. Migrations are applied at start-up by `migrate()`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Connections kept by a process's pool, and how many more it may open under a burst. The API lets at most
# size + overflow - 4 requests hold one at once (api.context.db_request_slots), and runs each request's DB
# work in one thread-pool call (40 threads), so the kept connections cover the request gate.
PG_POOL_SIZE = 20
PG_MAX_OVERFLOW = 10
PG_POOL_RECYCLE = 1800  # seconds: under common idle timeouts of servers, proxies and NAT
SQLITE_POOL_SIZE = 16
SQLITE_MAX_OVERFLOW = 4


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Sized so the API's request gate (pool size + overflow - reserved, see api.context.db_request_slots)
        # runs on kept connections: an overflow connection is opened, and its PRAGMAs run, for every checkout.
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_MAX_OVERFLOW,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    # pool_pre_ping stays: it costs a round trip (";") per checkout, but without it a connection that died
    # with a PostgreSQL restart fails its first statement, and callers outside the API (worker and scheduler
    # loops, tools and tests using this engine: tests/acceptance/test_faults.py) would see that error.
    # pool_recycle retires connections before server-side or middlebox idle timeouts cut them silently.
    engine = create_engine(
        url, pool_pre_ping=True, pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW, pool_recycle=PG_POOL_RECYCLE
    )

    @event.listens_for(engine, "handle_error")
    def _invalidate_on_disconnect(context):
        # The psycopg dialect calls a closed or broken libpq connection a disconnect. Explicit here: a statement
        # that meets a dead connection drops every connection of the pool opened before it, not only its own.
        if context.is_disconnect:
            context.invalidate_pool_on_disconnect = True

    return engine


def migrate(engine: Engine) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Commit at the edge: one unit of work, committed on success, rolled back on any error."""
    with factory() as session, session.begin():
        yield session
