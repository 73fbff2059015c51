"""Collection benchmark, run by hand:

    PYTHONPATH=src .venv/bin/python bench/collect.py [--beacons 20000] [--connections 32] [--server-processes 2]

What a busy site's visitors cost the server: every request is one pageview, as the tag sends them (a view a
beacon, when it ends), POSTed by `--connections` keep-alive clients to a real `dataexport serve --processes N
--no-scheduler --no-worker` on the embedded warehouse. In the same run, alternated:
  (a) beacons: `POST /collect/v1/<tagId>` with an allowed Origin and one of 20 real user agents, each view carrying
      what the tag collects (sizes, timings, scroll, durations, 2 custom vars, 2 dynamic vars, an error on one view
      in ten, a transaction on one in fifty),
  (b) the same views as ingest hits, one a request: `POST /ingest/v1/pageviews` (the baseline: same request count,
      same stored rows, without the beacon decoding, user agent, GeoIP and origin work),
  (c) the same views as ingest batches of 1,000 (what a server-side tracker costs per pageview),
  (d) as many `GET /healthz`: what any request costs this server, the floor of (a) and (b).
Prints pageviews/s, server CPU µs a pageview (the server's processes, sampled from /proc), and (a)/(b). The
collection rate limit is raised for the run: every client here is 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from ingest import wait_healthy
from load import Connection, ProcSampler, free_port, wait_listening
from rich.console import Console
from rich.table import Table

from dataexport.collect.beacon import Client, decode_beacon, hits_of
from dataexport.collect.useragent import describe

ORIGIN = "https://shop.example"
AGENTS = [
    f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
    for v in range(120, 130)
] + [
    f"Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    f"Version/17.{v} Mobile/15E148 Safari/604.1"
    for v in range(10)
]


def beacon(i: int, now_ms: int) -> dict:
    """The i-th pageview: 5 views a session, 3 sessions a visitor."""
    user, rest = divmod(i, 15)
    session, view = divmod(rest, 5)
    start = now_ms - 3_600_000 + session * 600_000
    v: dict = {
        "view_number": view + 1,
        "view_time": start + view * 30_000,
        "url": f"{ORIGIN}/product/SKU-{i % 400}?utm_source=news&ref={i % 7}",
        "title": f"Product {i % 400} - Demo shop",
        "referrer": "https://search.example/?q=mug",
        "language": "fr-FR",
        "screen": [1920, 1080],
        "window": [1280, 720],
        "document": [1280, 4200],
        "timings": {"dom_interactive": 640 + i % 300, "start_render": 420, "fully_loaded": 1900 + i % 900},
        "duration_ms": 28_000,
        "interaction_ms": 9_500,
        "scroll_rate": 62.5,
        "rage_click": i % 40 == 0,
        "custom_vars": [
            {"index": 1, "name": "visitor_type", "value": "returning", "scope": "session"},
            {"index": 2, "name": "product_category", "value": "kitchen", "scope": "page"},
        ],
        "dynamic_vars": [{"key": "product_price", "value": 1250}, {"key": "product_color", "value": "white"}],
    }
    if i % 10 == 0:
        v["errors"] = [{"message": "TypeError: x is undefined", "time": v["view_time"] + 900, "filename":
                        f"{ORIGIN}/static/shop.js", "line": 12, "col": 7, "type": "TypeError"}]  # fmt: skip
    if i % 50 == 0:
        v["transactions"] = [{"id": f"ORD-{i}", "revenue": "32.40", "currency": "EUR", "time": v["view_time"] + 5_000,
                              "items": [{"sku": "SKU-1", "price": "12.50", "quantity": 1},
                                        {"sku": "SKU-2", "price": "19.90", "quantity": 1}]}]  # fmt: skip
    return {
        "v": 1,
        "batch": f"bench-{i:09d}",
        "sent_at": now_ms,
        "user": f"00000000-0000-4000-8000-{user:012d}",
        "session_number": session + 1,
        "session_start": start,
        "views": [v],
    }


def serve(work: Path, name: str, server_processes: int) -> tuple[subprocess.Popen, int, dict]:
    env = {
        **os.environ,
        "DATAEXPORT_DATA_DIR": str(work / name),
        "DATAEXPORT_LOG_LEVEL": "WARNING",
        "DATAEXPORT_COLLECT_BEACONS_PER_MINUTE": "100000000",
        "DATAEXPORT_COLLECT_BURST": "1000000",
    }
    cli = [sys.executable, "-m", "dataexport.cli"]
    created = json.loads(
        subprocess.run(
            [*cli, "projects", "create", "--name", "bench", "--json"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout  # fmt: skip
    )
    subprocess.run([*cli, "projects", "allow-origin", "--project", str(created["project_id"]), "--origin", ORIGIN],
                   env=env, check=True, capture_output=True)  # fmt: skip
    port = free_port()
    log = (work / f"{name}.log").open("wb")
    server = subprocess.Popen(
        [*cli, "serve", "--port", str(port), "--processes", str(server_processes), "--no-scheduler", "--no-worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_healthy(port, server)
    wait_listening(port, server_processes)
    return server, port, created


def drive(port: int, requests: list[tuple[str, dict, bytes]], connections: int) -> tuple[int, float, list[int]]:
    """(pageviews stored, seconds, statuses other than 200)."""

    async def run() -> tuple[int, list[int]]:
        queue = list(reversed(requests))
        stored, bad = 0, []

        async def client() -> None:
            nonlocal stored
            conn = Connection("127.0.0.1", port)
            while queue:
                path, headers, body = queue.pop()
                method = "POST" if body else "GET"
                status, answer, _ = await conn.request(method, path, headers, body)
                if status == 200:
                    stored += orjson.loads(answer)["payload"]["stored"] if body else 1
                else:
                    bad.append(status)
            conn.close()

        await asyncio.gather(*(client() for _ in range(connections)))
        return stored, bad

    start = time.perf_counter()
    stored, bad = asyncio.run(run())
    return stored, time.perf_counter() - start, bad


def measure(work: Path, name: str, args, build) -> tuple[int, float, float, list[int]]:
    server, port, project = serve(work, name, args.server_processes)
    try:
        requests = build(project)
        sampler = ProcSampler(server.pid)
        sampler.start()
        stored, secs, bad = drive(port, requests, args.connections)
        sampler.stop()
        window = sampler.window(time.time() - secs, time.time())
        cpu = window[-1][2] - window[0][2] if len(window) > 1 else float("nan")
        return stored, secs, cpu, bad
    finally:
        server.terminate()
        server.wait(timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beacons", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--server-processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    console = Console()
    now_ms = int(time.time() * 1000)
    beacons = [beacon(i, now_ms) for i in range(args.beacons)]
    # The baseline's hits are exactly what the server derives from the beacons (same rows, same checks after).
    hits = [
        hits_of(decode_beacon(orjson.dumps(b)), Client(describe(AGENTS[i % 20]), "", ""), now_ms)[0]
        for i, b in enumerate(beacons)
    ]

    def as_beacons(project: dict) -> list:
        path = f"/collect/v1/{project['tag_id']}"
        return [
            (
                path,
                {"Origin": ORIGIN, "User-Agent": AGENTS[i % 20], "Content-Type": "text/plain;charset=UTF-8"},
                orjson.dumps(b),
            )  # fmt: skip
            for i, b in enumerate(beacons)
        ]

    def as_hits(project: dict, size: int) -> list:
        headers = {"X-Ingest-Key": project["ingest_key"], "Content-Type": "application/json"}
        return [("/ingest/v1/pageviews", headers, orjson.dumps(hits[i : i + size])) for i in range(0, len(hits), size)]

    kinds = {
        "beacons (collect, 1 view a request)": as_beacons,
        "ingest, 1 hit a request (baseline)": lambda p: as_hits(p, 1),
        "ingest, 1,000 hits a request": lambda p: as_hits(p, 1000),
        "GET /healthz (the request floor, nothing stored)": lambda p: [("/healthz", {}, b"")] * len(beacons),
    }
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="bench-collect-") as tmp:
        for r in range(args.repeat):
            for n, (kind, build) in enumerate(kinds.items()):
                stored, secs, cpu, bad = measure(Path(tmp), f"r{r}k{n}", args, build)
                if stored != args.beacons or bad:
                    raise SystemExit(f"{kind}: stored {stored} of {args.beacons}, statuses {sorted(set(bad))}")
                results[kind].append((stored / secs, cpu / stored * 1e6))
    table = Table("requests", "pageviews/s (runs)", "server CPU µs a pageview")
    for kind, runs in results.items():
        table.add_row(kind, ", ".join(f"{r:,.0f}" for r, _ in runs), ", ".join(f"{c:.0f}" for _, c in runs))
    console.print(table)
    best = {k: max(r for r, _ in v) for k, v in results.items()}
    keys = list(kinds)
    console.print(
        f"beacons / one-hit ingest requests: {best[keys[0]] / best[keys[1]]:.2f}x the rate; beacons / the request "
        f"floor: {best[keys[0]] / best[keys[3]]:.2f}x (best runs); "
        f"{args.beacons:,} pageviews, {args.connections} connections, serve --processes {args.server_processes}"
    )


if __name__ == "__main__":
    main()
