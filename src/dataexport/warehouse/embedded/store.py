"""Durable, idempotent append of pageview rows to the Parquet warehouse.

Guarantees (local filesystem):
- Durable: when `append` returns, every file of the batch and its directory entry are fsync'd.
- Atomic under crashes: a batch is stored whole or not at all, across partitions too. Files are
  first written (and fsync'd) in this writer's staging directory; the commit point is one fsync'd line
  in the project's batch log naming the batch id and its renames. A committed batch whose renames did
  not all happen is finished (rolled forward) by the next store opened on the root; a batch that never
  reached the log is thrown away with its dead writer's staging directory.
- Idempotent: the batch id (the caller's idempotency key, else a hash of the batch's natural keys) is
  in that log line; a batch whose id was committed in the last IDEMPOTENCY_DAYS log days is acknowledged
  without writing. A retry after that, or a different batch that repeats some pageviews, is stored;
  compaction then keeps one copy per natural key (the latest ingested_at).
- A key names one content: a keyed batch's line also carries a fingerprint of its rows, and the same key
  sent with other rows is refused (IdempotencyKeyReused) rather than acknowledged and dropped.
- Bounded: the log is cut in daily segments; a store keeps in memory the ids of the last
  IDEMPOTENCY_DAYS segments only, and `prune_batch_logs` deletes segments past any use.
- Readers never block writers: files appear by atomic rename into the partition directories that
  `layout.partition_files` lists; a file is complete when visible. A batch spanning several session
  days becomes visible one partition after the other within one commit (microseconds apart).
- Several processes may append at once: unique file names, and one fcntl lock around the short commit.

Layout under the root, besides the partitions (see layout.py):
    _store/lock                        the commit lock
    _store/batches/project_id=P/D.log  batches a project committed on UTC day D, one a line:
                                       "{id}\t{renames}\t{fingerprint}" (empty for unkeyed batches; absent
                                       in lines of earlier versions)
    _store/staging/{writer}/           files being written by one live writer (its .lock held while alive);
                                       created and deleted under the commit lock only

Per batch: one fsync per staged file, one for the log line (under the lock: the only I/O wait there),
one per touched partition directory (after the lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dataexport.warehouse.batches import (
    IDEMPOTENCY_DAYS,
    StoredBatch,
    as_stored_table,
    batch_id_of,
    content_fingerprint,
    is_retry,
    split_by_session_day,
    stored_as_given,
)
from dataexport.warehouse.embedded.durable import fsync_dir, locked, makedirs_durable, try_lock
from dataexport.warehouse.embedded.layout import partition_dir
from dataexport.warehouse.schema import FRESH_FILE_OPTIONS

COMPRESSION = "zstd"  # of compacted files (compaction.py): small, with dictionaries and full statistics


class PageviewStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.meta = self.root / "_store"
        self._lock_path = self.meta / "lock"
        for d in (self.meta / "batches", self.meta / "staging"):
            makedirs_durable(d)
        self._seen: dict[Path, dict[str, str]] = {}  # batch id -> fingerprint by log segment, recent segments only
        self._log_offset: dict[Path, int] = {}
        self._mutex = threading.Lock()
        with self.commit_lock():
            self.recover()
            self.staging = self.meta / "staging" / uuid.uuid4().hex
            self.staging.mkdir()
            fd = try_lock(self.staging / ".lock")
            assert fd is not None, "a fresh staging directory cannot be locked by anyone else"
            self._writer_fd: int | None = fd

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        if self._writer_fd is not None:
            self._remove_staging()
            os.close(self._writer_fd)
            self._writer_fd = None

    def _remove_staging(self) -> None:
        """Delete this writer's staging directory, under the commit lock: another process's recovery lists the
        staging directories and locks each one's .lock to tell dead writers from live ones, and a directory
        deleted between the two made it fail (`dataexport demo`, whose workers each open and close a store)."""
        # Files left here belong to a batch that committed but could not be moved (an I/O error):
        # they stay for the recovery of the next store opened on this root, which finishes the batch.
        try:
            with self.commit_lock():
                if not any(self.staging.glob("*.parquet")):
                    shutil.rmtree(self.staging, ignore_errors=True)
        except FileNotFoundError:  # the whole root was deleted under us (tests reset it): nothing left to tidy
            pass

    def __enter__(self) -> PageviewStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def commit_lock(self):
        return locked(self._lock_path)

    def recover(self) -> None:
        """Finish committed batches and drop the leftovers of dead writers. Call under the commit lock."""
        dead = []
        for writer in (self.meta / "staging").iterdir():
            try:
                fd = try_lock(writer / ".lock")
            except FileNotFoundError:  # deleted without the lock (by a version before that rule): gone anyway
                continue
            if fd is not None:  # nobody holds it: the writer is gone
                dead.append((writer, fd))
        if dead:  # a dead writer may have died between its commit line and its renames: redo them
            prefixes = tuple(str(w.relative_to(self.root)) + os.sep for w, _ in dead)
            # Every segment, and the single log of the previous layout (batches/project_id=P.log).
            for log in sorted([*(self.meta / "batches").glob("*/*.log"), *(self.meta / "batches").glob("*.log")]):
                for line in _complete_lines(log.read_bytes()):
                    _, moves, _ = _parse_line(line)
                    if any(p in moves for p in prefixes):
                        self._move_into_place(json.loads(moves))
        for writer, fd in dead:
            shutil.rmtree(writer, ignore_errors=True)
            os.close(fd)

    def new_staging_path(self, suffix: str = ".parquet") -> Path:
        return self.staging / f"{uuid.uuid4().hex}{suffix}"

    # -- append ------------------------------------------------------------------------------------

    def append(
        self,
        project_id: int,
        rows: list[dict] | pa.Table,
        *,
        batch_key: str | None = None,
        now: datetime | None = None,
    ) -> StoredBatch:
        """Store a batch of validated rows (dicts from `hits`, or a table with the schema's columns).

        project_id and ingested_at are set here; the other columns are taken as given.
        """
        table = as_stored_table(project_id, rows, now)
        if table.num_rows == 0:
            return StoredBatch(batch_id="", rows=0)
        batch_id = batch_id_of(project_id, table, batch_key)
        fingerprint = content_fingerprint(table) if batch_key is not None else ""
        if is_retry(self._committed(project_id, batch_id), fingerprint):  # nothing to write
            return StoredBatch(batch_id, table.num_rows, duplicate=True)
        return self.commit(project_id, _write_staged(table, batch_id, self.staging, fingerprint))

    def restore(self, project_id: int, table: pa.Table, *, batch_key: str) -> StoredBatch:
        """Store rows as given (ingested_at included), with `append`'s atomicity and idempotency."""
        table = stored_as_given(project_id, table)
        if table.num_rows == 0:
            return StoredBatch(batch_id="", rows=0)
        batch_id, fingerprint = batch_id_of(project_id, table, batch_key), content_fingerprint(table)
        if is_retry(self._committed(project_id, batch_id), fingerprint):
            return StoredBatch(batch_id, table.num_rows, duplicate=True)
        return self.commit(project_id, _write_staged(table, batch_id, self.staging, fingerprint))

    def commit(self, project_id: int, staged: StagedBatch) -> StoredBatch:
        """Commit a batch staged in this store's staging directory (by `append`, or by `stage` in another
        process): the commit point, then the renames into the partitions. A batch committed before is
        acknowledged as a duplicate (or refused, when its key came with other rows: IdempotencyKeyReused);
        whatever happens short of the commit point, the staged files are removed."""
        committed = False
        moves = []
        try:
            if staged.project_id is not None and staged.project_id != project_id:
                raise ValueError(f"a batch of project {staged.project_id} cannot be committed to project {project_id}")
            for day, staged_path in staged.parts:
                source = Path(staged_path)
                if source.parent != self.staging:
                    raise ValueError(f"{source} is not in this store's staging directory")
                name = f"{int(time.time() * 1000)}-{staged.batch_id[:12]}-{source.stem[:8]}.parquet"
                moves.append((source, partition_dir(self.root, project_id, day) / name))
            if not moves:
                return StoredBatch(staged.batch_id, staged.rows)
            renames = [[str(s.relative_to(self.root)), str(d.relative_to(self.root))] for s, d in moves]
            with self.commit_lock():
                # Committed before, or by a concurrent retry (which may carry other rows under the same key).
                if is_retry(self._committed(project_id, staged.batch_id), staged.fingerprint):
                    return StoredBatch(staged.batch_id, staged.rows, duplicate=True)
                self._log_commit(project_id, staged.batch_id, renames, staged.fingerprint)  # the commit point
                committed = True
                touched = self._move_into_place(renames, sync=False)
            for d in touched:  # before acknowledging; outside the lock so other writers need not wait
                fsync_dir(d)
        finally:
            if not committed:  # a failure or a duplicate before the commit point leaves nothing behind
                _discard(staged.parts)
        return StoredBatch(staged.batch_id, staged.rows, partitions=len(moves))

    def _log_commit(self, project_id: int, batch_id: str, renames: list, fingerprint: str = "") -> None:
        """Append the batch's commit line, fsync'd. Under the commit lock."""
        log = self._log_path(project_id, _today())
        if not log.parent.is_dir():
            makedirs_durable(log.parent)
        with open(log, "a+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a writer died mid-line (it held the lock): drop its torn line
                    f.seek(0)
                    f.truncate(f.read().rfind(b"\n") + 1)
            f.write(f"{batch_id}\t{json.dumps(renames)}\t{fingerprint}\n".encode())
            f.flush()
            os.fsync(f.fileno())
        if size == 0:
            fsync_dir(log.parent)
        with self._mutex:
            self._seen.setdefault(log, {})[batch_id] = fingerprint

    def _move_into_place(self, renames: list, sync: bool = True) -> set[Path]:
        """Rename staged files into their partitions; renames already done are skipped (safe to repeat)."""
        touched = set()
        for src, dst in renames:
            source, target = self.root / src, self.root / dst
            if source.exists():
                makedirs_durable(target.parent)
                os.replace(source, target)
                touched.add(target.parent)
        if sync:
            for d in touched:
                fsync_dir(d)
        return touched

    # -- idempotency log ---------------------------------------------------------------------------

    def _log_path(self, project_id: int, day: date) -> Path:
        return self.meta / "batches" / f"project_id={int(project_id)}" / f"{day.isoformat()}.log"

    def _committed(self, project_id: int, batch_id: str) -> str | None:
        """The fingerprint the batch id was committed with in the project's recent log segments ("" when its line
        has none), or None when it is not there; reads what other processes appended since. Segments that left
        the window are forgotten, so memory stays bounded."""
        today = _today()
        recent = [self._log_path(project_id, today - timedelta(days=d)) for d in range(IDEMPOTENCY_DAYS)]
        with self._mutex:
            prefix = str(self._log_path(project_id, today).parent) + os.sep
            for stale in [p for p in self._seen if str(p).startswith(prefix) and p not in recent]:
                del self._seen[stale]
                self._log_offset.pop(stale, None)
            found = None
            for log in recent:
                seen = self._seen.setdefault(log, {})
                offset = self._log_offset.get(log, 0)
                try:
                    with open(log, "rb") as f:
                        f.seek(offset)
                        chunk = f.read()
                except FileNotFoundError:
                    chunk = b""
                end = chunk.rfind(b"\n") + 1  # a line being appended right now is read next time
                if end:
                    for line in _complete_lines(chunk[:end]):
                        committed_id, _, fingerprint = _parse_line(line)
                        seen[committed_id] = fingerprint
                    self._log_offset[log] = offset + end
                if found is None:
                    found = seen.get(batch_id)
            return found

    def prune_batch_logs(self, keep_days: int = 7) -> int:
        """Delete log segments older than `keep_days` (and the log of the previous layout); the number deleted.

        They are past any use: retries are recognised within IDEMPOTENCY_DAYS, and a crashed writer's batch is
        rolled forward by the next store opened on the root, long before.
        """
        oldest = (_today() - timedelta(days=keep_days)).isoformat()
        batches = self.meta / "batches"
        old = [p for p in batches.glob("*/*.log") if p.stem < oldest] + list(batches.glob("*.log"))
        with self.commit_lock():
            for path in old:
                path.unlink(missing_ok=True)
        return len(old)


@dataclass(frozen=True)
class StagedBatch:
    """A batch whose files are written and fsync'd in a staging directory, not yet committed."""

    batch_id: str
    rows: int
    parts: tuple[tuple[date, str], ...] = ()  # (session day, staged file) for each day the batch touches
    fingerprint: str = ""  # of a keyed batch's rows (content_fingerprint); "" for a batch identified by its rows
    project_id: int | None = None  # whose rows these are: committed under that project only


def stage(
    project_id: int,
    rows: list[dict] | pa.Table,
    staging: Path,
    *,
    batch_key: str | None = None,
    now: datetime | None = None,
) -> StagedBatch:
    """The slow half of an append, which any process may do: write the batch's files into `staging` (the
    `staging` directory of the store that will commit it). `PageviewStore.commit` is the other half."""
    table = as_stored_table(project_id, rows, now)
    if table.num_rows == 0:
        return StagedBatch(batch_id="", rows=0)
    fingerprint = content_fingerprint(table) if batch_key is not None else ""
    return _write_staged(table, batch_id_of(project_id, table, batch_key), Path(staging), fingerprint)


def _write_staged(table: pa.Table, batch_id: str, staging: Path, fingerprint: str = "") -> StagedBatch:
    parts: list[tuple[date, str]] = []
    try:
        for day, part in split_by_session_day(table):
            path = staging / f"{uuid.uuid4().hex}.parquet"
            parts.append((day, str(path)))
            write_parquet(part, path)
    except BaseException:
        _discard(parts)
        raise
    project_id = int(table.column("project_id")[0].as_py()) if table.num_rows else None
    return StagedBatch(batch_id, table.num_rows, tuple(parts), fingerprint, project_id)


def _discard(parts) -> None:
    for _, path in parts:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _today() -> date:
    return datetime.now(UTC).date()


def _complete_lines(data: bytes) -> list[str]:
    return data[: data.rfind(b"\n") + 1].decode().splitlines()


def _parse_line(line: str) -> tuple[str, str, str]:
    """(batch id, renames as JSON, fingerprint) of a log line; the fingerprint is "" in lines that have none. The
    renames' JSON holds no raw tab (json.dumps escapes it), so tabs split the line."""
    batch_id, _, rest = line.partition("\t")
    renames, _, fingerprint = rest.partition("\t")
    return batch_id, renames, fingerprint


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write and fsync: the file's bytes are on disk before anyone can rename it into view."""
    with open(path, "wb") as f:
        pq.write_table(table, f, **FRESH_FILE_OPTIONS)
        f.flush()
        os.fsync(f.fileno())
