"""API load: a real `dataexport serve` (API + in-process worker and scheduler) under N concurrent clients.

    PYTHONPATH=src .venv/bin/python bench/load.py [--clients 50] [--seconds 20] [--projects 5]
        [--server-processes 2] [--database-url postgresql://...] [--big-part-mb 256] [--keep]

The figures of the README use `--server-processes 2` (`serve --processes 2`: one API process per core).

What it does (loopback only; every phase is bounded in time and in request count, then it stops by itself):
1. Setup, in this process: a temp data dir (SQLite metadata unless --database-url), --projects projects with
   --credentials API clients each, 3 days of small demo traffic per project (`warehouse.demo.generate`).
2. Starts `dataexport serve` as a subprocess on a free port, with its worker and scheduler, logging at its
   default level to a file. Gets one token per credential and creates --jobs-per-project once jobs per
   project over HTTP, then waits for their runs to succeed (their parts feed the download mix).
3. Drives it from a SEPARATE process (this file with --drive) that holds N persistent keep-alive connections
   on one asyncio loop with a minimal HTTP/1.1 client (a few tens of microseconds per request, so on 2
   cores the client side disturbs the server far less than httpx would). Client i belongs to project
   i % projects: 50 clients over 5 projects is exactly the 10-in-flight limit per project. Phases:
   - warm-up (not counted);
   - isolated, alternating --rounds times: all N clients on the BARE `GET /healthz`, then all N on the
     authenticated `GET /v1/exports/{jobId}` (--iso-seconds each); their throughput ratio is the goal
     (>= 0.5); alternating rounds spread the noise of a shared machine evenly over both;
   - one large part (--big-part-mb of random bytes, published through the storage backend like a worker
     publishes a part) downloaded alone through its signed URL: MB/s, and the server's RSS before, peak
     during and after (sampled every 50 ms from /proc): streaming must keep memory flat;
   - mixed, --seconds: every client loops over weighted GETs (list jobs, get job, list runs, get run,
     download a part by its signed URL); token requests (--token-rate/s, spread over all credentials, as
     many scripts of many users would be) and new once jobs (--create-rate/s, so exports run
     while the load runs) are taken by whichever client is free when they fall due.
4. Prints per phase and endpoint: requests/s, p50, p99, errors (non-2xx other than 429, transport errors)
   and 429s separately; the server's CPU (cores) and RSS; the client process's CPU; the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-load-secret-" + "x" * 32
GOAL_RATIO = 0.5
GOAL_P99_MS = 100.0
JOB_FIELDS = [
    {"fieldName": "session_id"},
    {"fieldName": "view_number"},
    {"fieldName": "view_time"},
    {"fieldName": "url"},
    {"fieldName": "device_id"},
    {"fieldName": "country_code"},
]
# Weights of the GETs of the mixed phase; token requests and job creations are paced, not weighted.
MIX = {"list_exports": 2, "get_job": 4, "list_runs": 2, "get_run": 2, "download": 2}
ROUTES = {
    "token": "POST /v1/oauth/token",
    "create_job": "POST /v1/exports",
    "list_exports": "GET /v1/exports",
    "get_job": "GET /v1/exports/{jobId}",
    "list_runs": "GET /v1/exports/{jobId}/runs",
    "get_run": "GET /v1/exports/{jobId}/runs/{runId}",
    "download": "GET /files/{key} (signed part)",
    "healthz": "GET /healthz (bare)",
    "big_download": "GET /files/{key} (large part, alone)",
}


# ================================================================ a minimal HTTP/1.1 keep-alive client


class HttpError(Exception):
    pass


class Connection:
    """One persistent HTTP/1.1 connection; Content-Length and chunked bodies; reconnects when closed."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"", keep_body: bool = True
    ) -> tuple[int, bytes, int]:
        """(status, body or b"" when not kept, body length)."""
        if self.writer is None:
            await self._open()
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            return await self._response(keep_body)
        except BaseException:
            self.close()  # a half-read response poisons the connection
            raise

    async def _response(self, keep_body: bool) -> tuple[int, bytes, int]:
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("connection closed by the server")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = None, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        parts: list[bytes] = []
        size = 0
        if chunked:
            while (n := int((await self.reader.readline()).split(b";")[0], 16)) > 0:
                size += await self._read(n, parts, keep_body)
                await self.reader.readexactly(2)
            await self.reader.readline()
        elif length is not None:
            size = await self._read(length, parts, keep_body)
        if close:
            self.close()
        return status, b"".join(parts), size

    async def _read(self, n: int, parts: list[bytes], keep: bool) -> int:
        left = n
        while left:
            block = await self.reader.read(min(left, 1 << 20))
            if not block:
                raise HttpError("connection closed mid-body")
            left -= len(block)
            if keep:
                parts.append(block)
        return n


