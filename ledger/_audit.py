"""The questions internal affairs asks of a verified ledger: who accessed an alert, what a
principal did, what was refused, and what looks wrong.

Pure functions over decoded entries (no I/O), so the same answers come from the database, an
export file or the AuditLedger service. Alerts are named by id only: the ledger holds digests,
never personal data (docs/ledger-format.md, section 1.4).

Principals are strings here. Which agency a principal belongs to, and its kind, the caller reads
(:data:`Principals`; the CLI's is built on ``certs.SpiffeId.parse``): the syntax of a principal's
name has one home, in ``certs``, which the ledger does not import.
"""

from __future__ import annotations

import functools
import hashlib
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo

from ledger import _meta as meta
from ledger._entry import Action, Entry

#: acts that hand alert contents to someone, or show them
ACCESS = frozenset({Action.DELIVER, Action.READ, Action.SEARCH, Action.ACK})
#: acts that write an alert
WRITES = frozenset({Action.PUBLISH, Action.UPDATE, Action.CANCEL})


class PrincipalName(Protocol):
    """What the queries read of a principal: its agency, and its kind (``system`` or
    ``officer``). A ``certs.SpiffeId`` is one."""

    @property
    def agency(self) -> str: ...

    @property
    def kind(self) -> str: ...


#: The caller's reading of a principal (an entry's actor id): its agency and kind, or None when
#: it names no principal of an agency (an unknown peer, a certificate without a SPIFFE ID).
Principals = Callable[[str], PrincipalName | None]


def entry_time(entry: Entry) -> datetime:
    """The entry's time, timezone-aware (the writer writes RFC 3339 UTC)."""
    return datetime.fromisoformat(entry.time.replace("Z", "+00:00"))


def _once_each(principals: Principals) -> Principals:
    """``principals``, asked once per distinct principal: the queries ask for every entry."""
    return functools.cache(principals)


def _agency(principals: Principals, principal: str) -> str:
    """The agency of ``principal``, or "" when it names none."""
    name = principals(principal)
    return name.agency if name is not None else ""


def _kind(principals: Principals, principal: str) -> str:
    """The kind of ``principal``, or "" when it names none."""
    name = principals(principal)
    return name.kind if name is not None else ""


@dataclass(frozen=True)
class Addressing:
    """Who an alert thread was from and for, as its PUBLISH entry recorded it."""

    sender: str  # the principal that published it
    recipients: frozenset[str]  # agencies


