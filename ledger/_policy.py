"""Witness policy: which witnesses' cosignatures make a checkpoint trustworthy (C2SP tlog-policy).

The file is line based::

    log <vkey> [<url>]                  the ledger's checkpoint key (optional here: Sinergi's
                                        clients already hold it as ledger.vkey)
    witness <name> <vkey> [<url>]       a witness's cosignature/v1 key, and where it listens
    group <name> all|any|<k> <name>...  at least k of the members witnessed
    quorum <name>|none                  what a checkpoint needs

Names are defined before they are used (no cycles); each may be a member once per group; exactly
one quorum line. A checkpoint is trusted when the log signed it and the quorum is met by the
witnesses whose cosignatures verify (tlog-policy, "What is a policy?").
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger._cosignature import Cosignature, CosignatureVerifier, cosignatures
from ledger._errors import NoteError, PolicyError, QuorumError
from ledger._note import Checkpoint, Verifier, _raw_public_key, open_checkpoint

NONE = "none"
#: Limits on what a policy may hold (tlog-policy, "Implementation limits": at least 32 each).
_MAX = 64
_BYTE_REFUSED = re.compile(rb"[^\x09\x0a\x20-\x7e\x80-\xff]")
#: tlog-policy, "Structure": items are separated by ASCII spaces and tabs only (str.split would
#: also split on U+00A0 and other Unicode spaces, which are opaque octets of a name here).
_WHITESPACE = re.compile(r"[ \t]+")
_THRESHOLD = re.compile(r"[1-9][0-9]*")


@dataclass(frozen=True)
class Witness:
    name: str  # the policy's own name for it
    verifier: CosignatureVerifier
    url: str | None


@dataclass(frozen=True)
class Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint signed by the log, with the cosignatures that verified, by policy name."""

    checkpoint: Checkpoint
    cosigners: dict[str, Cosignature]


@dataclass(frozen=True)
class WitnessPolicy:
    logs: tuple[Verifier, ...]
    log_urls: tuple[str | None, ...]
    witnesses: dict[str, Witness]
    groups: dict[str, Group]
    quorum: str

    @classmethod
    def parse(cls, text: bytes, source: str = "policy") -> WitnessPolicy:
        """Parse a policy file strictly; :class:`PolicyError` naming the line otherwise."""
        logs: list[Verifier] = []
        urls: list[str | None] = []
        witnesses: dict[str, Witness] = {}
        groups: dict[str, Group] = {}
        quorum: str | None = None
        for where, keyword, args in _lines(text, source):
            try:
                if keyword == "log" and len(args) in (1, 2):
                    log, url = _log(args, logs, where)
                    logs.append(log)
                    urls.append(url)
                elif keyword == "witness" and len(args) in (2, 3):
                    name = _new_name(args[0], witnesses, groups, where)
                    cosigner = CosignatureVerifier.from_vkey(args[1])
                    if _raw(cosigner) in (_raw(w.verifier) for w in witnesses.values()):
                        raise PolicyError(f"{where}: this witness key is listed twice")
                    witnesses[name] = Witness(name, cosigner, args[2] if len(args) == 3 else None)
                elif keyword == "group" and len(args) >= 3:
                    name = _new_name(args[0], witnesses, groups, where)
                    groups[name] = _group(name, args[1], args[2:], {*witnesses, *groups}, where)
                elif keyword == "quorum" and len(args) == 1:
                    if quorum is not None:
                        raise PolicyError(f"{where}: a second quorum line")
                    if args[0] != NONE and args[0] not in witnesses and args[0] not in groups:
                        raise PolicyError(f"{where}: quorum {args[0]!r} is not defined above")
                    quorum = args[0]
                else:
                    raise PolicyError(f"{where}: not a log, witness, group or quorum line")
            except NoteError as exc:
                raise PolicyError(f"{where}: {exc}") from None
        if quorum is None:
            raise PolicyError(f"{source}: no quorum line (write `quorum none` to need none)")
        if len(logs) > _MAX or len(witnesses) > _MAX or len(groups) > _MAX:
            raise PolicyError(f"{source}: more than {_MAX} logs, witnesses or groups")
        return cls(tuple(logs), tuple(urls), witnesses, groups, quorum)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WitnessPolicy:
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise PolicyError(f"witness policy {path}: {exc.strerror}") from None
        return cls.parse(text, str(path))

    @property
    def needs_cosignatures(self) -> bool:
        return self.quorum != NONE

    def satisfied(self, names: Iterable[str]) -> bool:
        """Whether witnesses ``names`` (policy names) meet the quorum."""
        cosigned = set(names)

        def met(name: str) -> bool:
            if name in self.witnesses:
                return name in cosigned
            group = self.groups[name]
            return sum(met(member) for member in group.members) >= group.threshold

        return self.quorum == NONE or met(self.quorum)

    def cosigners(self, note: bytes) -> dict[str, Cosignature]:
        """The policy's witnesses whose cosignatures on ``note`` verify, by policy name."""
        by_key = {(w.verifier.name, w.verifier.key_id): w.name for w in self.witnesses.values()}
        found = cosignatures(note, [w.verifier for w in self.witnesses.values()])
        return {by_key[c.name, c.key_id]: c for c in found}

    def check(self, note: bytes, logs: Sequence[Verifier] = ()) -> Cosigned:
        """Open ``note`` with the log keys (``logs``, else the policy's) and check its quorum:
        :class:`QuorumError` naming who cosigned and what was needed when it is not met."""
        checkpoint = open_checkpoint(note, list(logs or self.logs))
        cosigners = self.cosigners(note)
        if not self.satisfied(cosigners):
            have = ", ".join(sorted(cosigners)) or "no witness"
            raise QuorumError(
                f"checkpoint {checkpoint.origin} size {checkpoint.size} lacks its quorum: "
                f"cosigned by {have}; the policy needs {self.describe()}"
            )
        return Cosigned(checkpoint, cosigners)

    def describe(self, name: str | None = None) -> str:
        """The quorum (or group ``name``) in words: ``2 of (ia, police)``."""
        name = self.quorum if name is None else name
        if name == NONE:
            return "no cosignature"
        if name in self.witnesses:
            return name
        group = self.groups[name]
        members = ", ".join(self.describe(m) for m in group.members)
        return f"{group.threshold} of ({members})"


