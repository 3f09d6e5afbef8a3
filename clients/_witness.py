"""Witnessing: a client remembers the newest checkpoint it verified and checks every newer one.

A database administrator who holds the signing key could rewrite history and sign it anew; the
next client that connects catches it, because the new checkpoint is not consistent (RFC 9162
§2.1.4) with the one it kept. That is the same defence Certificate Transparency clients use.
With a witness policy, the checkpoint kept is the newest one with its witnesses' quorum, which
the witnesses vouch for too. One ledger is kept per ledger key: a checkpoint of another origin
under the same key is another ledger, refused until someone trusts it on purpose.

The rules are :mod:`ledger`'s (:func:`ledger.advance`, :func:`ledger.keeps`,
:func:`ledger.pinned_elsewhere`); this module keeps the state: a small JSON file per identity,
locked across threads and processes, whose checkpoints are verified again when loaded.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients._errors import VerificationFailed
from clients._statefile import locked, replace
from ledger import (
    Checkpoint,
    ForkError,
    LedgerError,
    ProofFetcher,
    Verifier,
    WitnessPolicy,
    advance,
    keeps,
    open_checkpoint,
    pinned_elsewhere,
    under_key,
)

#: Version 2 added ``replaced``; version 1 files (checkpoints only) are read, and written as 2.
STATE_VERSION = 2
_READABLE = (1, STATE_VERSION)


class ForkDetected(VerificationFailed):
    """The exchange showed a checkpoint inconsistent with one this client verified before."""


class QuorumFailed(VerificationFailed):
    """A checkpoint lacks the cosignatures the witness policy needs: the witnesses did not
    vouch for it, so it proves nothing to anyone but the exchange."""


class OtherLedger(VerificationFailed):
    """The exchange showed a checkpoint of another ledger under the ledger key this client
    witnesses: the exchange's ledger was made anew (a deleted development database), or
    someone shows this client a ledger the others do not see. Refused until trusted on purpose
    (`sinergi ledger trust`)."""

    def __init__(
        self,
        origin: str,
        kept: Checkpoint,
        *,
        identity: str = "DIR",
        server: str = "ADDR",
        action: str | None = None,
        obj: str | None = None,
        seq: int | None = None,
    ) -> None:
        self.origin, self.kept = origin, kept
        self.identity, self.server = identity, server
        self.action, self.obj, self.seq = action, obj, seq
        written = (
            f"the write happened: {action} of {obj} is entry {seq} of ledger {origin}; but "
            if seq is not None
            else ""
        )
        super().__init__(
            f"{written}ledger {origin} is not the ledger {kept.origin} witnessed before (size "
            f"{kept.size}, root {kept.root.hex()}). If the exchange's ledger was replaced on "
            f"purpose (a deleted development database), trust the new one: sinergi ledger trust "
            f"{origin} --identity {identity} --server {server}; otherwise report it to internal "
            "affairs."
        )

    def after(
        self,
        *,
        identity: str,
        server: str,
        action: str | None = None,
        obj: str | None = None,
        seq: int | None = None,
    ) -> OtherLedger:
        """The same refusal, saying where to trust from and, for a write, what was written."""
        return OtherLedger(
            self.origin,
            self.kept,
            identity=identity,
            server=server,
            action=action,
            obj=obj,
            seq=seq,
        )

    @property
    def details(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "origin": self.origin,
            "kept_origin": self.kept.origin,
            "kept_size": self.kept.size,
            "kept_root": self.kept.root.hex(),
        }
        if self.seq is not None:
            found["seq"] = self.seq
        if self.obj is not None and self.obj.startswith("alert:"):
            found["alert_id"] = self.obj.removeprefix("alert:")
        return found


@dataclass(frozen=True)
class Kept:
    """A kept checkpoint, verified, with its signed note as received (cosignatures included)
    and whether the witness policy's quorum cosigned it (False without a policy)."""

    checkpoint: Checkpoint
    note: bytes
    witnessed: bool


@dataclass(frozen=True)
class Replaced:
    """A kept checkpoint that `sinergi ledger trust` replaced: the evidence, kept."""

    origin: str
    size: int
    root: bytes
    note: bytes
    by: str  # the origin trusted instead
    time: float  # POSIX seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "note": base64.b64encode(self.note).decode(),
            "replaced_by": self.by,
            "time": self.time,
        }

    @classmethod
    def from_json(cls, data: object) -> Replaced:
        if not isinstance(data, dict):
            raise ValueError("a replaced record is an object")
        return cls(
            str(data["origin"]),
            int(data["size"]),
            bytes.fromhex(str(data["root"])),
            base64.b64decode(str(data["note"])),
            str(data["replaced_by"]),
            float(data["time"]),
        )


