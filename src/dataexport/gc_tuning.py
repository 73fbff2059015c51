"""Garbage-collector settings for the long-running processes: `serve`, `worker`, `load` and its pool."""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Tune the garbage collector for a long-running process, once its startup objects exist.

    What is alive now (modules, the catalog, SQLAlchemy metadata, the app) lives as long as the process:
    frozen, the full collections stop walking it; and rarer young collections mean fewer of them while a
    batch of hits allocates its many short-lived objects. Measured: the p99 of a bare request at 50 clients
    went from 134 to 42 ms (bench/load.py), and the ingest path costs 10-15% less CPU per hit.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
