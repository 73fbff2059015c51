"""Group commit: many threads' batches committed together, one commit for all that are waiting.

A lake commit costs a fixed share of catalog round trips whatever it holds, so committing each request's
batch on its own caps ingest at a few dozen commits a second. Here every request thread hands its batch to one
committer thread and waits; the committer takes whatever has piled up while the previous commit ran (up to a
bound), commits it in one go, and answers each waiting thread with its own outcome. Under light load a batch is
committed alone at once. When the previous group held several batches (callers are arriving together), the
committer lingers for more before it commits: under load a commit then holds more batches, and its fixed share
of CPU, which the request threads need, is paid less often (docs/warehouse-interface.md, section 3, has the
figures).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class CommitterClosed(RuntimeError):
    """The committer was closed: nothing more is committed."""


@dataclass
class _Pending(Generic[Item, Outcome]):
    item: Item
    size: int
    future: Future[Outcome]


class GroupCommitter(Generic[Item, Outcome]):
    """`commit_group(items)` returns one outcome per item, in order (an exception instance for an item that failed
    alone); if it raises, every item of the group gets that exception."""

    def __init__(
        self,
        commit_group: Callable[[Sequence[Item]], Sequence[Outcome | BaseException]],
        *,
        max_group_size: int,
        size_of: Callable[[Item], int] = lambda _item: 1,
        linger: float = 0.0,
        name: str = "group-commit",
    ) -> None:
        """`linger`: seconds to wait for more items after a group of several (never after a group of one)."""
        if max_group_size < 1:
            raise ValueError("max_group_size must be positive")
        if linger < 0:
            raise ValueError("linger must not be negative")
        self._linger = linger
        self._commit_group = commit_group
        self._max = max_group_size
        self._size_of = size_of
        self._queue: queue.SimpleQueue[_Pending[Item, Outcome] | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> Outcome:
        """Commit `item` with whatever else is waiting; its outcome, or its exception raised here."""
        if self._closed.is_set():
            raise CommitterClosed("the committer is closed")
        pending: _Pending[Item, Outcome] = _Pending(item, self._size_of(item), Future())
        self._queue.put(pending)
        return pending.future.result()

    def close(self) -> None:
        """Commit what was submitted, then stop the committer thread."""
        if not self._closed.is_set():
            self._closed.set()
            self._queue.put(None)
            self._thread.join()

    def _run(self) -> None:
        carried: _Pending[Item, Outcome] | None = None
        previous = 1  # items of the previous group
        while True:
            first = carried if carried is not None else self._queue.get()
            carried = None
            if first is None:
                return
            group, size = [first], first.size
            stop = False
            deadline = time.monotonic() + (self._linger if previous > 1 else 0.0)
            while size < self._max:
                try:
                    wait = deadline - time.monotonic()
                    nxt = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                if size + nxt.size > self._max:
                    carried = nxt  # starts the next group: a group stays within the bound
                    break
                group.append(nxt)
                size += nxt.size
            previous = len(group)
            self._commit(group)
            if stop:
                self._drain()
                return

    def _commit(self, group: list[_Pending[Item, Outcome]]) -> None:
        try:
            outcomes = self._commit_group([p.item for p in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"commit_group gave {len(outcomes)} outcomes for {len(group)} items")
        except BaseException as exc:  # every waiting thread must be answered, whatever went wrong
            for p in group:
                p.future.set_exception(exc)
            return
        for p, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                p.future.set_exception(outcome)
            else:
                p.future.set_result(outcome)

    def _drain(self) -> None:
        """Items that raced with close: refused, so that no caller waits forever."""
        while True:
            try:
                p = self._queue.get_nowait()
            except queue.Empty:
                return
            if p is not None:
                p.future.set_exception(CommitterClosed("the committer is closed"))
