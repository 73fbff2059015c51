"""`dataexport serve --processes N`: N API processes on one address, each with its own listening socket.

Why not uvicorn's own `--workers`: its processes share one listening socket, and an asyncio server accepts
every pending connection at each wakeup, so a burst of new connections lands on whichever process woke first.
Measured with bench/ingest.py (32 keep-alive connections, 2 processes): 24-34k pageviews/s in the runs where
one process got most connections, 59-68k where they were spread. Here each process binds its own socket with
SO_REUSEPORT, and the kernel spreads new connections over them by hashing each connection's addresses.

The parent only supervises: it forwards SIGTERM/SIGINT (each process then shuts down gracefully, as a single
`serve` does), restarts a process that died, and gives up when processes keep dying right after starting.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import socket
import time
from typing import Any

import structlog

from dataexport.config import Settings

log = structlog.get_logger()

SERVE_SETTINGS_ENV = "DATAEXPORT_SERVE_SETTINGS"
FAST_FAILURE_SECONDS = 10.0  # a process that dies sooner after starting counts as failing to start
MAX_FAST_FAILURES = 3
STOP_TIMEOUT_SECONDS = 60.0


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options of `dataexport serve`, one process or several (each API process gets this dict).

    - The HTTP protocol is uvicorn's httptools one with a deadline for request headers and a cap on their size
      (api/uvicorn_protocol.py); a partial of a module-level class, so the dict pickles for spawned processes.
    - `limit_concurrency`: beyond max_connections open connections (or requests) per process, uvicorn answers
      503 rather than letting each new one slow all the others.
    - X-Forwarded-For/-Proto are honoured only from trusted_proxies (uvicorn's default trusts any loopback
      client, so anyone on the host could pick their address and scheme); X-Forwarded-Host never is.
    """
    from dataexport.api.uvicorn_protocol import MAX_HEADER_BYTES, GuardedHttpToolsProtocol

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "timeout_graceful_shutdown": 30,
        "http": functools.partial(
            GuardedHttpToolsProtocol, header_timeout=settings.header_timeout_seconds, max_header_bytes=MAX_HEADER_BYTES
        ),
        "limit_concurrency": settings.max_connections,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies),
        "server_header": False,  # no "server: uvicorn": nothing to tell a scanner
    }


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT, so that each API process can have its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve_processes(settings: Settings, uvicorn_options: dict[str, Any]) -> int:
    """Run settings.api_processes API processes until SIGTERM/SIGINT; the exit status of the whole server.

    The port must be fixed (not 0): each process binds the same one (`dataexport serve` checks it)."""
    # Binding here first fails early (port taken by another program), and holds the address meanwhile; it never
    # listens, so the kernel hands it no connection.
    try:
        probe = listening_socket(settings.host, settings.port)
    except OSError as exc:  # the address is taken by a program without SO_REUSEPORT, or cannot be bound
        log.error("serve.bind_failed", host=settings.host, port=settings.port, error=str(exc))
        return 1
    os.environ[SERVE_SETTINGS_ENV] = settings.model_dump_json()
    context = multiprocessing.get_context("spawn")
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: list[tuple[multiprocessing.process.BaseProcess, float]] = []
    fast_failures = 0
    status = 0
    try:
        for _ in range(settings.api_processes):
            children.append(_start(context, settings, uvicorn_options))
        while not stopping:
            time.sleep(0.2)
            for i, (child, started) in enumerate(children):
                if child.exitcode is None or stopping:
                    continue
                quick = time.monotonic() - started < FAST_FAILURE_SECONDS
                fast_failures = fast_failures + 1 if quick else 0
                log.warning(
                    "serve.process_exited",
                    pid=child.pid,
                    exitcode=child.exitcode,
                    restarting=fast_failures < MAX_FAST_FAILURES,
                )
                if fast_failures >= MAX_FAST_FAILURES:
                    stopping, status = True, 1
                    break
                children[i] = _start(context, settings, uvicorn_options)
    finally:
        for child, _ in children:
            if child.exitcode is None:
                child.terminate()  # SIGTERM: the process finishes its requests and hands back its run
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child, _ in children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.exitcode is None:
                child.kill()
                child.join()
        probe.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _start(context, settings: Settings, uvicorn_options: dict[str, Any]):
    child = context.Process(
        target=_serve_one, args=(settings.host, settings.port, uvicorn_options), name="dataexport-api"
    )
    child.start()
    return child, time.monotonic()


def _serve_one(host: str, port: int, uvicorn_options: dict[str, Any]) -> None:
    """One API process (runs in a child): its own socket, its own app built from the parent's settings."""
    import uvicorn

    sock = listening_socket(host, port)
    config = uvicorn.Config("dataexport.api.app:app_for_serve_process", factory=True, **uvicorn_options)
    uvicorn.Server(config).run(sockets=[sock])
