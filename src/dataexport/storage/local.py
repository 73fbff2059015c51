"""Local-directory storage; downloads go through the API's `GET /files/{key}` with HMAC-signed URLs."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TypeVar
from urllib.parse import quote

from dataexport.errors import NotFound, StorageError
from dataexport.storage.keys import validate_key, validate_prefix
from dataexport.storage.signing import Verdict, sign, verify

READ_BLOCK = 1024 * 1024
T = TypeVar("T")


def _io(action: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except FileNotFoundError as exc:
        raise NotFound(f"{action}: no such file") from exc
    except OSError as exc:  # disk full, permission, I/O error: retryable
        raise StorageError(f"{action} failed: {exc}") from exc


class LocalStorage:
    def __init__(self, root: Path, secret: bytes | str):
        self.root = Path(root)
        self.secret = secret

    # --- Storage interface ---
    def publish(self, local_path: Path, key: str) -> int:
        dest = self.local_path(key)
        return _io(f"Publishing {key}", lambda: self._copy_atomically(Path(local_path), dest))

    def delete(self, key: str) -> None:
        path = self.local_path(key)
        _io(f"Deleting {key}", lambda: path.unlink(missing_ok=True))

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        # Match S3 semantics (a string prefix, not a directory): scan the prefix's directory.
        start = (self.root / prefix).parent if not prefix.endswith("/") else self.root / prefix
        return _io(f"Deleting prefix {prefix}", lambda: self._delete_matching(start, prefix))

    def exists(self, key: str) -> bool:
        path = self.local_path(key)
        return _io(f"Checking {key}", path.is_file)

    def size(self, key: str) -> int:
        path = self.local_path(key)
        return _io(f"Sizing {key}", lambda: path.stat().st_size)

    def download_url(self, key: str, *, expires_at: datetime, base_url: str) -> str:
        validate_key(key)
        expires = int(expires_at.timestamp())
        signature = sign(self.secret, key, expires)
        return f"{base_url.rstrip('/')}/files/{quote(key)}?expires={expires}&sig={signature}"

    # --- serving downloads ---
    def verify(self, key: str, expires: int | str, sig: str, now: datetime | float) -> Verdict:
        return verify(self.secret, key, expires, sig, now)

    def local_path(self, key: str) -> Path:
        """The file behind `key`; refuses anything that would resolve outside the root."""
        validate_key(key)
        root = self.root.resolve()
        path = (root / key).resolve()
        if not path.is_relative_to(root) or path == root:
            # validate_key already refuses this; the resolve check also catches symlinks pointing out.
            raise NotFound("No such file.")
        return path

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes [start, end) of `key` in blocks; `end=None` reads to the end. Opens eagerly, so a
        missing file fails here rather than in the middle of a response."""
        path = self.local_path(key)
        handle = _io(f"Reading {key}", lambda: open(path, "rb"))  # noqa: SIM115 - closed by the generator
        return self._blocks(handle, start, end)

    # --- internals ---
    @staticmethod
    def _blocks(handle: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
        with handle:
            handle.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                block = handle.read(READ_BLOCK if remaining is None else min(READ_BLOCK, remaining))
                if not block:
                    return
                if remaining is not None:
                    remaining -= len(block)
                yield block

    @staticmethod
    def _copy_atomically(source: Path, dest: Path) -> int:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(source, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, READ_BLOCK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(dest.parent)  # makes the rename itself durable
        return dest.stat().st_size

    def _delete_matching(self, start: Path, prefix: str) -> int:
        root = self.root.resolve()
        start = start.resolve()
        if not start.is_relative_to(root) or not start.is_dir():
            return 0
        deleted = 0
        for dirpath, _dirs, files in os.walk(start, topdown=False):
            for name in files:
                path = Path(dirpath) / name
                if path.relative_to(root).as_posix().startswith(prefix):
                    path.unlink(missing_ok=True)
                    deleted += 1
            directory = Path(dirpath)
            if directory != root and directory.relative_to(root).as_posix().startswith(prefix.rstrip("/")):
                with contextlib.suppress(OSError):  # not empty: keep it
                    directory.rmdir()
        return deleted


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