def parse_logs(text: bytes, source: str = "logs") -> tuple[tuple[Verifier, str | None], ...]:
    """The log keys (and URLs) of a file of ``log <vkey> [<url>]`` lines only, read with the
    policy's own rules (characters, spaces, comments, no key twice): the list of logs a witness
    trusts (C2SP tlog-witness: "configured with a list of supported log public keys").
    :class:`PolicyError` naming the line for anything else."""
    logs: list[Verifier] = []
    urls: list[str | None] = []
    for where, keyword, args in _lines(text, source):
        if keyword != "log" or len(args) not in (1, 2):
            raise PolicyError(f"{where}: not a `log <vkey> [<url>]` line")
        try:
            verifier, url = _log(args, logs, where)
        except NoteError as exc:
            raise PolicyError(f"{where}: {exc}") from None
        logs.append(verifier)
        urls.append(url)
    if len(logs) > _MAX:
        raise PolicyError(f"{source}: more than {_MAX} logs")
    return tuple(zip(logs, urls, strict=True))


def _lines(text: bytes, source: str) -> Iterator[tuple[str, str, list[str]]]:
    """(``source:line``, keyword, arguments) of each line that is not blank or a comment
    (tlog-policy, "Structure" and "Character set"). Octets above 0x7f are opaque: decoded with
    surrogateescape, so that two different byte strings stay two different names."""
    found = _BYTE_REFUSED.search(text)
    if found:
        number = text.count(b"\n", 0, found.start()) + 1
        raise PolicyError(
            f"{source}:{number}: byte 0x{found[0][0]:02x} is not allowed in a policy file"
        )
    for number, raw in enumerate(text.decode("utf-8", "surrogateescape").split("\n"), 1):
        words = [word for word in _WHITESPACE.split(raw) if word]
        if words and not words[0].startswith("#"):
            yield f"{source}:{number}", words[0], words[1:]


def _log(args: list[str], logs: list[Verifier], where: str) -> tuple[Verifier, str | None]:
    verifier = Verifier.from_vkey(args[0])
    if _raw(verifier) in (_raw(log) for log in logs):
        raise PolicyError(f"{where}: this log key is listed twice")
    return verifier, args[1] if len(args) == 2 else None


def _raw(verifier: Verifier | CosignatureVerifier) -> bytes:
    """The key material: tlog-policy calls two vkeys duplicates when they wrap the same public
    key, "even if they differ by key name and key id"."""
    return _raw_public_key(verifier.public_key())


def _new_name(
    name: str, witnesses: dict[str, Witness], groups: dict[str, Group], where: str
) -> str:
    if name == NONE:
        raise PolicyError(f"{where}: 'none' is reserved")
    if name in witnesses or name in groups:
        raise PolicyError(f"{where}: {name!r} is defined twice")
    return name


def _group(name: str, threshold: str, members: list[str], defined: set[str], where: str) -> Group:
    for member in members:
        if member == NONE:
            raise PolicyError(f"{where}: 'none' cannot be a group member")
        if member not in defined:
            raise PolicyError(f"{where}: group member {member!r} is not defined above")
    if len(set(members)) != len(members):
        raise PolicyError(f"{where}: a group lists a member twice")
    if threshold == "all":
        k = len(members)
    elif threshold == "any":
        k = 1
    elif _THRESHOLD.fullmatch(threshold):  # ASCII decimal: str.isdigit() takes "²" and "٣"
        k = int(threshold)
        if not 1 <= k <= len(members):
            raise PolicyError(f"{where}: threshold {k} is not between 1 and {len(members)}")
    else:
        raise PolicyError(f"{where}: threshold {threshold!r} is not all, any or a number")
    return Group(name, k, tuple(members))
