"""Stream Arrow batches into gzip parts of bounded uncompressed size.

Pipeline: the calling thread slices batches (zero copy) into chunks of a few MB; a thread pool renders
and gzips each chunk (pyarrow and ISA-L both release the GIL, so chunks run in parallel); the calling
thread takes results in order and appends each as one gzip member to the current part (a multi-member
gzip file is one valid gzip stream). At most `threads * 2` chunks are in flight, so memory stays flat.

Chunks are the unit of part splitting: a chunk that does not fit the current part starts the next
one, so parts only end at row boundaries. A chunk larger than a whole part is halved until it fits;
a single row larger than a part goes alone in its own part.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import pyarrow as pa
from isal import igzip

from dataexport.domain.enums import Format
from dataexport.errors import StorageError
from dataexport.writers.render import CsvRenderer, JsonlRenderer, extension_for, renderer_for

# Chunk of about 8 MB: big enough that per-chunk overhead (gzip member header, task hand-off) vanishes,
# small enough that 2 * threads of them in flight stay a few tens of MB.
CHUNK_TARGET_BYTES = 4 * 1024 * 1024

_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass(frozen=True)
class PartInfo:
    part_id: int
    path: Path
    rows: int
    uncompressed_bytes: int
    size: int  # compressed bytes on disk
    sha256: str  # of the compressed bytes


@dataclass(frozen=True)
class _Chunk:
    rows: int
    raw_len: int
    gz: bytes


def part_file_name(part_id: int, fmt: Format) -> str:
    return f"part-{part_id:05d}.{extension_for(fmt)}"


def write_parts(
    batches: Iterable[pa.RecordBatch],
    *,
    fmt: Format,
    columns: list[str],
    work_dir: Path,
    part_max_bytes: int,
    gzip_level: int = 1,
    threads: int = 2,
    on_progress: Callable[[int], None] | None = None,
) -> list[PartInfo]:
    """Write `batches` as `part-NNNNN.{csv,jsonl}.gz` files in `work_dir`; returns the parts in order.

    `columns` names the CSV output columns (header and order); JSONL reads the `line` column.
    `on_progress` receives the total number of rows written so far. On any failure the files this
    call wrote are removed, so a retry starts clean.
    """
    if part_max_bytes < 1:
        raise ValueError("part_max_bytes must be positive")
    if not 0 <= gzip_level <= 3:
        raise ValueError("gzip_level must be 0..3 (ISA-L levels)")
    if threads < 1:
        raise ValueError("threads must be at least 1")
    renderer = renderer_for(fmt, columns)
    sink = _PartSink(work_dir, fmt, renderer, part_max_bytes, gzip_level, on_progress)
    sizer = _ChunkSizer(max(1, min(CHUNK_TARGET_BYTES, part_max_bytes // 4)))
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="part-writer")
    pending: deque[tuple[pa.RecordBatch, Future[_Chunk]]] = deque()

    def take_oldest() -> None:
        piece, future = pending.popleft()
        chunk = future.result()
        sizer.observe(piece, chunk.raw_len)
        sink.add(piece, chunk)

    try:
        for batch in batches:
            for piece in sizer.slices(batch):
                pending.append((piece, pool.submit(_render_and_compress, renderer, piece, gzip_level)))
                while len(pending) > threads * 2:
                    take_oldest()
        while pending:
            take_oldest()
        return sink.finish()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        sink.discard()
        raise
    finally:
        pool.shutdown(wait=True)


def _render_and_compress(renderer: CsvRenderer | JsonlRenderer, piece: pa.RecordBatch, level: int) -> _Chunk:
    rendered = renderer.render(piece)
    return _Chunk(rendered.rows, len(rendered.data), igzip.compress(rendered.data, level, mtime=0))


class _ChunkSizer:
    """Picks rows per chunk from the observed ratio of rendered bytes to Arrow bytes."""

    def __init__(self, target_bytes: int):
        self.target_bytes = target_bytes
        self.rendered_per_arrow_byte = 1.0

    def slices(self, batch: pa.RecordBatch) -> Iterable[pa.RecordBatch]:
        if batch.num_rows == 0:
            return
        arrow_bytes_per_row = max(batch.nbytes / batch.num_rows, 1.0)
        rows = max(1, int(self.target_bytes / (arrow_bytes_per_row * self.rendered_per_arrow_byte)))
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)

    def observe(self, piece: pa.RecordBatch, rendered_bytes: int) -> None:
        if piece.nbytes > 0 and rendered_bytes > 0:
            seen = rendered_bytes / piece.nbytes
            self.rendered_per_arrow_byte = 0.5 * self.rendered_per_arrow_byte + 0.5 * seen


class _OpenPart:
    def __init__(self, part_id: int, final_path: Path):
        self.part_id = part_id
        self.final_path = final_path
        self.tmp_path = final_path.with_name(f".{final_path.name}.tmp")
        self.file = open(self.tmp_path, "wb")  # noqa: SIM115 - closed in close()/abort()
        self.sha = hashlib.sha256()
        self.rows = 0
        self.raw = 0
        self.size = 0
        self.members = 0

    def write(self, gz: bytes, rows: int, raw_len: int) -> None:
        self.file.write(gz)
        self.sha.update(gz)
        self.size += len(gz)
        self.rows += rows
        self.raw += raw_len
        self.members += 1

    def close(self) -> PartInfo:
        if self.members == 0:  # an empty JSONL part is still one valid (empty) gzip stream
            self.write(igzip.compress(b"", 1, mtime=0), 0, 0)
        self.file.close()
        os.replace(self.tmp_path, self.final_path)
        return PartInfo(self.part_id, self.final_path, self.rows, self.raw, self.size, self.sha.hexdigest())

    def abort(self) -> None:
        # Closing flushes the buffer, which fails again on a full disk (ENOSPC, EFBIG). That error must
        # neither replace the one being handled nor keep the partial file: the file is closed regardless.
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()


class _PartSink:
    def __init__(
        self,
        work_dir: Path,
        fmt: Format,
        renderer: CsvRenderer | JsonlRenderer,
        part_max_bytes: int,
        level: int,
        on_progress: Callable[[int], None] | None,
    ):
        self.work_dir = Path(work_dir)
        self.fmt = fmt
        self.renderer = renderer
        self.limit = part_max_bytes
        self.level = level
        self.on_progress = on_progress
        self.header_gz = igzip.compress(renderer.header, level, mtime=0) if renderer.header else b""
        self.done: list[PartInfo] = []
        self.current: _OpenPart | None = None
        self.total_rows = 0

    def add(self, piece: pa.RecordBatch, chunk: _Chunk) -> None:
        header_len = len(self.renderer.header)
        part = self.current or self._open()
        overflows = part.rows > 0 and part.raw + chunk.raw_len > self.limit
        if overflows and (header_len + chunk.raw_len <= self.limit or piece.num_rows == 1):
            self._close_current()
            part = self._open()
        if part.raw + chunk.raw_len <= self.limit or piece.num_rows == 1:
            self._io(part.write, chunk.gz, chunk.rows, chunk.raw_len)
            self.total_rows += chunk.rows
            if self.on_progress is not None:
                self.on_progress(self.total_rows)
            return
        # Larger than a whole part: halve, in order, until each half fits or is a single row.
        half = piece.num_rows // 2
        for sub in (piece.slice(0, half), piece.slice(half)):
            self.add(sub, _render_and_compress(self.renderer, sub, self.level))

    def finish(self) -> list[PartInfo]:
        if self.current is None:
            self._open()  # an empty export still yields one valid part
        self._close_current()
        return list(self.done)

    def discard(self) -> None:
        if self.current is not None:
            self.current.abort()
            self.current = None
        for info in self.done:
            with contextlib.suppress(FileNotFoundError):
                info.path.unlink()

    def _open(self) -> _OpenPart:
        final = self.work_dir / part_file_name(len(self.done), self.fmt)
        part = self._io(_OpenPart, len(self.done), final)
        self.current = part
        if self.header_gz:
            self._io(part.write, self.header_gz, 0, len(self.renderer.header))
        return part

    def _close_current(self) -> None:
        assert self.current is not None
        self.done.append(self._io(self.current.close))
        self.current = None

    @staticmethod
    def _io(fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Local disk failures (full, permission) are retryable storage failures, not crashes."""
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            raise StorageError(f"Writing an export part failed: {exc}") from exc
