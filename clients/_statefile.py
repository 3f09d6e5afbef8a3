"""What the client's state files (the witness's kept checkpoints, the monitor's progress) share:
one writer at a time across threads and processes, and a file replaced whole, never half written.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


@contextmanager
def locked(lock_path: Path, lock: threading.Lock) -> Iterator[None]:
    """Threads of this process (``lock``) and other processes (``lock_path``), one at a time."""
    with lock, _opened(lock_path) as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _opened(lock_path: Path) -> TextIO:
    try:
        return open(lock_path, "a")
    except FileNotFoundError:  # the first use: make the directory (not on every call)
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        return open(lock_path, "a")


def replace(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically and durably: a temporary file beside it, fsynced,
    renamed over it, so a crash leaves the old state or the new one."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, mode)
    with open(fd, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