# ================================================================ the driver process (--drive plan.json)


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    bytes: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    count: int = 0

    def record(self, op: str, started: float, status: int | str, size: int = 0) -> None:
        self.latencies[op].append(time.perf_counter() - started)
        self.statuses[op][str(status)] += 1
        self.bytes[op] += size
        self.count += 1


class Pacer:
    """Fixed-rate slots shared by all clients of the loop: the first free client takes a due slot."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1 / per_second if per_second > 0 else None
        self.next_at = time.perf_counter()

    def take(self) -> bool:
        if self.interval is None or time.perf_counter() < self.next_at:
            return False
        self.next_at += self.interval
        return True


class Driver:
    def __init__(self, plan: dict) -> None:
        import orjson

        self.loads = orjson.loads
        self.plan = plan
        self.host, self.port = plan["host"], plan["port"]
        self.projects = plan["projects"]  # [{project_id, credentials: [{client_id, secret, token}], jobs, runs}]
        self.urls = [urlsplit(u) for u in plan["part_urls"]]
        self.rng = random.Random(7)
        self.token_turn = 0
        self.once_range = plan["once_range"]

    # --- one request of each kind; each returns (status, size) and may learn ids from the answer

    def _auth(self, client: dict) -> dict[str, str]:
        return {"Authorization": "Bearer " + client["credential"]["token"]}

    async def op_healthz(self, conn: Connection, client: dict):
        status, _, size = await conn.request("GET", "/healthz")
        return status, size

    async def op_get_job(self, conn: Connection, client: dict):
        job = self.rng.choice(client["project"]["jobs"])
        status, _, size = await conn.request("GET", f"/v1/exports/{job}", self._auth(client))
        return status, size

    async def op_list_exports(self, conn: Connection, client: dict):
        status, _, size = await conn.request("GET", "/v1/exports?limit=20", self._auth(client))
        return status, size

    async def op_list_runs(self, conn: Connection, client: dict):
        project = client["project"]
        job = self.rng.choice(project["jobs"])
        status, body, size = await conn.request("GET", f"/v1/exports/{job}/runs?limit=5&order=DESC", self._auth(client))
        if status == 200:  # runs of jobs created during the load join the get-run pool once they succeed
            for run in self.loads(body)["payload"]:
                if run["state"] == "SUCCESS" and [job, run["jobRunId"]] not in project["runs"]:
                    project["runs"].append([job, run["jobRunId"]])
        return status, size

    async def op_get_run(self, conn: Connection, client: dict):
        job, run = self.rng.choice(client["project"]["runs"])
        status, _, size = await conn.request("GET", f"/v1/exports/{job}/runs/{run}", self._auth(client))
        return status, size

    async def op_download(self, conn: Connection, client: dict):
        url = self.rng.choice(self.urls)
        status, _, size = await conn.request("GET", f"{url.path}?{url.query}", keep_body=False)
        return status, size

    async def op_token(self, conn: Connection, client: dict):
        # Rotate over every credential of every project, as many users' scripts would.
        creds = [c for p in self.projects for c in p["credentials"]]
        cred = creds[self.token_turn % len(creds)]
        self.token_turn += 1
        body = json.dumps(
            {
                "client_id": cred["client_id"],
                "client_secret": cred["secret"],
                "grant_type": "client_credentials",
                "scope": "data-export",
            }
        ).encode()
        status, answer, size = await conn.request("POST", "/v1/oauth/token", {"Content-Type": "application/json"}, body)
        if status == 200:
            cred["token"] = self.loads(answer)["access_token"]
        return status, size

    async def op_create_job(self, conn: Connection, client: dict):
        body = json.dumps(
            {
                "name": "load",
                "format": "CSV",
                "scope": "views",
                "deviceLabel": "all",
                "frequency": {"value": "once", "dateRange": self.once_range},
                "fields": JOB_FIELDS,
            }
        ).encode()
        headers = {**self._auth(client), "Content-Type": "application/json"}
        status, answer, size = await conn.request("POST", "/v1/exports", headers, body)
        if status == 200:
            client["project"]["jobs"].append(self.loads(answer)["payload"]["jobId"])
        return status, size

    # --- phases

    async def phase(self, ops: dict[str, int], seconds: float, max_requests: int, paced: bool) -> dict:
        stats = Stats()
        names, weights = list(ops), list(ops.values())
        token_pacer = Pacer(self.plan["token_rate"] if paced else 0)
        create_pacer = Pacer(self.plan["create_rate"] if paced else 0)
        n = self.plan["clients"]
        clients = [{"project": self.projects[i % len(self.projects)]} for i in range(n)]
        for i, c in enumerate(clients):
            creds = c["project"]["credentials"]
            c["credential"] = creds[(i // len(self.projects)) % len(creds)]
        cpu0, started = time.process_time(), time.perf_counter()
        deadline = started + seconds

        async def client_loop(client: dict) -> None:
            conn = Connection(self.host, self.port)
            try:
                while time.perf_counter() < deadline and stats.count < max_requests:
                    if token_pacer.take():
                        op = "token"
                    elif create_pacer.take():
                        op = "create_job"
                    else:
                        op = self.rng.choices(names, weights)[0]
                    t0 = time.perf_counter()
                    try:
                        status, size = await asyncio.wait_for(getattr(self, f"op_{op}")(conn, client), 30)
                    except (TimeoutError, OSError, HttpError, asyncio.IncompleteReadError) as exc:
                        stats.record(op, t0, f"transport:{type(exc).__name__}")
                        conn.close()
                        continue
                    stats.record(op, t0, status, size)
            finally:
                conn.close()

        await asyncio.gather(*(client_loop(c) for c in clients))
        elapsed = time.perf_counter() - started
        return {
            "wall": [time.time() - elapsed, time.time()],
            "seconds": elapsed,
            "client_cpu": (time.process_time() - cpu0) / elapsed,
            "ops": {
                op: {"latencies": lat, "statuses": dict(stats.statuses[op]), "bytes": stats.bytes[op]}
                for op, lat in stats.latencies.items()
            },
        }

    async def big_download(self) -> dict:
        url = urlsplit(self.plan["big_url"])
        conn = Connection(self.host, self.port)
        await asyncio.sleep(1.0)  # lets the orchestrator sample the server's RSS at rest first
        wall0, t0 = time.time(), time.perf_counter()
        status, _, size = await conn.request("GET", f"{url.path}?{url.query}", keep_body=False)
        seconds = time.perf_counter() - t0
        conn.close()
        await asyncio.sleep(1.0)
        return {"wall": [wall0, wall0 + seconds], "seconds": seconds, "status": status, "bytes": size}

    async def run(self) -> dict:
        p = self.plan
        cap = p["max_requests"]
        out: dict = {"iso": []}
        await self.phase(MIX, p["warmup_seconds"], cap, paced=False)
        for _ in range(p["rounds"]):
            out["iso"].append(
                {
                    "healthz": await self.phase({"healthz": 1}, p["iso_seconds"], cap, paced=False),
                    "get_job": await self.phase({"get_job": 1}, p["iso_seconds"], cap, paced=False),
                }
            )
        out["big"] = await self.big_download()
        out["mixed"] = await self.phase(MIX, p["seconds"], cap, paced=True)
        return out


def drive(plan_path: Path) -> None:
    plan = json.loads(plan_path.read_text())
    result = asyncio.run(Driver(plan).run())
    Path(plan["result_path"]).write_text(json.dumps(result))


# ================================================================ setup and the server (orchestrator)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(args, data_dir: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DATAEXPORT_DATA_DIR": str(data_dir),
        "DATAEXPORT_JWT_SECRET": JWT_SECRET,
        "PYTHONPATH": str(args.server_src),
    }
    if args.database_url:
        env["DATAEXPORT_DATABASE_URL"] = args.database_url
    return env


def seed(args, data_dir: Path) -> list[dict]:
    """Projects with credentials and demo traffic; returns [{project_id, credentials: [{client_id, secret}]}]."""
    from dataexport import admin
    from dataexport.config import Settings
    from dataexport.demo.generate import generate
    from dataexport.metadata.db import make_engine, make_sessionmaker, migrate, transaction
    from dataexport.warehouse.embedded import EmbeddedWarehouse

    settings = Settings(data_dir=data_dir, jwt_secret=JWT_SECRET, database_url=args.database_url)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    now = datetime.now(UTC)
    projects = []
    with transaction(make_sessionmaker(engine)) as session:
        for i in range(args.projects):
            project = admin.create_project(session, name=f"load {i}", now=now).project
            creds = [admin.create_client(session, now=now, project_id=project.id) for _ in range(args.credentials)]
            projects.append(
                {
                    "project_id": project.id,
                    "credentials": [{"client_id": c.client.client_id, "secret": c.secret} for c in creds],
                }
            )
    engine.dispose()
    with EmbeddedWarehouse(settings.resolved_warehouse_dir) as store:
        for i, p in enumerate(projects):
            generate(store, p["project_id"], days=3, sessions_per_day=args.sessions_per_day, seed=100 + i, now=now)
    return projects


def publish_big_part(args, data_dir: Path, base: str) -> str:
    """A --big-part-mb file published through the storage backend (as a worker publishes a part); its signed URL."""
    from dataexport.config import Settings
    from dataexport.storage import build_storage

    settings = Settings(data_dir=data_dir, jwt_secret=JWT_SECRET, database_url=args.database_url)
    storage = build_storage(settings, secret=JWT_SECRET)
    key = "bench/load/big-part.csv.gz"
    with tempfile.NamedTemporaryFile(dir=data_dir) as tmp:
        block = os.urandom(1 << 20)  # incompressible, like a gzip part; repeated, the content does not matter
        for _ in range(args.big_part_mb):
            tmp.write(block)
        tmp.flush()
        storage.publish(Path(tmp.name), key)
    return storage.download_url(key, expires_at=datetime.now(UTC) + timedelta(hours=1), base_url=base)


class ProcSampler:
    """Samples RSS and CPU seconds of a process and its descendants (the processes of `serve --processes N`)
    from /proc every `every` seconds, with wall-clock stamps. CPU of descendants that exited is not counted."""

    def __init__(self, pid: int, every: float = 0.05) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float, float]] = []  # (time, rss MB, cpu seconds)
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self) -> list[int]:
        pids, i = [self.pid], 0
        while i < len(pids):
            with contextlib.suppress(OSError):
                pids += [int(c) for c in Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text().split()]
            i += 1
        return pids

    def sample(self) -> tuple[float, float, float] | None:
        rss = cpu = 0.0
        for pid in self._tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                if pid == self.pid:
                    return None
                continue
            rss += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0) / 1024
            cpu += (int(stat[11]) + int(stat[12])) / self._tick
        return time.time(), rss, cpu

    def _run(self) -> None:
        while not self._stop.is_set():
            if (s := self.sample()) is not None:
                self.samples.append(s)
            self._stop.wait(self.every)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def window(self, start: float, end: float) -> list[tuple[float, float, float]]:
        return [s for s in self.samples if start <= s[0] <= end]

    def cores(self, start: float, end: float) -> float:
        w = self.window(start, end)
        return (w[-1][2] - w[0][2]) / (w[-1][0] - w[0][0]) if len(w) > 1 else float("nan")

    def rss_at(self, moment: float) -> float:
        return min(self.samples, key=lambda s: abs(s[0] - moment))[1]


def listening_sockets(port: int) -> int:
    """Sockets listening on `port` (/proc/net/tcp, state 0A): one per process of `serve --processes N`."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for r in rows if r.split()[1].endswith(f":{port:04X}") and r.split()[3] == "0A")


