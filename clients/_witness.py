"""Witnessing: a client remembers the newest checkpoint it verified and checks every newer one.

A database administrator who holds the signing key could rewrite history and sign it anew; the
next client that connects catches it, because the new checkpoint is not consistent (RFC 9162
§2.1.4) with the one it kept. That is the same defence Certificate Transparency clients use.
The state is a small JSON file per identity; checkpoints in it are verified again when loaded.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from clients._errors import VerificationFailed
from ledger import Checkpoint, LedgerError, Verifier, open_checkpoint, verify_consistency

STATE_VERSION = 1

#: Fetches the consistency proof between two sizes, smaller first, from the exchange.
ProofFetcher = Callable[[int, int], Sequence[bytes]]


class ForkDetected(VerificationFailed):
    """The exchange showed a checkpoint inconsistent with one this client verified before."""


def describe(cp: Checkpoint) -> str:
    return f"{cp.origin} size {cp.size} root {cp.root.hex()}"


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
        """The kept signed notes by origin, exactly as received."""
        with self._locked():
            return self._load()

    def latest(self, origin: str) -> Checkpoint | None:
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
        """Accept ``checkpoint`` (already verified against this witness's keys) if consistent with
        the kept one.

        ``proof`` is a consistency proof between ``proof_from`` and ``checkpoint.size`` (as a
        receipt carries it); when it does not connect to the kept checkpoint, ``fetch`` gets one
        that does. ``newest_since`` marks a checkpoint presented as the newest, asked for when the
        kept checkpoint had that size: a smaller one is a rollback. One between that size and the
        kept one is not: the kept one arrived meanwhile (another thread's or process's receipt),
        and the answer must then be a prefix of it, which a consistency proof shows.
        """
        with self._locked():
            notes = self._load()
            kept_note = notes.get(checkpoint.origin)
            if kept_note is None:
                self._keep(notes, checkpoint, note)
                return
            kept = self._open(kept_note)
            if newest_since is not None and checkpoint.size < newest_since:
                raise ForkDetected(
                    f"the exchange's newest checkpoint ({describe(checkpoint)}) is older than one "
                    f"already verified ({describe(kept)}): the ledger was rolled back"
                )
            if checkpoint.size == kept.size:
                if checkpoint.root != kept.root:
                    raise ForkDetected(
                        f"two different ledgers: {describe(checkpoint)}, "
                        f"verified before: {describe(kept)}"
                    )
                return
            old, new = sorted((kept, checkpoint), key=lambda cp: cp.size)
            if proof_from != kept.size or not proof:
                if fetch is None:
                    raise ForkDetected(
                        f"no consistency proof between {describe(old)} and {describe(new)}"
                    )
                proof = fetch(old.size, new.size)
            try:
                verify_consistency(old.size, new.size, old.root, new.root, list(proof))
            except LedgerError as exc:
                raise ForkDetected(
                    f"checkpoint {describe(new)} is not consistent with {describe(old)}: "
                    f"history was rewritten ({exc})"
                ) from None
            if checkpoint.size > kept.size:
                self._keep(notes, checkpoint, note)
