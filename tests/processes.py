"""Real `dataexport` processes for the acceptance suites: start, kill -9, stop, read their JSON logs."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import text

SRC_DIR = Path(__file__).resolve().parents[1] / "src"
STARTUP_TIMEOUT = 60


@dataclass
class Service:
    """One restartable `dataexport` service. Each incarnation logs to its own file (never a pipe nobody
    reads), so the logs of killed incarnations stay readable."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str]
    log_dir: Path
    port: int | None = None
    preexec: Callable[[], None] | None = None
    proc: subprocess.Popen | None = None
    starts: int = 0
    kills: int = 0
    terminated: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.{self.starts}.log"

    def start(self) -> Service:
        self.starts += 1
        self.terminated = False
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dataexport.cli", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self.preexec,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.alive(), f"{self.name} was already dead\n{self.tail()}"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.kills += 1

    def terminate(self) -> None:
        """SIGTERM once: a second one could land after the process restored the default handler on exit."""
        if self.alive() and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM (a worker hands back or finishes its run), then SIGKILL if it lingers."""
        if not self.alive():
            return None if self.proc is None else self.proc.returncode
        self.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def events(self, current_only: bool = False) -> list[dict]:
        """The structlog JSON lines of every incarnation's log (or the current one's)."""
        paths = [self.log_path] if current_only else sorted(self.log_dir.glob(f"{self.name}.*.log"))
        found = []
        for path in paths:
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        found.append(json.loads(line))
        return found

    def tail(self) -> str:
        return f"--- {self.name} #{self.starts} ---\n" + self.log_path.read_text(errors="replace")[-3000:]


def service_env(base: dict[str, str]) -> dict[str, str]:
    """This environment without any DATAEXPORT_* setting of the caller's, plus `base`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAEXPORT_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH")) if p)
    env.update(base)
    return env


def wait_until(
    ready: Callable[[], bool], services: list[Service], what: str, timeout: float = STARTUP_TIMEOUT, every: float = 0.2
) -> float:
    """Poll `ready`; fail with the logs if a service died or time ran out. Returns the seconds it took."""
    started = time.monotonic()
    while not ready():
        dead = [s for s in services if not s.alive()]
        if dead or time.monotonic() - started > timeout:
            logs = "\n".join(s.tail() for s in (dead or services))
            raise AssertionError(f"{what}: {'a process exited' if dead else 'timed out'}\n{logs}")
        time.sleep(every)
    return time.monotonic() - started


def answers(url: str, path: str = "/healthz", headers: dict | None = None) -> bool:
    try:
        return httpx.get(f"{url}{path}", headers=headers, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def stamp(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}Z"


def count_part_records(fmt: str, content: str) -> int:
    """Records of one decompressed part: CSV parsed as CSV (quoted fields may hold newlines) minus its header;
    JSONL lines, each of which must be one JSON object."""
    if fmt == "CSV":
        records = list(csv.reader(io.StringIO(content, newline="")))
        assert records, "a CSV part without its header"
        return len(records) - 1
    lines = content.splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)
    return len(lines)