def wait_listening(port: int, processes: int, timeout: float = 60) -> None:
    """Until every API process listens: the first to answer /healthz would otherwise get every connection the
    load opens at once, and the others none."""
    deadline = time.monotonic() + timeout
    while listening_sockets(port) < processes:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {listening_sockets(port)} of {processes} server processes listen on {port}")
        time.sleep(0.1)


def start_server(args, data_dir: Path, port: int) -> tuple[subprocess.Popen, object]:
    log = (data_dir / "serve.log").open("wb")  # a file, not an unread pipe: a chatty server must never block
    command = [
        sys.executable,
        "-m",
        "dataexport.cli",
        "serve",
        "--port",
        str(port),
        "--processes",
        str(args.server_processes),
    ]
    proc = subprocess.Popen(command, env=server_env(args, data_dir), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                wait_listening(port, args.server_processes)
                return proc, log
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("server did not start:\n" + (data_dir / "serve.log").read_text(errors="replace")[-3000:])
        time.sleep(0.2)


def once_range() -> dict[str, str]:
    """The day before yesterday (UTC): inside the demo data, and closed long enough ago to run at once."""
    day = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"from": day.strftime("%Y-%m-%dT00:00:00.000Z"), "to": day.strftime("%Y-%m-%dT23:59:59.999Z")}


