"""Small durability primitives for the local warehouse: fsync, atomic replace, file locks.

Locks are fcntl `flock` locks: the kernel drops them when the holder dies (even by kill -9), so a
crashed process never leaves the store locked, and "can I take this lock?" tells whether its owner lives.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path) -> None:
    """mkdir -p, fsyncing each parent of a directory created here so the new entry survives a crash."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        fsync_dir(d.parent)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block; blocks until free."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def try_lock(path: Path) -> int | None:
    """Take an exclusive lock without waiting: the open descriptor (keep it to hold the lock) or None."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def try_lock_removable(path: Path) -> int | None:
    """`try_lock` for a lock file that its holder deletes when done (`unlock_and_remove`), so that one-off locks
    (one per partition compacted) do not pile up.

    A file can be deleted between another process opening it and locking it: that process would then hold a lock
    on a file nobody else can find. So the lock counts only if `path` still names the locked file; else try again.
    """
    while True:
        fd = try_lock(path)
        if fd is None:
            return None
        if _names(path, fd):
            return fd
        os.close(fd)


def unlock_and_remove(path: Path, fd: int) -> None:
    """Delete a lock file taken by `try_lock_removable`, then release it (in that order: see there)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)


def _names(path: Path, fd: int) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux renameat2 RENAME_EXCHANGE).

    Returns False when the kernel or filesystem cannot do it, so the caller can fall back.
    """
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))