def cli_json(env: dict[str, str], *args: str) -> dict:
    """Run `dataexport ARGS --json` in a process of its own with `env`; its JSON answer."""
    out = subprocess.run(
        [sys.executable, "-m", "dataexport.cli", *args, "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(out.stdout)


# ---------------------------------------------------------------- workers and their leases


def worker_ids(workers: list[Service]) -> dict[str, Service]:
    """worker_id (from `worker.started` of the current incarnation) -> its service."""
    return {
        e["worker_id"]: w for w in workers for e in w.events(current_only=True) if e.get("event") == "worker.started"
    }


def busy_worker(engine, workers: list[Service], wait: float) -> Service | None:
    """A worker that holds a run's lease right now, waiting up to `wait` seconds for one."""
    give_up = time.monotonic() + wait
    while time.monotonic() < give_up:
        with engine.connect() as conn:
            owners = {
                o
                for (o,) in conn.execute(
                    text("SELECT lease_owner FROM job_runs WHERE state = 'RUNNING' AND lease_owner IS NOT NULL")
                )
            }
        holding = [w for wid, w in worker_ids(workers).items() if wid in owners and w.alive()]
        if holding:
            return holding[0]
        time.sleep(0.05)
    return None


# ---------------------------------------------------------------- an ingest client

NaturalKey = tuple[str, int, int]  # (user_id_unhashed, session_number, view_number): one pageview


def batch_hits(batch: int, when: datetime, *, prefix: str = "fault", users: int = 8, views: int = 5) -> list[dict]:
    """Hits with natural keys of their own (user PREFIX-B-U, session 1, views 1..`views`), their sessions
    starting at `when` plus one second per user."""
    hits = []
    for i in range(users * views):
        user, view = divmod(i, views)
        session_start = when + timedelta(seconds=user)
        hits.append(
            {
                "user_id_unhashed": f"{prefix}-{batch}-{user}",
                "session_number": 1,
                "view_number": view + 1,
                "session_time": stamp(session_start),
                "view_time": stamp(session_start + timedelta(seconds=9 * view)),
                "device_id": 1 + i % 3,
                "url": f"https://shop.example/p/{batch}/{i}",
                "title": f"Batch {batch}",
                "country_code": "FR",
            }
        )
    return hits


class Ingester(threading.Thread):
    """A tracker that sends batches back to back and resends one until it is acknowledged (2xx), as a
    real client would: a resent batch must be stored once.

    Given several API replicas, batch B goes first to replica B mod N, and each resend to the next one, so a
    batch whose replica is down (or died while answering) is acknowledged by another. With `keyed`, every
    batch carries an `Idempotency-Key` of its own, the same on each resend. Batch B's sessions start at
    `when` + B x `spacing`."""

    def __init__(
        self,
        urls: str | Sequence[str],
        ingest_key: str,
        when: datetime,
        *,
        prefix: str = "fault",
        users: int = 8,
        views: int = 5,
        spacing: timedelta = timedelta(0),
        keyed: bool = False,
    ) -> None:
        super().__init__(daemon=True, name="ingester")
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.key, self.when = ingest_key, when
        self.prefix, self.users, self.views, self.spacing, self.keyed = prefix, users, views, spacing, keyed
        self.stopping = threading.Event()
        self.acked: list[NaturalKey] = []  # natural keys of every acknowledged hit
        self.batches = self.resends = self.duplicates = 0
        self.unacked: list[int] = []
        self.errors: list[str] = []
        self.tried: dict[int, list[str]] = {}  # batch -> the replica of each of its sends, in order
        self.acked_by: dict[int, str] = {}  # batch -> the replica that acknowledged it
        self.duplicate_batches: list[int] = []  # acknowledged as already stored
        self.in_flight: tuple[int, str] | None = None  # (batch, replica) of the request under way
        self._sending = threading.Condition()

    def batch_key(self, batch: int) -> str:
        return f"{self.prefix}-batch-{batch}"

    def wait_in_flight(self, url: str, timeout: float) -> int | None:
        """The batch just being sent to `url`, waiting up to `timeout` seconds for one; None if none was."""
        with self._sending:
            found = self._sending.wait_for(lambda: self.in_flight is not None and self.in_flight[1] == url, timeout)
            return self.in_flight[0] if found else None

    def hits(self, batch: int) -> list[dict]:
        """The hits of batch `batch`: the same each time."""
        when = self.when + batch * self.spacing
        return batch_hits(batch, when, prefix=self.prefix, users=self.users, views=self.views)

    def run(self) -> None:
        with httpx.Client(timeout=10, headers={"X-Ingest-Key": self.key}) as http:
            batch = 0
            while not self.stopping.is_set():
                self._send_until_acked(http, batch, self.hits(batch))
                batch += 1
                time.sleep(0.05)

    def _announce(self, sending: tuple[int, str] | None) -> None:
        with self._sending:
            self.in_flight = sending
            self._sending.notify_all()

    def _send_until_acked(self, http: httpx.Client, batch: int, hits: list[dict]) -> None:
        headers = {"Idempotency-Key": self.batch_key(batch)} if self.keyed else {}
        tried = self.tried.setdefault(batch, [])
        give_up = time.monotonic() + 60
        while time.monotonic() < give_up:
            url = self.urls[(batch + len(tried)) % len(self.urls)]
            tried.append(url)
            self._announce((batch, url))
            try:
                answer = http.post(f"{url}/ingest/v1/pageviews", json=hits, headers=headers)
            except httpx.TransportError:  # the API is down, or died while answering: resend
                self.resends += 1
                time.sleep(0.1)
                continue
            finally:
                self._announce(None)
            if answer.status_code >= 500:
                self.resends += 1
                time.sleep(0.1)
                continue
            if answer.status_code != 200 or answer.json()["payload"]["stored"] != len(hits):
                self.errors.append(f"batch {batch}: {answer.status_code} {answer.text[:300]}")
                return
            self.batches += 1
            self.acked_by[batch] = url
            if answer.json()["payload"]["duplicate"]:
                self.duplicates += answer.json()["payload"]["duplicate"]
                self.duplicate_batches.append(batch)
            self.acked.extend((h["user_id_unhashed"], h["session_number"], h["view_number"]) for h in hits)
            return
        self.unacked.append(batch)


def bearer_headers(url: str, client: dict) -> dict[str, str]:
    """The Authorization header of a token for `client` (client_id, client_secret), from the API at `url`."""
    answer = httpx.post(
        f"{url}/v1/oauth/token",
        data={
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
            "grant_type": "client_credentials",
            "scope": "data-export",
        },
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}