@dataclass
class _State:
    notes: dict[str, bytes] = field(default_factory=dict)
    replaced: list[Replaced] = field(default_factory=list)

    def copy(self) -> _State:
        return _State(dict(self.notes), list(self.replaced))


class Witness:
    """The newest verified checkpoint per ledger origin, kept in ``path``; with ``policy``
    (one whose quorum needs cosignatures), the newest one with its quorum."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        verifiers: Sequence[Verifier],
        policy: WitnessPolicy | None = None,
    ) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_suffix(".lock")
        self._verifiers = list(verifiers)
        self.policy = policy if policy is not None and policy.needs_cosignatures else None
        self._lock = threading.Lock()
        # The file as last read or written, by (inode, size, mtime): reread only when another
        # process (or another Witness) replaced it. Every publish consults the state, and reading,
        # parsing and re-verifying the kept checkpoint each time cost more than the publish did.
        self._stamp: tuple[int, int, int] | None = None
        self._state = _State()
        # kept notes already verified, by note: the checkpoint and whether it has its quorum
        self._opened: dict[bytes, tuple[Checkpoint, bool]] = {}

    def _locked(self) -> AbstractContextManager[None]:
        """Threads of this process and other processes using the same identity, one at a time."""
        return locked(self._lock_path, self._lock)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self) -> _State:
        stamp = self._file_stamp()
        if stamp is not None and stamp == self._stamp:
            return self._state.copy()
        state = self._read()
        self._stamp, self._state = stamp, state.copy()
        return state

    def _read(self) -> _State:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _State()
        except (OSError, ValueError) as exc:
            raise VerificationFailed(f"witness state {self.path} is unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("version") not in _READABLE:
            raise VerificationFailed(f"witness state {self.path} has an unknown format")
        try:
            notes = {o: base64.b64decode(n) for o, n in data.get("checkpoints", {}).items()}
            replaced = [Replaced.from_json(r) for r in data.get("replaced", [])]
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise VerificationFailed(f"witness state {self.path} is unreadable: {exc}") from None
        return _State(notes, replaced)

    def _save(self, state: _State) -> None:
        data: dict[str, Any] = {
            "version": STATE_VERSION,
            "checkpoints": {
                o: base64.b64encode(n).decode() for o, n in sorted(state.notes.items())
            },
        }
        if state.replaced:
            data["replaced"] = [r.to_json() for r in state.replaced]
        replace(self.path, json.dumps(data) + "\n")  # one line: the C encoder, on every publish
        self._stamp, self._state = self._file_stamp(), state.copy()

    def _open(self, note: bytes) -> Kept:
        opened = self._opened.get(note)
        if opened is None:
            try:
                checkpoint = open_checkpoint(note, self._verifiers)
                witnessed = self._has_quorum(note)
            except LedgerError as exc:
                raise VerificationFailed(
                    f"witness state {self.path}: kept checkpoint: {exc}"
                ) from None
            opened = (checkpoint, witnessed)
            self._remember(note, *opened)
        return Kept(opened[0], note, opened[1])

    def _has_quorum(self, note: bytes) -> bool:
        """Whether the policy's quorum cosigned ``note``; NoteError for a bad cosignature."""
        return self.policy is not None and self.policy.satisfied(self.policy.cosigners(note))

    def _remember(self, note: bytes, checkpoint: Checkpoint, witnessed: bool) -> None:
        if len(self._opened) >= 16:
            self._opened.clear()
        self._opened[note] = (checkpoint, witnessed)

    def _keep(self, state: _State, checkpoint: Checkpoint, note: bytes, witnessed: bool) -> None:
        """Keep ``note`` as the newest for its origin. It was verified before it was observed,
        so the next publish's look at the kept state need not verify its signature again (an
        Ed25519 verification per publish); a note another process writes is still verified."""
        state.notes[checkpoint.origin] = note
        self._save(state)
        self._remember(note, checkpoint, witnessed)

    def _pin(self, state: _State, origin: str) -> None:
        """:class:`OtherLedger` if another ledger under the same key is kept."""
        for verifier in self._verifiers:
            other = pinned_elsewhere(state.notes, origin, verifier.name)
            if other is not None:
                raise OtherLedger(origin, self._open(state.notes[other]).checkpoint)

    def notes(self) -> dict[str, bytes]:
        """The kept signed notes by origin, exactly as received.

        Raises :class:`VerificationFailed` when the state file is unreadable or of an unknown
        format: a witness that lost its memory must not start afresh silently."""
        with self._locked():
            return self._load().notes

    def latest(self, origin: str) -> Checkpoint | None:
        """The newest kept checkpoint of ``origin``, verified again, or None.

        Raises :class:`VerificationFailed` as :meth:`notes` does, and when the kept checkpoint
        no longer verifies against this witness's keys."""
        with self._locked():
            note = self._load().notes.get(origin)
            return self._open(note).checkpoint if note is not None else None

    def pinned(self, key_name: str) -> Kept | None:
        """The kept checkpoint of the ledger signed by the key named ``key_name`` (whatever its
        origin under that name), or None: what a write's witnessed size is taken from.

        Raises :class:`VerificationFailed` as :meth:`latest` does."""
        with self._locked():
            state = self._load()
            found = sorted(o for o in state.notes if under_key(o, key_name))
            if not found:
                return None
            # The newest of several (a state kept before origins were pinned): the others are
            # refused as other ledgers when shown.
            kept = [self._open(state.notes[o]) for o in found]
            return max(kept, key=lambda k: k.checkpoint.size)

    def replaced(self) -> list[Replaced]:
        """The kept checkpoints that :meth:`trust` replaced, oldest first."""
        with self._locked():
            return self._load().replaced

    def observe(
        self,
        checkpoint: Checkpoint,
        note: bytes,
        *,
        proof: Sequence[bytes] = (),
        proof_from: int = 0,
        fetch: ProofFetcher | None = None,
        newest_since: int | None = None,
        cosigned: tuple[Checkpoint, bytes] | None = None,
    ) -> None:
        """Check ``checkpoint`` (already verified against this witness's keys) against the kept
        one of its ledger, and keep what :func:`ledger.keeps` says: without a policy, the
        newest; with one, the newest with its quorum, ``cosigned`` (checkpoint and note, shown
        consistent with ``checkpoint`` by the caller). The consistency rules, and the other
        arguments, are :func:`ledger.advance`'s.

        Raises :class:`OtherLedger` for a checkpoint of another ledger under a key whose ledger
        is kept, :class:`ForkDetected` for an inconsistent or rolled-back checkpoint,
        :class:`VerificationFailed` as :meth:`latest` does, and whatever ``fetch`` raises (for
        :class:`ExchangeClient`'s, :class:`Refused` or :class:`Unreachable`)."""
        with self._locked():
            state = self._load()
            self._pin(state, checkpoint.origin)
            kept_note = state.notes.get(checkpoint.origin)
            kept = self._open(kept_note) if kept_note is not None else None
            try:
                newer = advance(
                    kept.checkpoint if kept else None,
                    checkpoint,
                    proof=proof,
                    proof_from=proof_from,
                    fetch=fetch,
                    newest_since=newest_since,
                )
            except ForkError as exc:
                raise ForkDetected(str(exc)) from None
            if self.policy is None:
                if newer:
                    self._keep(state, checkpoint, note, False)
                return
            chosen = keeps(
                kept.checkpoint if kept else None,
                kept.witnessed if kept else False,
                checkpoint,
                cosigned[0] if cosigned else None,
            )
            if chosen is not None and cosigned is not None and chosen is cosigned[0]:
                self._keep(state, cosigned[0], cosigned[1], True)
            elif chosen is not None:
                self._keep(state, checkpoint, note, self._quorum_of(note))

    def _quorum_of(self, note: bytes) -> bool:
        try:
            return self._has_quorum(note)
        except LedgerError as exc:
            raise VerificationFailed(f"checkpoint: {exc}") from None

    def trust(self, checkpoint: Checkpoint, note: bytes, key_name: str) -> Kept | None:
        """Keep ``checkpoint`` (verified, and with a policy its quorum checked) as the ledger of
        the key named ``key_name``, replacing the kept one of another origin, which is recorded
        in the state's ``replaced`` history; returns it, or None when there was none. A
        checkpoint of the kept origin is observed as usual instead.

        Raises :class:`VerificationFailed` as :meth:`latest` does."""
        with self._locked():
            state = self._load()
            others = [o for o in state.notes if o != checkpoint.origin and under_key(o, key_name)]
            replaced: Kept | None = None
            for origin in sorted(others):
                old = self._open(state.notes.pop(origin))
                if replaced is None or old.checkpoint.size > replaced.checkpoint.size:
                    replaced = old
                state.replaced.append(
                    Replaced(
                        origin,
                        old.checkpoint.size,
                        old.checkpoint.root,
                        old.note,
                        checkpoint.origin,
                        time.time(),
                    )
                )
            if checkpoint.origin not in state.notes:
                self._keep(state, checkpoint, note, self._quorum_of(note))
                return replaced
            if others:
                self._save(state)
        self.observe(checkpoint, note, cosigned=(checkpoint, note) if self.policy else None)
        return replaced
