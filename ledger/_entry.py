"""Ledger entries: what is recorded for every exchange, and its canonical bytes.

An entry never holds personal data: the data exchanged is represented by its SHA-256 digest, so
retention can purge alert contents while every entry stays verifiable (docs/ledger-format.md).
The entry hash is the RFC 6962 §2.1 leaf hash of the canonical bytes; it is both the chain link
(`prev` of the next entry) and the Merkle leaf.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from json.encoder import encode_basestring
from typing import Any

from ledger._canonical import MAX_SAFE_INTEGER, canonical_json, canonical_text, parse_canonical
from ledger._errors import EncodingError
from ledger._merkle import leaf_hash

FORMAT_VERSION = 1
GENESIS_PREV = "0" * 64
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_FIELDS = frozenset(
    {"v", "seq", "time", "action", "actor", "objects", "digest", "outcome", "meta", "prev"}
)

MetaValue = str | int | bool | list[str]


class Action(StrEnum):
    """Every kind of act the ledger records (docs/ledger-format.md, section 1.1)."""

    START = "START"
    PUBLISH = "PUBLISH"
    UPDATE = "UPDATE"
    CANCEL = "CANCEL"
    DELIVER = "DELIVER"
    ACK = "ACK"
    READ = "READ"
    SEARCH = "SEARCH"
    LEDGER_READ = "LEDGER_READ"
    REDACT = "REDACT"
    DENIED = "DENIED"


@dataclass(frozen=True)
class Actor:
    """Who acted: the principal's SPIFFE ID and the SHA-256 fingerprint of the certificate used."""

    id: str
    cert: str


@dataclass(frozen=True)
class Outcome:
    """``OK``, or the gRPC status name of a refusal with a reason free of personal data."""

    status: str = "OK"
    reason: str = ""

    def to_json(self) -> dict[str, str]:
        return (
            {"status": self.status, "reason": self.reason}
            if self.reason
            else {"status": self.status}
        )


OK = Outcome()


