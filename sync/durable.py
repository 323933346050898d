"""Writes that survive a power cut: fsync of files and folders, atomic replace.

An fsync that fails stops the caller (``SpoolError``) instead of carrying on:
after a failed fsync the page cache can no longer be trusted (the PostgreSQL
'fsyncgate' lesson).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sync.errors import SpoolError


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fsync_or_stop(fd: int, what: str) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise SpoolError(
            f"the disk refused to save {what} ({os.strerror(exc.errno or 0)})",
            "stop the device and check the storage card; nothing has been deleted",
        ) from exc


def fsync_dir(path: Path, what: str = "the spool folder") -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fsync_or_stop(fd, what)
    finally:
        os.close(fd)


def fsync_file(path: Path, what: str = "a sealed document") -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        fsync_or_stop(fd, what)
    finally:
        os.close(fd)


def atomic_write(
    path: Path, data: bytes, *, mode: int = 0o644, durable: bool = True, what: str = "a file"
) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one.

    ``durable=False`` skips the fsyncs, for caches a crash may lose. The temp
    name is unique per process and thread: two workers may write the same path.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not widen or narrow what we asked for
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            fsync_or_stop(fd, what)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    tmp.replace(path)
    if durable:
        fsync_dir(path.parent, what)


def is_disk_full(exc: OSError) -> bool:
    """True for the errors a full disk or an exhausted quota raise."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def enable_wal(conn: sqlite3.Connection, timeout_s: float = 30.0) -> None:
    """Put the database in WAL mode, also when other processes open it at the same moment.

    Switching the journal mode needs a lock that SQLite's busy handler does not wait
    for, so workers started together would fail with "database is locked"; a
    database already in WAL mode is left as it is.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing): one holder at a time
    across threads and processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
