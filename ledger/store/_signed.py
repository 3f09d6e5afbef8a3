"""The newest tree the exchange signed, kept outside its database.

C2SP tlog-checkpoint: "A log MUST not sign any checkpoint which is inconsistent with any
checkpoint it previously signed." A database administrator who deletes the ledger's tail, or an
operator who restores an older backup, would otherwise have the exchange sign a new history over
the old one's place. So the writer remembers, per origin, the size and root it signed last, in a
file beside the ledger key (not in the database it guards), and refuses to sign a tree that is
smaller than that, or whose first entries have another root (:class:`RolledBack`).

The file is written atomically (a temporary file, fsync, rename) by a background thread, newest
first, so a commit never waits for it; after a crash it may lag a few batches, which only makes
the next check less strict, never wrong. Processes that share the file (replicas of one host)
never lower a size another wrote: they sign prefixes of one tree.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from ledger._errors import StorageError

STATE_VERSION = 1
_log = logging.getLogger(__name__)


class RolledBack(StorageError):
    """The tree to sign is smaller than, or inconsistent with, one this exchange signed."""


class SignedHistory:
    """Per origin, the newest (size, root) this exchange signed: in memory, and in ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, tuple[int, bytes]] = {}
        self._closed = False
        self._heads = self._read()
        self._thread = threading.Thread(target=self._run, name="signed-history", daemon=True)
        self._thread.start()

    def _read(self) -> dict[str, tuple[int, bytes]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StorageError(
                f"the record of what this exchange signed, {self.path}, is unreadable ({exc}): "
                "restore it from a backup; without it a rolled-back ledger cannot be told apart"
            ) from None
        try:
            if data["version"] != STATE_VERSION:
                raise ValueError(data["version"])
            return {
                origin: (int(head["size"]), bytes.fromhex(head["root"]))
                for origin, head in data["origins"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StorageError(f"{self.path} is not a signed-history file: {exc!r}") from None

    def origins(self) -> dict[str, tuple[int, bytes]]:
        """Every origin this exchange signed, with the newest (size, root) of each."""
        with self._lock:
            return dict(self._heads)

    def signed(self, origin: str) -> tuple[int, bytes] | None:
        """The newest (size, root) signed for ``origin``, or None."""
        with self._lock:
            return self._heads.get(origin)

    def check(self, origin: str, size: int, root_at: Callable[[int], bytes]) -> None:
        """Refuse (:class:`RolledBack`) a tree of ``size`` entries whose root at the size signed
        before, ``root_at(signed size)``, is not the root signed then."""
        head = self.signed(origin)
        if head is None:
            return
        signed_size, signed_root = head
        if size < signed_size:
            raise RolledBack(
                f"the ledger {origin} has {size} entries, but this exchange signed a tree of "
                f"{signed_size} before (root {signed_root.hex()}): entries were removed, or an "
                "older backup was restored"
            )
        if root_at(signed_size) != signed_root:
            raise RolledBack(
                f"the first {signed_size} entries of the ledger {origin} are not those this "
                f"exchange signed (root {signed_root.hex()}): the history was rewritten"
            )

    def record(self, origin: str, size: int, root: bytes) -> None:
        """Remember a signed tree; written to the file soon, by the background thread."""
        with self._lock:
            head = self._heads.get(origin)
            if head is not None and head[0] >= size:
                return
            self._heads[origin] = (size, root)
            self._pending[origin] = (size, root)
            self._changed.notify()

    def close(self) -> None:
        """Write what is pending, then stop the background thread."""
        with self._lock:
            self._closed = True
            self._changed.notify()
        self._thread.join(30)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._changed.wait()
                pending, self._pending = self._pending, {}
                closed = self._closed
            if pending:
                try:
                    self._write(pending)
                except (OSError, StorageError):
                    # Kept in memory, and written with the next change; the check in this
                    # process stands meanwhile. Loud: a lost record weakens the next start's.
                    _log.exception("cannot write %s", self.path)
                    with self._lock:
                        self._pending = {**pending, **self._pending}
                        if not self._closed:
                            self._changed.wait(1.0)  # retried on the next change, or in 1 s
            if closed:
                return

    def _write(self, pending: dict[str, tuple[int, bytes]]) -> None:
        """Merge ``pending`` into the file under an exclusive lock, never lowering a size."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            heads = self._read()
            for origin, (size, root) in pending.items():
                if origin not in heads or heads[origin][0] < size:
                    heads[origin] = (size, root)
            data = {
                "version": STATE_VERSION,
                "origins": {o: {"size": s, "root": r.hex()} for o, (s, r) in sorted(heads.items())},
            }
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
            with open(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(data, indent=1) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
