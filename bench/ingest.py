"""Ingest benchmark, run by hand:

    PYTHONPATH=src .venv/bin/python bench/ingest.py [--rows 200000] [--warehouse embedded|ducklake|both] [--http]
        [--server-processes 2] [--connections 32] [--processes 2] [--repeat 3] [--stages]

Measures, on one JSONL file of demo pageview hits, on each warehouse of --warehouse (default embedded): the
embedded one (Parquet files under a local directory) and DuckLake (bench/lake.py: catalog in a fresh PostgreSQL
database on 127.0.0.1:5432, Parquet files on a SeaweedFS S3 server the bench starts; both gone at the end):
  (a) bulk load through `load_files` (pageviews/s), each time into a fresh, empty warehouse (a fresh lake: its own
      catalog schema and data prefix) opened before the timer (opening a lake, its extensions and ATTACH, is slow
      next to a load of this size, and a `dataexport load` command pays it once, before its first batch),
  (b) DuckDB's own read_json -> COPY TO parquet of the same file, and per warehouse the ratio a/b (goal >= 0.5);
      a (each warehouse) and b alternate --repeat times and the ratios are of their medians. The bulk load's
      worker processes (inputs of 32 MB or more) come from a fork server started by the first run (about 0.3 s,
      as one `dataexport load` command pays once),
  (c) HTTP ingest (with --http, alternated --repeat times, judged by the median): the same batches of 1,000
      hits POSTed to a real `dataexport serve --processes N --no-scheduler --no-worker` over `--connections`
      keep-alive connections (goal >= 50,000/s with `--server-processes 2` on 2 cores, DuckLake included),
      with the server's CPU; the client is this
      process (pre-built bodies, a minimal client). The server's processes open their warehouse at start, before
      they answer /healthz; for DuckLake they get DATAEXPORT_WAREHOUSE=ducklake, the lake's DATAEXPORT_LAKE_*
      (data path s3://bench/lake/) and the DATAEXPORT_S3_* endpoint and credentials,
  (d) the ingest path in-process, without HTTP (JSON bytes -> parse -> validate -> warehouse.append), in 1
      process and in `--processes` processes, each appending its share one batch after the other into one fresh
      warehouse: what the server's share costs. Each process opens the warehouse first; the time runs from when
      all have opened (a barrier) to when the last is done,
  (e) with --stages, the CPU cost a hit of each stage of that path (decode, Arrow building, append on each
      warehouse).
With both warehouses, (a), (c) and (d) also print DuckLake pageviews/s / embedded pageviews/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from dataexport.demo.generate import draw_sessions
from dataexport.demo.views import build_views
from dataexport.gc_tuning import settle_heap
from dataexport.ingest.bulkload import as_hit, load_files
from dataexport.ingest.requests import ingest
from dataexport.warehouse.backend import Warehouse, WarehouseSpec, open_warehouse
from dataexport.warehouse.embedded import EmbeddedWarehouse

if TYPE_CHECKING:
    from lake import Lake

NOW = datetime(2026, 3, 18, 15, 45, tzinfo=UTC)
BATCH = 1000
HTTP_GOAL = 50_000  # pageviews/s
BULK_GOAL = 0.5  # bulk load pageviews/s / DuckDB read_json -> parquet pageviews/s, at least
WAREHOUSES = ("embedded", "ducklake")


def make_hits_file(path: Path, rows: int, seed: int = 1) -> int:
    """Write `rows` demo hits as JSONL (ISO timestamps, dynamic vars as {key, value}); returns bytes."""
    per_day = max(1, int(rows / (7 * 2.5)))  # ~3.5 views a session: comfortably more than `rows`
    sessions = draw_sessions(np.random.default_rng([seed, 1]), 7, per_day, NOW)
    table = build_views(
        np.random.default_rng([seed, 2]), sessions, np.arange(len(sessions.start_ms)), int(NOW.timestamp() * 1000)
    )
    table = table.slice(0, rows)
    with open(path, "wb") as f:
        for batch in table.to_batches(20_000):
            for r in batch.to_pylist():
                f.write(orjson.dumps(as_hit({k: v for k, v in r.items() if v is not None})) + b"\n")
    return path.stat().st_size


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: a figure that other load on the machine skews less."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# ---------------------------------------------------------------- the warehouses written to


@dataclass(frozen=True)
class Target:
    """One warehouse kind the bench writes to; `lake` (bench/lake.py's Lake) for DuckLake."""

    name: str  # "embedded" or "ducklake"
    lake: Lake | None = None

    def env(self) -> dict[str, str]:
        """What a dataexport process needs to use this kind (the server's processes)."""
        return self.lake.env() if self.lake is not None else {}

    @contextlib.contextmanager
    def fresh(self, work: Path, tag: str) -> Iterator[Warehouse]:
        """A new, empty warehouse of this kind (`tag`: a lower-case word naming it), removed at the end."""
        if self.lake is None:
            root = Path(tempfile.mkdtemp(prefix=f"wh-{tag}-", dir=work))
            warehouse: Warehouse = EmbeddedWarehouse(root)
            try:
                yield warehouse
            finally:
                warehouse.close()
                shutil.rmtree(root, ignore_errors=True)
            return
        from lake import empty_lake

        lake = self.lake.another(tag)
        warehouse = open_warehouse(lake.settings(work))
        try:
            yield warehouse
        finally:
            warehouse.close()
            empty_lake(lake)


# ---------------------------------------------------------------- (a) and (b)


def run_bulk_load(jsonl: Path, work: Path, target: Target, tag: str) -> tuple[int, float]:
    settle_heap()  # as `dataexport load` does
    with target.fresh(work, tag) as store:  # fresh: a second load would store nothing
        start = time.perf_counter()
        summary = load_files(store, 1, [jsonl])
        elapsed = time.perf_counter() - start
    if summary.rows_rejected:
        raise SystemExit(f"bench data rejected: {summary.reasons.most_common(3)}")
    return summary.rows_stored, elapsed


def run_duckdb(jsonl: Path, work: Path) -> tuple[int, float]:
    out = work / "duckdb.parquet"
    con = duckdb.connect()
    start = time.perf_counter()
    con.sql(f"COPY (SELECT * FROM read_json('{jsonl}', format = 'newline_delimited')) TO '{out}' (FORMAT parquet)")
    elapsed = time.perf_counter() - start
    rows = con.sql(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0]
    con.close()
    return rows, elapsed


def request_bodies(jsonl: Path) -> list[bytes]:
    """The file as request bodies of BATCH hits each (built before timing: a client's work)."""
    lines = jsonl.read_bytes().splitlines()
    return [b"[" + b",".join(lines[i : i + BATCH]) + b"]" for i in range(0, len(lines), BATCH)]


# ---------------------------------------------------------------- (d) in-process

_start_together = None  # a Barrier the forked processes of one run meet at, once their warehouse is open


def _meet_at(barrier) -> None:
    global _start_together
    _start_together = barrier


def _ingest_worker(args: tuple[WarehouseSpec, list[bytes]]) -> tuple[int, float, float]:
    """Open the warehouse, then (with the others) append every body; (stored, start, end) in time.time()."""
    spec, bodies = args
    settle_heap()  # as each `serve` process does
    warehouse = spec.open()
    try:
        if _start_together is not None:
            _start_together.wait()
        start = time.time()
        stored = sum(ingest(warehouse, 1, body).stored for body in bodies)
        return stored, start, time.time()
    finally:
        warehouse.close()


def run_inprocess(bodies: list[bytes], work: Path, processes: int, target: Target) -> tuple[int, float]:
    with target.fresh(work, f"inproc{processes}") as warehouse:
        spec = warehouse.spec
        if processes == 1:
            results = [_ingest_worker((spec, bodies))]
        else:
            context = multiprocessing.get_context("fork")
            shares = [(spec, bodies[i::processes]) for i in range(processes)]
            barrier = context.Barrier(processes)
            with context.Pool(processes, initializer=_meet_at, initargs=(barrier,)) as pool:
                results = pool.map(_ingest_worker, shares, chunksize=1)
    stored = sum(r[0] for r in results)
    return stored, max(r[2] for r in results) - min(r[1] for r in results)


# ---------------------------------------------------------------- (c) HTTP


def run_http(
    bodies: list[bytes], work: Path, server_processes: int, connections: int, target: Target
) -> tuple[int, float, float]:
    """(pageviews stored, seconds, server CPU seconds) of POSTing every body to a fresh server."""
    from load import Connection, ProcSampler, free_port, wait_listening

    data_dir = work / f"served-{target.name}"
    env = {
        **os.environ,
        **target.env(),
        "DATAEXPORT_DATA_DIR": str(data_dir),
        "DATAEXPORT_LOG_LEVEL": "WARNING",
    }
    cli = [sys.executable, "-m", "dataexport.cli"]
    created = subprocess.run(
        [*cli, "projects", "create", "--name", "bench", "--json"], env=env, check=True, capture_output=True, text=True
    )
    key = json.loads(created.stdout)["ingest_key"]
    port = free_port()
    log = (work / f"serve-{target.name}.log").open("wb")
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--processes", str(server_processes), "--no-scheduler", "--no-worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(port, server)
        wait_listening(port, server_processes)
        headers = {"X-Ingest-Key": key, "Content-Type": "application/json"}

        async def drive() -> int:
            queue = list(reversed(bodies))
            stored = 0

            async def client() -> None:
                nonlocal stored
                conn = Connection("127.0.0.1", port)
                while queue:
                    status, answer, _ = await conn.request("POST", "/ingest/v1/pageviews", headers, queue.pop())
                    if status != 200:
                        raise SystemExit(f"ingest answered {status}: {answer[:300]!r}")
                    stored += orjson.loads(answer)["payload"]["stored"]
                conn.close()

            await asyncio.gather(*(client() for _ in range(connections)))
            return stored

        sampler = ProcSampler(server.pid)
        sampler.start()
        start = time.perf_counter()
        stored = asyncio.run(drive())
        elapsed = time.perf_counter() - start
        sampler.stop()
        window = sampler.window(time.time() - elapsed, time.time())
        server_cpu = window[-1][2] - window[0][2] if len(window) > 1 else float("nan")
        return stored, elapsed, server_cpu
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


def wait_healthy(port: int, server: subprocess.Popen) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit("the server did not start")


# ---------------------------------------------------------------- (e) stages


def stage_costs(bodies: list[bytes], work: Path, targets: list[Target], batches: int = 60) -> dict[str, float]:
    """CPU µs a hit of each stage of the ingest path, on `batches` request bodies (best of 3 passes, settled heap,
    one process): where a hit's cost goes, to compare changes to one stage."""
    from dataexport.ingest import hits_msgspec

    settle_heap()
    sample = bodies[:batches]
    hits = len(sample) * BATCH

    def best(fn, items) -> float:
        times = []
        for _ in range(3):
            start = time.process_time()
            for item in items:
                fn(item)
            times.append(time.process_time() - start)
        return min(times) / hits * 1e6

    decoded = [hits_msgspec._DECODER.decode(b) for b in sample]
    tables = [hits_msgspec._table(d) for d in decoded]
    costs = {
        "JSON decode and checks (msgspec)": best(hits_msgspec._DECODER.decode, sample),
        "Arrow columns from the decoded hits": best(hits_msgspec._table, decoded),
    }
    for target in targets:
        with target.fresh(work, "stages") as store:
            # each pass stores the batches anew (fresh ids): retries would be acknowledged without writing
            costs[f"append on {target.name}"] = best(lambda t: store.append(1, t, batch_key=uuid.uuid4().hex), tables)
    return costs


# ---------------------------------------------------------------- report


@dataclass
class Result:
    kind: str  # bulk, duckdb, http, inprocess-N
    warehouse: str | None  # None: DuckDB's own
    name: str
    rows: int
    seconds: float
    cpu: float  # NaN: not known (bulk-load workers are forked by a fork server, outside this process's rusage)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def print_table(console: Console, results: list[Result]) -> None:
    table = Table(title="ingest benchmark")
    for col in ("path", "pageviews", "seconds", "pageviews/s", "CPU s", "pageviews/CPU-s"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for r in results:
        known = r.cpu == r.cpu
        table.add_row(
            r.name,
            f"{r.rows:,}",
            f"{r.seconds:.2f}",
            f"{r.rate:,.0f}",
            f"{r.cpu:.1f}" if known else "n/a",
            f"{r.rows / r.cpu:,.0f}" if known else "n/a",
        )
    console.print(table)


def _median_rate(results: list[Result], kind: str, warehouse: str | None) -> float | None:
    rates = [r.rate for r in results if r.kind == kind and r.warehouse == warehouse]
    return statistics.median(rates) if rates else None


def print_goals(console: Console, results: list[Result], warehouses: list[str], repeat: int) -> None:
    duck = _median_rate(results, "duckdb", None)
    for warehouse in warehouses:
        bulk = _median_rate(results, "bulk", warehouse)
        if bulk is not None and duck is not None:
            ratio = bulk / duck
            console.print(
                f"bulk load {warehouse} / DuckDB = {bulk:,.0f} / {duck:,.0f} pageviews/s (medians of {repeat}) = "
                f"{ratio:.2f}x (goal >= {BULK_GOAL}x) {_verdict(ratio >= BULK_GOAL)}"
            )
    for warehouse in warehouses:
        http = _median_rate(results, "http", warehouse)
        if http is not None:
            runs = ", ".join(f"{r.rate:,.0f}" for r in results if r.kind == "http" and r.warehouse == warehouse)
            console.print(
                f"HTTP ingest {warehouse} = {http:,.0f} pageviews/s (median of {runs}; goal >= {HTTP_GOAL:,}/s) "
                f"{_verdict(http >= HTTP_GOAL)}"
            )
    if len(warehouses) < 2:
        return
    kinds = dict.fromkeys(r.kind for r in results if r.warehouse is not None)
    for kind in kinds:
        lake, embedded = _median_rate(results, kind, "ducklake"), _median_rate(results, kind, "embedded")
        if lake is not None and embedded is not None:
            console.print(
                f"{kind}: DuckLake / embedded = {lake:,.0f} / {embedded:,.0f} pageviews/s = {lake / embedded:.2f}x"
            )


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


# ---------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="alternated runs of bulk load and DuckDB, and of HTTP ingest"
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="processes for the parallel in-process run (0: no in-process runs)"
    )
    parser.add_argument(
        "--warehouse",
        choices=["embedded", "ducklake", "both"],
        default="embedded",
        help="the warehouse written to: embedded, DuckLake, or both in one run",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--stages", action="store_true", help="also print the CPU cost a hit of each ingest stage")
    parser.add_argument("--http", action="store_true", help="also measure HTTP ingest through a real server")
    parser.add_argument("--server-processes", type=int, default=2, help="`serve --processes` for --http")
    parser.add_argument(
        "--connections",
        type=int,
        default=32,
        help="concurrent client connections for --http (the server processes share one listening "
        "socket and the kernel hands each new connection to one of them: with few "
        "connections one process may get most of them)",
    )
    args = parser.parse_args(argv)
    args.warehouses = list(WAREHOUSES) if args.warehouse == "both" else [args.warehouse]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    console = Console(width=120)
    try:
        with contextlib.ExitStack() as running:
            lake = None
            if "ducklake" in args.warehouses:
                from lake import running_lake

                lake = running.enter_context(running_lake(work / "lake", keep=False))
            targets = [Target(w, lake if w == "ducklake" else None) for w in args.warehouses]
            run_all(args, work, targets, console)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run_all(args: argparse.Namespace, work: Path, targets: list[Target], console: Console) -> None:
    jsonl = work / "hits.jsonl"
    size = make_hits_file(jsonl, args.rows)
    n_lines = jsonl.read_bytes().count(b"\n")
    console.print(f"{n_lines:,} hits, {size / 1e6:.1f} MB JSONL in {work}")
    results: list[Result] = []

    def measure(kind: str, warehouse: str | None, name: str, run: Callable[[], tuple[int, float]]) -> None:
        cpu = cpu_seconds()
        rows, secs = run()
        spent = math.nan if kind == "bulk" else cpu_seconds() - cpu
        results.append(Result(kind, warehouse, name, rows, secs, spent))

    bodies = request_bodies(jsonl)
    # Alternated, each --repeat times: this machine's speed drifts between runs, and the ratio of the medians
    # compares them under the same drift.
    for i in range(args.repeat):
        for t in targets:
            tag = f"bulk{i + 1}"
            measure(
                "bulk", t.name, f"bulk load {t.name} #{i + 1}", lambda t=t, tag=tag: run_bulk_load(jsonl, work, t, tag)
            )
        measure("duckdb", None, f"DuckDB read_json -> parquet #{i + 1}", lambda: run_duckdb(jsonl, work))
    if args.http:  # alternated too: one run of each is at the mercy of the machine's drift
        for i in range(args.repeat):
            for t in targets:
                stored, secs, server_cpu = run_http(bodies, work, args.server_processes, args.connections, t)
                name = f"HTTP ingest {t.name}, serve --processes {args.server_processes} (server CPU) #{i + 1}"
                results.append(Result("http", t.name, name, stored, secs, server_cpu))
    for processes in sorted({1, args.processes} if args.processes else set()):
        for t in targets:
            measure(
                f"in-process x{processes}",
                t.name,
                f"ingest in-process {t.name}, {processes} process{'es' if processes > 1 else ''}",
                lambda t=t, n=processes: run_inprocess(bodies, work, n, t),
            )
    if results:
        print_table(console, results)
        print_goals(console, results, args.warehouses, args.repeat)
    if args.stages:
        costs = stage_costs(bodies, work, targets)
        common = costs["JSON decode and checks (msgspec)"] + costs["Arrow columns from the decoded hits"]
        totals = ", ".join(f"on {t.name} {common + costs[f'append on {t.name}']:.2f}" for t in targets)
        console.print(
            "CPU µs a hit, by stage (one process, 60 batches of 1,000, best of 3): "
            + ", ".join(f"{name} {us:.2f}" for name, us in costs.items())
            + f"; total {totals}"
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    console.print(f"load average now: {load} on {os.cpu_count()} CPUs (other work on the machine skews these)")


if __name__ == "__main__":
    sys.exit(main())
