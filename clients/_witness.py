"""Witnessing: a client remembers the newest checkpoint it verified and checks every newer one.

A database administrator who holds the signing key could rewrite history and sign it anew; the
next client that connects catches it, because the new checkpoint is not consistent (RFC 9162
§2.1.4) with the one it kept. That is the same defence Certificate Transparency clients use.
The rules are :func:`ledger.advance`'s; this module keeps the state: a small JSON file per
identity, locked across threads and processes, whose checkpoints are verified again when loaded.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from clients._errors import VerificationFailed
from ledger import (
    Checkpoint,
    ForkError,
    LedgerError,
    ProofFetcher,
    Verifier,
    advance,
    open_checkpoint,
)

STATE_VERSION = 1


class ForkDetected(VerificationFailed):
    """The exchange showed a checkpoint inconsistent with one this client verified before."""


class Witness:
    """The newest verified checkpoint per ledger origin, kept in ``path``."""

    def __init__(self, path: str | os.PathLike[str], verifiers: Sequence[Verifier]) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_suffix(".lock")
        self._tmp_path = self.path.with_suffix(".tmp")
        self._made = False  # the state's directory exists
        self._verifiers = list(verifiers)
        self._lock = threading.Lock()
        # The file as last read or written, by (inode, size, mtime): reread only when another
        # process (or another Witness) replaced it. Every publish consults the state, and reading,
        # parsing and re-verifying the kept checkpoint each time cost more than the publish did.
        self._stamp: tuple[int, int, int] | None = None
        self._notes: dict[str, bytes] = {}
        self._opened: dict[bytes, Checkpoint] = {}  # kept notes already verified, by note

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Threads of this process and other processes using the same identity, one at a time."""
        if not self._made:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._made = True
        with self._lock, open(self._lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self) -> dict[str, bytes]:
        stamp = self._file_stamp()
        if stamp is not None and stamp == self._stamp:
            return dict(self._notes)
        notes = self._read()
        self._stamp, self._notes = stamp, dict(notes)
        return notes

    def _read(self) -> dict[str, bytes]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise VerificationFailed(f"witness state {self.path} is unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise VerificationFailed(f"witness state {self.path} has an unknown format")
        notes = data.get("checkpoints", {})
        return {origin: base64.b64decode(note) for origin, note in notes.items()}

    def _save(self, notes: dict[str, bytes]) -> None:
        data = {
            "version": STATE_VERSION,
            "checkpoints": {o: base64.b64encode(n).decode() for o, n in sorted(notes.items())},
        }
        fd = os.open(self._tmp_path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with open(fd, "w", encoding="utf-8") as out:
            out.write(json.dumps(data) + "\n")  # one line: the C encoder, on every publish
            out.flush()
            os.fsync(out.fileno())
        os.replace(self._tmp_path, self.path)
        self._stamp, self._notes = self._file_stamp(), dict(notes)

    def _open(self, note: bytes) -> Checkpoint:
        opened = self._opened.get(note)
        if opened is not None:
            return opened
        try:
            opened = open_checkpoint(note, self._verifiers)
        except LedgerError as exc:
            raise VerificationFailed(f"witness state {self.path}: kept checkpoint: {exc}") from None
        self._remember(note, opened)
        return opened

    def _remember(self, note: bytes, checkpoint: Checkpoint) -> None:
        if len(self._opened) >= 16:
            self._opened.clear()
        self._opened[note] = checkpoint

    def _keep(self, notes: dict[str, bytes], checkpoint: Checkpoint, note: bytes) -> None:
        """Keep ``note`` as the newest for its origin. It was verified before it was observed,
        so the next publish's look at the kept state need not verify its signature again (an
        Ed25519 verification per publish); a note another process writes is still verified."""
        notes[checkpoint.origin] = note
        self._save(notes)
        self._remember(note, checkpoint)

    def notes(self) -> dict[str, bytes]:
        """The kept signed notes by origin, exactly as received.

        Raises :class:`VerificationFailed` when the state file is unreadable or of an unknown
        format: a witness that lost its memory must not start afresh silently."""
        with self._locked():
            return self._load()

    def latest(self, origin: str) -> Checkpoint | None:
        """The newest kept checkpoint of ``origin``, verified again, or None.

        Raises :class:`VerificationFailed` as :meth:`notes` does, and when the kept checkpoint
        no longer verifies against this witness's keys."""
        with self._locked():
            note = self._load().get(origin)
            return self._open(note) if note is not None else None

    def observe(
        self,
        checkpoint: Checkpoint,
        note: bytes,
        *,
        proof: Sequence[bytes] = (),
        proof_from: int = 0,
        fetch: ProofFetcher | None = None,
        newest_since: int | None = None,
    ) -> None:
        """Keep ``checkpoint`` (already verified against this witness's keys) if it is newer than
        the kept one and consistent with it; :class:`ForkDetected` if it is not consistent (the
        rules, and the arguments, are :func:`ledger.advance`'s).

        Raises :class:`ForkDetected` for an inconsistent or rolled-back checkpoint,
        :class:`VerificationFailed` as :meth:`latest` does, and whatever ``fetch`` raises (for
        :class:`ExchangeClient`'s, :class:`Refused` or :class:`Unreachable`)."""
        with self._locked():
            notes = self._load()
            kept_note = notes.get(checkpoint.origin)
            kept = self._open(kept_note) if kept_note is not None else None
            try:
                newer = advance(
                    kept,
                    checkpoint,
                    proof=proof,
                    proof_from=proof_from,
                    fetch=fetch,
                    newest_since=newest_since,
                )
            except ForkError as exc:
                raise ForkDetected(str(exc)) from None
            if newer:
                self._keep(notes, checkpoint, note)
