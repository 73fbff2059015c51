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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

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
