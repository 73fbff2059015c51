"""Many beacons, one warehouse batch: what makes a busy site's pageviews affordable.

The tag sends one pageview a request. Stored one by one, each would be a batch of its own: a Parquet file written
and fsync'd, a commit line fsync'd, an Arrow table built for one row (bench/collect.py measured it: a few ms of
server CPU a pageview). So each API process gathers the beacons that arrive while its ingest gate is busy, or
within WINDOW_SECONDS, per project, and stores them as one batch through the ingest path (same validation, same
durable commit), then answers each beacon with its own share of the result. Nothing is acknowledged before the
batch is durable.

A resent beacon must still be stored once, whichever replica it reaches, though its batch is not the one it was
first stored in. The beacon ids are claimed in the metadata DB (collected_beacons) in a transaction that commits
only after the warehouse commit: a beacon claimed before is a duplicate; a warehouse failure rolls the claims back,
so the beacon's resend is stored. The one gap is a process dying between the two commits: its beacons' resends
are then stored again (and collapsed to one copy by compaction of the settled partition).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from starlette.concurrency import run_in_threadpool

from dataexport.config import Settings
from dataexport.errors import ValidationFailed
from dataexport.ingest.hits import HitError
from dataexport.ingest.hits_columnar import HitWindow
from dataexport.ingest.requests import MAX_HITS_PER_REQUEST, check_request, store_request
from dataexport.metadata.repositories import beacons
from dataexport.warehouse.backend import Warehouse
from dataexport.warehouse.batches import IdempotencyKeyReused

WINDOW_SECONDS = 0.02  # the longest a beacon waits for others; under load the ingest gate is the wait
MAX_GROUP_HITS = MAX_HITS_PER_REQUEST


@dataclass(frozen=True, slots=True)
class Target:
    """The project a beacon is for, as the collection route resolved it."""

    project_id: int
    retention_days: int


@dataclass
class _Pending:
    beacon_id: str
    hits: list[dict]
    future: asyncio.Future = field(repr=False)


def result_of(beacon_id: str, stored: int, rejected: int, duplicate: bool, errors: list[HitError]) -> dict:
    """One beacon's answer, in the shape of the ingest route's payload (errors indexed among its views)."""
    return {
        "batchId": beacon_id,
        "stored": stored,
        "rejected": rejected,
        "duplicate": duplicate,
        "errors": [{"index": e.index, "field": e.field, "message": e.message} for e in errors],
    }


def split_errors(starts: list[int], errors: list[HitError]) -> list[list[HitError]]:
    """The group's hit errors per beacon, each re-indexed among its beacon's hits. `starts[i]` is the index of
    beacon i's first hit in the group. Pure."""
    per: list[list[HitError]] = [[] for _ in starts]
    for e in errors:
        i = bisect.bisect_right(starts, e.index) - 1
        per[i].append(HitError(e.index - starts[i], e.field, e.message))
    return per