def prepare_jobs(base: str, projects: list[dict], jobs_per_project: int, timeout: float = 120) -> list[str]:
    """Tokens for every credential, once jobs per project, then wait for their runs; returns part URLs."""
    import httpx

    with httpx.Client(base_url=base, timeout=30) as http:
        for p in projects:
            for cred in p["credentials"]:
                answer = http.post(
                    "/v1/oauth/token",
                    json={
                        "client_id": cred["client_id"],
                        "client_secret": cred["secret"],
                        "grant_type": "client_credentials",
                        "scope": "data-export",
                    },
                )
                answer.raise_for_status()
                cred["token"] = answer.json()["access_token"]
            auth = {"Authorization": "Bearer " + p["credentials"][0]["token"]}
            p["jobs"], p["runs"] = [], []
            for _ in range(jobs_per_project):
                body = {
                    "name": "load seed",
                    "format": "CSV",
                    "scope": "views",
                    "deviceLabel": "all",
                    "frequency": {"value": "once", "dateRange": once_range()},
                    "fields": JOB_FIELDS,
                }
                answer = http.post("/v1/exports", json=body, headers=auth)
                answer.raise_for_status()
                p["jobs"].append(answer.json()["payload"]["jobId"])
        urls: list[str] = []
        deadline = time.monotonic() + timeout
        for p in projects:
            auth = {"Authorization": "Bearer " + p["credentials"][0]["token"]}
            for job in p["jobs"]:
                while True:
                    runs = http.get(f"/v1/exports/{job}/runs", headers=auth).json()["payload"]
                    if runs and runs[0]["state"] == "SUCCESS":
                        break
                    if runs and runs[0]["state"] == "FAILURE" or time.monotonic() > deadline:
                        raise SystemExit(f"the run of job {job} did not succeed: {runs}")
                    time.sleep(0.3)
                run_id = runs[0]["jobRunId"]
                p["runs"].append([job, run_id])
                detail = http.get(f"/v1/exports/{job}/runs/{run_id}", headers=auth).json()["payload"]
                urls += [f["url"] for f in detail["files"]]
    return urls