class Threads:
    """Alert threads as the ledger describes them: which message belongs to which original
    (UPDATE and CANCEL entries name the new message and the original), and who each was for."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._original: dict[str, str] = {}
        self.addressing: dict[str, Addressing] = {}
        for entry in entries:
            if entry.action not in WRITES or entry.outcome.status != "OK" or not entry.objects:
                continue
            message = entry.objects[0].removeprefix("alert:")
            original = entry.objects[-1].removeprefix("alert:")
            self._original[message] = original
            if entry.action == Action.PUBLISH:
                to = entry.meta.get(meta.TO, [])
                self.addressing[message] = Addressing(
                    entry.actor.id,
                    frozenset(str(a) for a in to) if isinstance(to, list) else frozenset(),
                )

    def original(self, alert_id: str) -> str:
        return self._original.get(alert_id, alert_id)

    def messages(self, alert_id: str) -> set[str]:
        """Every message id of the thread ``alert_id`` belongs to."""
        original = self.original(alert_id)
        return {original} | {m for m, o in self._original.items() if o == original}

    def addressed_to(self, alert_id: str, agency: str, principals: Principals) -> bool | None:
        """Whether the thread was sent by or to ``agency``; None if its PUBLISH is not known."""
        found = self.addressing.get(self.original(alert_id))
        if found is None:
            return None
        return agency == _agency(principals, found.sender) or agency in found.recipients


def _alert_ids(entry: Entry) -> list[str]:
    return [o.removeprefix("alert:") for o in entry.objects if o.startswith("alert:")]


def related_shown(entry: Entry) -> list[tuple[str, tuple[str, ...]]]:
    """The alerts a READ or DELIVER entry showed through correlation, each with the kinds of
    identifier it shares (docs/ledger-format.md, 1.1, ``related``): (alert id, kinds)."""
    named = entry.meta.get(meta.RELATED) if entry.action in (Action.READ, Action.DELIVER) else None
    if not isinstance(named, list):
        return []
    found = []
    for item in named:
        alert, _, kinds = str(item).partition(" ")
        if alert.startswith("alert:"):
            found.append((alert.removeprefix("alert:"), tuple(filter(None, kinds.split(",")))))
    return found


def acted_by(entry: Entry) -> tuple[str, ...]:
    """The principals an entry says acted: its actor, or, for the exchange's DELIVER of one
    message to several subscribers at once, each principal it names (docs/ledger-format.md,
    1.1, ``received_by``)."""
    named = entry.meta.get(meta.RECEIVED_BY) if entry.action == Action.DELIVER else None
    if isinstance(named, list) and named:
        return tuple(dict.fromkeys(item.partition(" ")[0] for item in named))
    return (entry.actor.id,)


def who_accessed(entries: Sequence[Entry], alert_id: str) -> list[Entry]:
    """Every entry that wrote, delivered, showed (its content, or as a related alert through
    correlation), found, acknowledged or tried to reach any message of the thread ``alert_id``
    belongs to, in ledger order."""
    wanted = Threads(entries).messages(alert_id)
    return [
        e
        for e in entries
        if e.action in ACCESS | WRITES | {Action.DENIED}
        and wanted & {*_alert_ids(e), *(shown for shown, _ in related_shown(e))}
    ]


@dataclass(frozen=True)
class Shown:
    """An alert shown to principals as related to another (correlation): the entry, who saw it,
    the alerts they were reading or receiving beside it (the entry's objects), and the kinds of
    identifier the two share."""

    entry: Entry
    principals: tuple[str, ...]
    beside: tuple[str, ...]
    shared: tuple[str, ...]


def shown_related(entries: Sequence[Entry], alert_id: str) -> list[Shown]:
    """Every time the thread ``alert_id`` belongs to was shown through correlation (GetAlert,
    GetRelatedAlerts, a delivery that carried related alerts), in ledger order: what
    correlation revealed of it, and to whom."""
    wanted = Threads(entries).messages(alert_id)
    found = []
    for entry in entries:
        for shown, kinds in related_shown(entry):
            if shown in wanted and entry.outcome.status == "OK":
                found.append(Shown(entry, acted_by(entry), tuple(_alert_ids(entry)), kinds))
    return found


def activity(
    entries: Iterable[Entry],
    *,
    principals: Principals,
    principal: str = "",
    agency: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Entry]:
    """What one principal (or every principal of one agency) did in [since, until)."""
    principals = _once_each(principals)
    found = []
    for entry in entries:
        acted = acted_by(entry)
        if principal and principal not in acted:
            continue
        if agency and all(_agency(principals, who) != agency for who in acted):
            continue
        when = entry_time(entry)
        if (since and when < since) or (until and when >= until):
            continue
        found.append(entry)
    return found


@dataclass
class DeniedGroup:
    principal: str
    status: str
    reason: str
    count: int = 0
    first: str = ""
    last: str = ""
    methods: set[str] = field(default_factory=set)


def denied(entries: Iterable[Entry]) -> list[DeniedGroup]:
    """Refused attempts grouped by principal and reason, most frequent first."""
    groups: dict[tuple[str, str, str], DeniedGroup] = {}
    for entry in entries:
        if entry.action != Action.DENIED:
            continue
        key = (entry.actor.id, entry.outcome.status, entry.outcome.reason)
        group = groups.setdefault(key, DeniedGroup(*key, first=entry.time))
        group.count += 1
        group.last = entry.time
        group.methods.add(meta.method_name(str(entry.meta.get(meta.METHOD, ""))))
    return sorted(groups.values(), key=lambda g: (-g.count, g.principal, g.reason))


@dataclass(frozen=True)
class Rules:
    """Thresholds of :func:`anomalies`; the defaults suit a pilot and are meant to be tuned."""

    window: timedelta = timedelta(days=1)
    #: reads and searches in one window above ``factor`` times the usual level, and at least
    #: ``min_count`` of them
    factor: float = 5.0
    min_count: int = 20
    working_hours: tuple[time, time] = (time(7), time(19))
    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("Asia/Jakarta"))
    #: principals whose access outside working hours is flagged (gateways run all night)
    off_hours_kinds: frozenset[str] = frozenset({"officer"})


@dataclass(frozen=True)
class Anomaly:
    principal: str
    rule: str  # "volume", "off-hours" or "unaddressed-search"
    detail: str
    seqs: tuple[int, ...]


def _window(entry: Entry, rules: Rules) -> datetime:
    local = entry_time(entry).astimezone(rules.timezone)
    start = datetime.combine(local.date(), time(), rules.timezone)
    steps = (local - start) // rules.window
    return start + steps * rules.window


def _volume(lookups: Sequence[Entry], rules: Rules, principals: Principals) -> list[Anomaly]:
    counts: dict[str, Counter[datetime]] = defaultdict(Counter)
    seqs: dict[tuple[str, datetime], list[int]] = defaultdict(list)
    for entry in lookups:
        window = _window(entry, rules)
        counts[entry.actor.id][window] += 1
        seqs[entry.actor.id, window].append(entry.seq)
    found = []
    for principal, per_window in counts.items():
        agency = _agency(principals, principal)
        peers = [
            n
            for other, windows in counts.items()
            if other != principal and _agency(principals, other) == agency
            for n in windows.values()
        ]
        for window, count in sorted(per_window.items()):
            own = [n for w, n in per_window.items() if w != window]
            usual_own = statistics.median(own) if own else 0.0
            usual_agency = statistics.median(peers) if peers else 0.0
            if count >= rules.min_count and count > rules.factor * max(
                usual_own, usual_agency, 1.0
            ):
                found.append(
                    Anomaly(
                        principal,
                        "volume",
                        f"{count} reads and searches in the window from "
                        f"{window.isoformat()}; usually {usual_own:g} for this principal "
                        f"and {usual_agency:g} for its agency",
                        tuple(seqs[principal, window]),
                    )
                )
    return found


def _off_hours(lookups: Sequence[Entry], rules: Rules, principals: Principals) -> list[Anomaly]:
    start, end = rules.working_hours
    late: dict[str, list[int]] = defaultdict(list)
    for entry in lookups:
        if _kind(principals, entry.actor.id) not in rules.off_hours_kinds:
            continue
        local = entry_time(entry).astimezone(rules.timezone)
        if not start <= local.time() < end:
            late[entry.actor.id].append(entry.seq)
    return [
        Anomaly(
            principal,
            "off-hours",
            f"{len(seqs)} reads and searches outside {start:%H:%M}-{end:%H:%M} ({rules.timezone})",
            tuple(seqs),
        )
        for principal, seqs in late.items()
    ]


def _unaddressed(
    entries: Sequence[Entry], searches: Sequence[Entry], principals: Principals
) -> list[Anomaly]:
    threads = Threads(entries)
    hits: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for entry in searches:
        agency = _agency(principals, entry.actor.id)
        for alert in _alert_ids(entry):
            if threads.addressed_to(alert, agency, principals) is False:
                hits[entry.actor.id].append((entry.seq, alert))
    return [
        Anomaly(
            principal,
            "unaddressed-search",
            f"searches found {_count(len({a for _, a in found}), 'alert')} not addressed to "
            f"{_agency(principals, principal)}",
            tuple(sorted({s for s, _ in found})),
        )
        for principal, found in hits.items()
    ]


def normalise_identifier(kind: str, value: str) -> bytes:
    """``kind:value`` as the exchange indexes and digests a searched identifier
    (docs/ledger-format.md, section 1.4): names (of a person, of an organisation) case-folded
    with single spaces, other identifiers upper-case, no outer spaces; a person is
    ``name|birth-date``."""
    if kind == "person":
        name, _, born = value.partition("|")
        value = " ".join(name.casefold().split()) + "|" + born.strip()
    elif kind == "organisation":
        value = " ".join(value.casefold().split())
    else:
        value = value.strip().upper()
    return f"{kind}:{value}".encode()


def searches_for(entries: Iterable[Entry], kind: str, value: str) -> list[Entry]:
    """The SEARCH entries whose salted digest matches a candidate identifier."""
    candidate = normalise_identifier(kind, value)
    found = []
    for entry in entries:
        salt = entry.meta.get(meta.SALT)
        if entry.action != Action.SEARCH or entry.meta.get(meta.KIND) != kind:
            continue
        if (
            isinstance(salt, str)
            and hashlib.sha256(bytes.fromhex(salt) + candidate).hexdigest() == entry.digest
        ):
            found.append(entry)
    return found


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def anomalies(
    entries: Sequence[Entry], rules: Rules | None = None, *, principals: Principals
) -> list[Anomaly]:
    """Principals worth a look, each with the rule that fired and the entries behind it:
    reads and searches far above their own and their agency's usual level, reads and searches
    by officers outside working hours, and searches that found alerts not addressed to the
    searcher's agency (visible to it by TLP sharing, but not sent to it)."""
    rules = rules or Rules()
    principals = _once_each(principals)
    lookups = [
        e for e in entries if e.action in (Action.READ, Action.SEARCH) and e.outcome.status == "OK"
    ]
    searches = [e for e in lookups if e.action == Action.SEARCH]
    found = (
        _volume(lookups, rules, principals)
        + _off_hours(lookups, rules, principals)
        + _unaddressed(entries, searches, principals)
    )
    return sorted(found, key=lambda a: (a.principal, a.rule))