class BeaconCombiner:
    def __init__(
        self,
        *,
        engine,
        warehouse: Callable[[], Warehouse],
        settings: Settings,
        clock: Callable[[], datetime],
        gate: asyncio.Semaphore,
    ) -> None:
        self._engine = engine
        self._warehouse = warehouse
        self._settings = settings
        self._clock = clock
        self._gate = gate
        self._queues: dict[Target, list[_Pending]] = {}
        self._timers: dict[Target, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, target: Target, beacon_id: str, hits: list[dict]) -> dict:
        """Store a beacon's hits with the others waiting; its result once the batch is durable."""
        loop = asyncio.get_running_loop()
        pending = _Pending(beacon_id, hits, loop.create_future())
        queue = self._queues.setdefault(target, [])
        queue.append(pending)
        if sum(len(p.hits) for p in queue) >= MAX_GROUP_HITS:
            self._flush_soon(target)
        elif target not in self._timers:
            self._timers[target] = loop.call_later(WINDOW_SECONDS, self._flush_soon, target)
        return await pending.future

    def _flush_soon(self, target: Target) -> None:
        timer = self._timers.pop(target, None)
        if timer is not None:
            timer.cancel()
        task = asyncio.get_running_loop().create_task(self._flush(target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _take(self, target: Target) -> list[_Pending]:
        """The longest run of waiting beacons that fits one batch (at least one); the rest wait for the next."""
        queue = self._queues.get(target, [])
        count, taken = 0, 0
        while taken < len(queue) and (taken == 0 or count + len(queue[taken].hits) <= MAX_GROUP_HITS):
            count += len(queue[taken].hits)
            taken += 1
        group, rest = queue[:taken], queue[taken:]
        if rest:
            self._queues[target] = rest
            self._flush_soon(target)
        else:
            self._queues.pop(target, None)
        return group

    async def _flush(self, target: Target) -> None:
        # The gate first, the queue after: beacons that arrived while this waited for it join this batch.
        async with self._gate:
            group = self._take(target)
            if not group:
                return
            try:
                results = await run_in_threadpool(self._store, target, group)
            except Exception as exc:  # noqa: BLE001 - every waiting beacon is answered, with what went wrong
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(exc)
                return
        for p, result in zip(group, results, strict=True):
            if not p.future.done():
                if isinstance(result, Exception):
                    p.future.set_exception(result)
                else:
                    p.future.set_result(result)

    def _store(self, target: Target, group: list[_Pending]) -> list[dict | Exception]:
        """In a thread: claim the group's beacon ids, store the new ones' hits as one batch, then commit the claims."""
        now = self._clock()
        # Each beacon is a duplicate unless it is the first of its id in the group and claimed now.
        results: list[dict | Exception] = [result_of(p.beacon_id, 0, 0, True, []) for p in group]
        first_of: dict[str, int] = {}
        for i, p in enumerate(group):
            first_of.setdefault(p.beacon_id, i)
        with self._engine.begin() as conn:
            new = beacons.claim_new(conn, target.project_id, list(first_of), now)
            fresh = [i for beacon_id, i in first_of.items() if beacon_id in new]
            if fresh:
                try:
                    self._store_together(target, group, fresh, results, now)
                except ValidationFailed:  # the group as a whole (too many session days): each beacon alone
                    for i in fresh:
                        results[i] = self._store_alone(target, group[i], now)
        return results

    def _check_and_store(self, target: Target, hits: list[dict], key: str, now: datetime):
        settings = self._settings
        window = HitWindow.at(
            now, max_future_seconds=settings.ingest_max_future_seconds, retention_days=target.retention_days
        )
        warehouse = self._warehouse()
        checked = check_request(
            warehouse,
            target.project_id,
            orjson.dumps(hits),
            idempotency_key=key,
            now=now,
            window=window,
            max_session_days=settings.ingest_max_partitions_per_batch,
        )
        return store_request(warehouse, target.project_id, checked), checked.errors

    def _store_together(self, target, group, fresh, results, now) -> None:
        hits: list[dict] = []
        starts: list[int] = []
        for i in fresh:
            starts.append(len(hits))
            hits.extend(group[i].hits)
        ids = sorted(group[i].beacon_id for i in fresh)
        key = "tag-group:" + hashlib.sha256("\n".join(ids).encode()).hexdigest()
        try:
            stored, errors = self._check_and_store(target, hits, key, now)
            duplicate = stored.duplicate
        except IdempotencyKeyReused:  # the same group stored before under other rows: nothing new to store
            errors, duplicate = [], True
        for i, own in zip(fresh, split_errors(starts, errors), strict=True):
            rejected = len({e.index for e in own})
            count = len(group[i].hits)
            results[i] = result_of(group[i].beacon_id, 0 if duplicate else count - rejected, rejected, duplicate, own)

    def _store_alone(self, target: Target, pending: _Pending, now: datetime) -> dict | Exception:
        try:
            stored, errors = self._check_and_store(target, pending.hits, f"tag:{pending.beacon_id}", now)
        except IdempotencyKeyReused:
            return result_of(pending.beacon_id, 0, 0, True, [])
        except ValidationFailed as exc:
            return exc
        rejected = len({e.index for e in errors})
        return result_of(
            pending.beacon_id, 0 if stored.duplicate else stored.stored, rejected, stored.duplicate, errors
        )