@dataclass(frozen=True)
class EntryDraft:
    """An entry before the writer gives it a place in the chain (seq, time, prev)."""

    action: Action
    actor: Actor
    objects: tuple[str, ...] = ()
    digest: str = ""
    outcome: Outcome = OK
    meta: Mapping[str, MetaValue] = field(default_factory=dict)

    def at(self, seq: int, time: datetime, prev: str) -> Entry:
        return Entry(seq, format_time(time), self.action, self.actor, self.objects,
                     self.digest, self.outcome, dict(self.meta), prev)  # fmt: skip

    def encode_at(self, seq: int, time: str, prev: str) -> bytes:
        """The bytes of ``at(seq, t, prev).encode()`` where ``time`` is ``format_time(t)``: the
        writer's path, which formats a work's time once and builds no :class:`Entry` when the
        fields have the plain types an entry is made of (anything else takes that path)."""
        meta = self.meta if type(self.meta) is dict else dict(self.meta)
        plain = _encode_plain(seq, time, self.action, self.actor, self.objects, self.digest,
                              self.outcome, meta, prev)  # fmt: skip
        if plain is not None:
            return plain
        return Entry(seq, time, self.action, self.actor, self.objects, self.digest,
                     self.outcome, meta, prev).encode()  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """A placed entry. ``encode()`` is the exact byte string that is hashed and stored."""

    seq: int
    time: str
    action: Action
    actor: Actor
    objects: tuple[str, ...]
    digest: str
    outcome: Outcome
    meta: Mapping[str, MetaValue]
    prev: str

    def to_json(self) -> dict[str, Any]:
        return {
            "v": FORMAT_VERSION,
            "seq": self.seq,
            "time": self.time,
            "action": self.action.value,
            "actor": {"id": self.actor.id, "cert": self.actor.cert},
            "objects": list(self.objects),
            "digest": self.digest,
            "outcome": self.outcome.to_json(),
            "meta": dict(self.meta),
            "prev": self.prev,
        }

    def encode(self) -> bytes:
        plain = _encode_plain(self.seq, self.time, self.action, self.actor, self.objects,
                              self.digest, self.outcome, self.meta, self.prev)  # fmt: skip
        return plain if plain is not None else canonical_json(self.to_json())

    @property
    def hash(self) -> bytes:
        return leaf_hash(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        """Parse canonical entry bytes strictly: any deviation is an :class:`EncodingError`."""
        obj = parse_canonical(data)
        if not isinstance(obj, dict) or set(obj) != _FIELDS:
            raise EncodingError("entry must be an object with exactly the fields of format v1")
        if obj["v"] != FORMAT_VERSION:
            raise EncodingError(f"unsupported entry format version {obj['v']!r}")
        seq, time, action, actor = obj["seq"], obj["time"], obj["action"], obj["actor"]
        outcome, objects, meta = obj["outcome"], obj["objects"], obj["meta"]
        _require(isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1, "seq")
        _require(isinstance(time, str) and _TIME.fullmatch(time) is not None, "time")
        _require(action in Action.__members__, "action")
        _require(
            isinstance(actor, dict)
            and set(actor) == {"id", "cert"}
            and all(isinstance(v, str) for v in actor.values()),
            "actor",
        )
        _require(isinstance(objects, list) and all(isinstance(o, str) for o in objects), "objects")
        _require(isinstance(obj["digest"], str), "digest")
        _require(
            isinstance(outcome, dict)
            and set(outcome) in ({"status"}, {"status", "reason"})
            and all(isinstance(v, str) for v in outcome.values()),
            "outcome",
        )
        _require(isinstance(meta, dict), "meta")
        _require(isinstance(obj["prev"], str) and _HEX64.fullmatch(obj["prev"]) is not None, "prev")
        return cls(
            seq=seq,
            time=time,
            action=Action(action),
            actor=Actor(actor["id"], actor["cert"]),
            objects=tuple(objects),
            digest=obj["digest"],
            outcome=Outcome(outcome["status"], outcome.get("reason", "")),
            meta=meta,
            prev=obj["prev"],
        )


def _encode_plain(  # noqa: PLR0917 - an entry's fields, in its order
    seq: int,
    time: str,
    action: Action,
    actor: Actor,
    objects: tuple[str, ...],
    digest: str,
    outcome: Outcome,
    meta: Mapping[str, MetaValue],
    prev: str,
) -> bytes | None:
    """The bytes of ``canonical_json(entry.to_json())``, written field by field in key order:
    a third of the cost (the writer encodes every entry). Only for fields of the plain types
    an entry is made of; anything else returns None, and the general path decides (and raises
    what it raises). tests/ledger/test_entry.py checks both paths agree."""
    texts = (time, actor.id, actor.cert, digest, outcome.status, outcome.reason, prev, *objects)
    if (
        type(seq) is not int
        or not -MAX_SAFE_INTEGER <= seq <= MAX_SAFE_INTEGER
        or type(action) is not Action
        or type(meta) is not dict
        or not all(type(text) is str for text in texts)
    ):
        return None
    meta_text = _plain_meta(meta) if meta else "{}"
    if meta_text is None:
        try:
            meta_text = canonical_text(meta)
        except EncodingError:
            return None
    q = encode_basestring  # the string form of canonical_json's encoder (ensure_ascii off)
    reason = f'"reason":{q(outcome.reason)},' if outcome.reason else ""
    text = (
        f'{{"action":"{action.value}","actor":{{"cert":{q(actor.cert)},"id":{q(actor.id)}'
        f'}},"digest":{q(digest)},"meta":{meta_text},"objects":['
        f'{",".join(map(q, objects))}],"outcome":{{{reason}"status":{q(outcome.status)}}},'
        f'"prev":{q(prev)},"seq":{seq},"time":{q(time)},"v":{FORMAT_VERSION}}}'
    )
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: the general path words the error
        return None


def _plain_meta(meta: Mapping[str, object]) -> str | None:
    """``canonical_text(meta)`` for ASCII keys and values that are strings, booleans, integers
    in the exact range or lists of strings (what the exchange writes), without its general
    walk; None for anything else, which the general path decides."""
    q = encode_basestring
    items = []
    for key, value in meta.items():
        if type(key) is not str or not key.isascii():
            return None
        if type(value) is str:
            text = q(value)
        elif type(value) is bool:
            text = "true" if value else "false"
        elif type(value) is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            text = int.__repr__(value)
        elif type(value) is list and all(type(item) is str for item in value):
            text = "[" + ",".join(map(q, value)) + "]"
        else:
            return None
        items.append((key, text))
    items.sort()  # by key: keys are distinct, so the texts are never compared
    return "{" + ",".join(f"{q(key)}:{text}" for key, text in items) + "}"


def _require(ok: bool, name: str) -> None:
    if not ok:
        raise EncodingError(f"entry field {name!r} is missing or malformed")


def format_time(time: datetime) -> str:
    """RFC 3339 UTC with exactly six fractional digits, so each instant has one spelling."""
    if time.tzinfo is None:
        raise EncodingError("entry time must be timezone-aware")
    return time.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # less "+00:00"
