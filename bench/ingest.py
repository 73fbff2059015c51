"""Ingest benchmark, run by hand: `PYTHONPATH=src .venv/bin/python bench/ingest.py [--rows 200000]`.

Measures, on one JSONL file of demo pageview hits:
  (a) bulk load through `load_files` (pageviews/s),
  (b) DuckDB's own read_json -> COPY TO parquet of the same file, and the ratio a/b (goal >= 0.5); a and b
      alternate --repeat times and the ratio is of their medians. The bulk load's worker processes come from a
      fork server started by the first run (about 0.3 s, as one `dataexport load` command pays once),
  (c) HTTP ingest (with --http): the same batches of 1,000 hits POSTed to a real `dataexport serve
      --processes N --no-scheduler --no-worker` over `--connections` keep-alive connections (goal >= 50,000/s
      on 2 cores), with the server's CPU; the client is this process (pre-built bodies, a minimal client);
  (d) the ingest path in-process, without HTTP (JSON bytes -> parse -> validate -> store.append), in 1 process
      and in `--processes` processes: what the server's share costs,
  (e) with --stages, the CPU cost a hit of each stage of that path (decode, Arrow building, store.append).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from dataexport.gc_tuning import settle_heap
from dataexport.warehouse.bulkload import as_hit, load_files
from dataexport.warehouse.demo import draw_sessions
from dataexport.warehouse.demo_views import build_views
from dataexport.warehouse.embedded import EmbeddedWarehouse
from dataexport.warehouse.ingest import ingest

NOW = datetime(2026, 3, 18, 15, 45, tzinfo=UTC)
BATCH = 1000


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


def run_bulk_load(jsonl: Path, work: Path) -> tuple[int, float]:
    settle_heap()  # as `dataexport load` does
    root = Path(tempfile.mkdtemp(prefix="wh-bulk-", dir=work))  # a fresh store: a second load would store nothing
    start = time.perf_counter()
    with EmbeddedWarehouse(root) as store:
        summary = load_files(store, 1, [jsonl])
    elapsed = time.perf_counter() - start
    shutil.rmtree(root)
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
    return rows, elapsed


def request_bodies(jsonl: Path) -> list[bytes]:
    """The file as request bodies of BATCH hits each (built before timing: a client's work)."""
    lines = jsonl.read_bytes().splitlines()
    return [b"[" + b",".join(lines[i : i + BATCH]) + b"]" for i in range(0, len(lines), BATCH)]


def _ingest_worker(args: tuple[str, list[bytes]]) -> int:
    root, bodies = args
    settle_heap()  # as each `serve` process does
    stored = 0
    with EmbeddedWarehouse(Path(root)) as store:
        for body in bodies:
            stored += ingest(store, 1, body).stored
    return stored


def run_inprocess(bodies: list[bytes], work: Path, processes: int) -> tuple[int, float]:
    root = work / f"wh-ingest-{processes}"
    EmbeddedWarehouse(root).close()
    shares = [bodies[i::processes] for i in range(processes)]
    start = time.perf_counter()
    if processes == 1:
        stored = _ingest_worker((str(root), bodies))
    else:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            stored = sum(pool.map(_ingest_worker, [(str(root), s) for s in shares]))
    return stored, time.perf_counter() - start


def run_http(bodies: list[bytes], work: Path, server_processes: int, connections: int) -> tuple[int, float, float]:
    """(pageviews stored, seconds, server CPU seconds) of POSTing every body to a fresh server."""
    from load import Connection, ProcSampler, free_port, wait_listening

    data_dir = work / "served"
    env = {**os.environ, "DATAEXPORT_DATA_DIR": str(data_dir), "DATAEXPORT_LOG_LEVEL": "WARNING"}
    cli = [sys.executable, "-m", "dataexport.cli"]
    created = subprocess.run(
        [*cli, "projects", "create", "--name", "bench", "--json"], env=env, check=True, capture_output=True, text=True
    )
    key = json.loads(created.stdout)["ingest_key"]
    port = free_port()
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--processes", str(server_processes), "--no-scheduler", "--no-worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(port, server)
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


def _wait_healthy(port: int, server: subprocess.Popen) -> None:
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


def stage_costs(bodies: list[bytes], work: Path, batches: int = 60) -> dict[str, float]:
    """CPU µs a hit of each stage of the ingest path, on `batches` request bodies (best of 3 passes, settled heap,
    one process): where a hit's cost goes, to compare changes to one stage."""
    from dataexport.warehouse import hits_msgspec

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
    root = work / "wh-stages"
    with EmbeddedWarehouse(root) as store:
        costs = {
            "JSON decode and checks (msgspec)": best(hits_msgspec._DECODER.decode, sample),
            "Arrow columns from the decoded hits": best(hits_msgspec._table, decoded),
            # each pass stores the batches anew (fresh ids): retries would be acknowledged without writing
            "store.append (Parquet, fsync, commit)": best(
                lambda t: store.append(1, t, batch_key=uuid.uuid4().hex), tables
            ),
        }
    shutil.rmtree(root)
    return costs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="alternated runs of bulk load and DuckDB")
    parser.add_argument(
        "--processes", type=int, default=2, help="processes for the parallel in-process run (0: no in-process runs)"
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
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    console = Console(width=120)
    try:
        jsonl = work / "hits.jsonl"
        size = make_hits_file(jsonl, args.rows)
        n_lines = jsonl.read_bytes().count(b"\n")
        console.print(f"{n_lines:,} hits, {size / 1e6:.1f} MB JSONL in {work}")
        results = []

        def measure(name: str, run) -> None:
            cpu = cpu_seconds()
            rows, secs = run()
            results.append((name, rows, secs, cpu_seconds() - cpu))

        bodies = request_bodies(jsonl)
        # Alternated, each --repeat times: this machine's speed drifts between runs, and the ratio of the medians
        # compares the two under the same drift.
        for i in range(args.repeat):
            measure(f"bulk load (load_files) #{i + 1}", lambda: run_bulk_load(jsonl, work))
            measure(f"DuckDB read_json -> parquet #{i + 1}", lambda: run_duckdb(jsonl, work))
        if args.http:
            stored, secs, server_cpu = run_http(bodies, work, args.server_processes, args.connections)
            name = f"HTTP ingest, 1,000/request, {args.server_processes} server processes (server CPU)"
            results.append((name, stored, secs, server_cpu))
        if args.processes:
            measure("ingest in-process, 1 process", lambda: run_inprocess(bodies, work, 1))
        if args.processes > 1:
            measure(
                f"ingest in-process, {args.processes} processes", lambda: run_inprocess(bodies, work, args.processes)
            )
        table = Table(title="ingest benchmark")
        for col in ("path", "pageviews", "seconds", "pageviews/s", "CPU s", "pageviews/CPU-s"):
            table.add_column(col, justify="left" if col == "path" else "right")
        for name, rows, secs, cpu in results:
            if name.startswith("bulk"):  # its workers are forked by a fork server: not in this process's rusage
                table.add_row(name, f"{rows:,}", f"{secs:.2f}", f"{rows / secs:,.0f}", "n/a", "n/a")
                continue
            table.add_row(name, f"{rows:,}", f"{secs:.2f}", f"{rows / secs:,.0f}", f"{cpu:.1f}", f"{rows / cpu:,.0f}")
        if results:
            console.print(table)
        if args.repeat:
            bulk = statistics.median(r[1] / r[2] for r in results if r[0].startswith("bulk"))
            duck = statistics.median(r[1] / r[2] for r in results if r[0].startswith("DuckDB"))
            console.print(
                f"bulk load / DuckDB = {bulk:,.0f} / {duck:,.0f} pageviews/s (medians of {args.repeat}) = "
                f"{bulk / duck:.2f}x (goal >= 0.5x)"
            )
        for name, rows, secs, _ in results:
            if name.startswith("HTTP"):
                console.print(f"HTTP ingest = {rows / secs:,.0f} pageviews/s (goal >= 50,000/s)")
        if args.stages:
            costs = stage_costs(bodies, work)
            console.print(
                "CPU µs a hit, by stage (one process, 60 batches of 1,000, best of 3): "
                + ", ".join(f"{name} {us:.2f}" for name, us in costs.items())
                + f"; total {sum(costs.values()):.2f}"
            )
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        console.print(f"load average now: {load} on {os.cpu_count()} CPUs (other work on the machine skews these)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