# ================================================================ report


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summarize(ops: list[dict], seconds: float) -> dict:
    """Merge per-op results of one or more phases; throughput over their summed duration."""
    lat = sorted(x for o in ops for x in o["latencies"])
    statuses: dict[str, int] = defaultdict(int)
    for o in ops:
        for k, v in o["statuses"].items():
            statuses[k] += v
    ok = sum(v for k, v in statuses.items() if k.isdigit() and 200 <= int(k) < 300)
    limited = statuses.get("429", 0)
    return {
        "n": len(lat),
        "rps": ok / seconds,
        "p50": percentile(lat, 0.50) * 1000,
        "p99": percentile(lat, 0.99) * 1000,
        "errors": len(lat) - ok - limited,
        "r429": limited,
        "bytes": sum(o["bytes"] for o in ops),
        "codes": {k: v for k, v in statuses.items() if not (k.isdigit() and 200 <= int(k) < 300)},
    }


def row(name: str, s: dict) -> str:
    codes = " ".join(f"{k}x{v}" for k, v in sorted(s["codes"].items()))
    return (
        f"  {name:<42} {s['n']:>7} {s['rps']:>9.1f} {s['p50']:>8.1f} {s['p99']:>8.1f} "
        f"{s['errors']:>6} {s['r429']:>5}  {codes}"
    )


HEADER = f"  {'endpoint':<42} {'requests':>7} {'ok req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} {'429':>5}"


def report(args, result: dict, sampler: ProcSampler, load_before: tuple, rss_start: float) -> int:
    iso = result["iso"]
    print(
        f"\nserver: dataexport serve --processes {args.server_processes} (each: API + worker + scheduler), "
        f"{'PostgreSQL' if args.database_url else 'SQLite'} metadata; clients {args.clients} over "
        f"{args.projects} projects; server code {args.server_src}\nload average before "
        f"{load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(f"\nisolated, {args.rounds} alternating rounds x {args.iso_seconds:g} s each, {args.clients} clients:")
    print(HEADER)
    sums = {}
    for op in ("healthz", "get_job"):
        phases = [r[op] for r in iso]
        seconds = sum(ph["seconds"] for ph in phases)
        sums[op] = summarize([ph["ops"][op] for ph in phases], seconds)
        print(row(ROUTES[op], sums[op]))
        cores = sum(sampler.cores(*ph["wall"]) * ph["seconds"] for ph in phases) / seconds
        per_round = ", ".join(f"{summarize([ph['ops'][op]], ph['seconds'])['rps']:.0f}" for ph in phases)
        # CPU per request hardly depends on how much CPU other processes leave the server; req/s does.
        print(
            f"    server CPU {cores:.2f} cores = {cores * seconds / sums[op]['n'] * 1000:.2f} ms per request; "
            f"client CPU {sum(ph['client_cpu'] for ph in phases) / len(phases):.2f} cores; "
            f"per round ok req/s: {per_round}"
        )
    ratio = sums["get_job"]["rps"] / sums["healthz"]["rps"]

    big = result["big"]
    start, end = big["wall"]
    during = sampler.window(start, end)
    peak = max((s[1] for s in during), default=float("nan"))
    print(
        f"\nlarge part download, alone: {big['bytes'] / 1e6:.0f} MB in {big['seconds']:.2f} s = "
        f"{big['bytes'] / 1e6 / big['seconds']:.0f} MB/s (status {big['status']}); server RSS before "
        f"{sampler.rss_at(start - 0.5):.0f} MB, peak during {peak:.0f} MB, after {sampler.rss_at(end + 0.8):.0f} MB"
    )

    mixed = result["mixed"]
    print(
        f"\nmixed, {mixed['seconds']:.1f} s, {args.clients} clients, tokens {args.token_rate:g}/s, new once jobs "
        f"{args.create_rate:g}/s (runs execute in the server meanwhile):"
    )
    print(HEADER)
    total = {"latencies": [], "statuses": defaultdict(int), "bytes": 0}
    for op in ("token", "create_job", *MIX):
        if op in mixed["ops"]:
            o = mixed["ops"][op]
            print(row(ROUTES[op], summarize([o], mixed["seconds"])))
            total["latencies"] += o["latencies"]
            total["bytes"] += o["bytes"]
            for k, v in o["statuses"].items():
                total["statuses"][k] += v
    all_mixed = summarize([total], mixed["seconds"])
    print(row("all", all_mixed))
    rss_mixed = [s[1] for s in sampler.window(*mixed["wall"])]
    mixed_cores = sampler.cores(*mixed["wall"])
    cpu_ms = mixed_cores * mixed["seconds"] / max(1, all_mixed["n"]) * 1000
    print(
        f"    server CPU {mixed_cores:.2f} cores = {cpu_ms:.2f} ms per request, "
        f"client CPU {mixed['client_cpu']:.2f} cores; "
        f"server RSS at start {rss_start:.0f} MB, during mixed {min(rss_mixed):.0f}-{max(rss_mixed):.0f} MB; "
        f"downloads {mixed['ops'].get('download', {}).get('bytes', 0) / 1e6 / mixed['seconds']:.1f} MB/s"
    )

    errors = sum(summarize([ph[op]["ops"][op]], 1)["errors"] for ph in iso for op in ("healthz", "get_job"))
    errors += all_mixed["errors"]
    p99 = max(sums["get_job"]["p99"], all_mixed["p99"])
    print("\ngoals:")
    print(
        f"  authenticated GET /v1/exports/{{jobId}} / bare GET /healthz throughput = {ratio:.2f} "
        f"(goal >= {GOAL_RATIO}) {'OK' if ratio >= GOAL_RATIO else 'MISSED'}"
    )
    print(
        f"  p99 at {args.clients} clients: isolated get job {sums['get_job']['p99']:.1f} ms, mixed all "
        f"{all_mixed['p99']:.1f} ms (goal < {GOAL_P99_MS:g}) {'OK' if p99 < GOAL_P99_MS else 'MISSED'}"
    )
    print(
        f"  errors (non-2xx other than 429, transport): {errors} (goal 0) {'OK' if errors == 0 else 'MISSED'}; "
        f"429s: isolated {sums['get_job']['r429']}, mixed {all_mixed['r429']}"
    )
    return 0 if errors == 0 else 1


# ================================================================ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20, help="duration of the mixed phase")
    parser.add_argument("--iso-seconds", type=float, default=5, help="duration of each isolated phase")
    parser.add_argument("--rounds", type=int, default=2, help="alternating healthz / get-job rounds")
    parser.add_argument(
        "--server-processes", type=int, default=1, help="API processes of the server (`serve --processes N`)"
    )
    parser.add_argument("--warmup-seconds", type=float, default=2)
    parser.add_argument("--max-requests", type=int, default=500_000, help="cap of requests per phase")
    parser.add_argument("--projects", type=int, default=5)
    parser.add_argument("--credentials", type=int, default=2, help="API clients (credentials) per project")
    parser.add_argument("--sessions-per-day", type=int, default=300, help="demo sessions per day and project")
    parser.add_argument("--jobs-per-project", type=int, default=3)
    parser.add_argument("--token-rate", type=float, default=2, help="token requests per second (mixed phase)")
    parser.add_argument("--create-rate", type=float, default=2, help="new once jobs per second (mixed phase)")
    parser.add_argument("--big-part-mb", type=int, default=256)
    parser.add_argument("--database-url", default=None, help="metadata DB (e.g. postgresql://...); default SQLite")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a new temp dir, removed at the end")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (serve.log is in it)")
    parser.add_argument(
        "--server-src",
        type=Path,
        default=ROOT / "src",
        help="source tree the server runs from (A/B: a copy of src with a baseline change)",
    )
    parser.add_argument("--drive", type=Path, default=None, help=argparse.SUPPRESS)  # the load-generator process
    args = parser.parse_args()
    if args.drive:
        drive(args.drive)
        return 0
    if args.clients < 1 or args.projects < 1 or args.credentials < 1 or args.seconds <= 0:
        parser.error("--clients, --projects, --credentials and --seconds must be positive")

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="dataexport-load-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = log = sampler = None
    try:
        t0 = time.perf_counter()
        projects = seed(args, data_dir)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc, log = start_server(args, data_dir, port)
        sampler = ProcSampler(proc.pid)
        sampler.start()
        part_urls = prepare_jobs(base, projects, args.jobs_per_project)
        big_url = publish_big_part(args, data_dir, base)
        rss_start = sampler.sample()[1]
        print(
            f"setup {time.perf_counter() - t0:.1f} s: {len(projects)} projects, {len(part_urls)} parts, "
            f"server pid {proc.pid} on {base}, data dir {data_dir}"
        )
        plan = {
            "host": "127.0.0.1",
            "port": port,
            "projects": projects,
            "part_urls": part_urls,
            "big_url": big_url,
            "clients": args.clients,
            "seconds": args.seconds,
            "iso_seconds": args.iso_seconds,
            "rounds": args.rounds,
            "warmup_seconds": args.warmup_seconds,
            "max_requests": args.max_requests,
            "token_rate": args.token_rate,
            "create_rate": args.create_rate,
            "once_range": once_range(),
            "result_path": str(data_dir / "load-result.json"),
        }
        plan_path = data_dir / "load-plan.json"
        plan_path.write_text(json.dumps(plan))
        load_before = os.getloadavg()
        budget = args.warmup_seconds + args.rounds * 2 * args.iso_seconds + args.seconds + 120
        subprocess.run([sys.executable, __file__, "--drive", str(plan_path)], check=True, timeout=budget)
        if proc.poll() is not None:
            raise SystemExit(f"the server exited during the load ({proc.returncode})")
        return report(args, json.loads(Path(plan["result_path"]).read_text()), sampler, load_before, rss_start)
    finally:
        if sampler is not None:
            sampler.stop()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if log is not None:
            log.close()
        if not args.keep and args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
