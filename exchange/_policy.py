"""The exchange's access policy: deny by default, per agency, role, identity and alert category.

Roles live here, not in certificates (docs/architecture.md, "Trust boundaries"), so they change
without reissuing. An agency's roles bound what any of its identities may do; within them, what
each kind of identity (its gateway systems, its officers) or a named one may call is granted
per agency (:meth:`Policy.authorize_call`, checked by the guard before any servicer runs), so
a person's certificate does not carry the whole agency's power. The SHA-256 of the policy file
is recorded in the ledger at every server start, so a policy change is visible to auditors.
"""

from __future__ import annotations

import functools
import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from certs import KINDS, SpiffeId
from exchange._errors import ConfigError, InvalidArgument, PermissionDenied
from sinergi.v1 import alert_pb2

ROLES = frozenset({"publisher", "recipient", "searcher", "auditor"})
#: What an identity may be granted, each naming the methods it allows (docs/api.md, "Roles"),
#: in the order messages list them.
ACTIONS: dict[str, tuple[str, ...]] = {
    "read": (
        "GetAlert",
        "ListAlerts",
        "ListAcknowledgements",
        "GetAlertProof",
        "GetRelatedAlerts",
    ),
    "search": ("SearchAlerts",),
    "subscribe": ("Subscribe",),
    "acknowledge": ("Acknowledge",),
    "publish": ("Publish",),
    "update": ("Update",),
    "cancel": ("Cancel",),
    "audit": ("GetEntries", "GetEntryPages", "GetInclusionProof"),
    "monitor": ("GetEnvelopes",),
}
#: The actions each agency role allows: the bound of what any identity of the agency may do.
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "publisher": frozenset({"publish", "update", "cancel", "read"}),
    "recipient": frozenset({"subscribe", "acknowledge", "read", "monitor"}),
    "searcher": frozenset({"search", "read"}),
    "auditor": frozenset({"audit"}),
}
#: What a kind of identity may do when the policy does not say: a system (the agency's gateway)
#: whatever its agency's roles allow; an officer (a person) reads, searches, acknowledges in the
#: field and, in an auditing agency, audits. Publishing, updating and cancelling speak for the
#: agency: the gateway's, or a role the policy grants an officer.
DEFAULT_GRANTS: dict[str, frozenset[str]] = {
    "system": frozenset(ACTIONS),
    "officer": frozenset({"read", "search", "acknowledge", "audit"}),
}
#: Methods any identity of a member agency may call: the ledger's checkpoints and consistency
#: proofs are hashes only, and every client must be able to check the ledger was not rewritten.
WITNESS_METHODS = ("GetCheckpoint", "GetConsistencyProof")
SERVICES = ("sinergi.v1.Exchange", "sinergi.v1.AuditLedger")
_ACTION_OF = {method: action for action, methods in ACTIONS.items() for method in methods}
CATEGORIES = frozenset(
    name.removeprefix("CATEGORY_")
    for name in alert_pb2.Category.keys()  # noqa: SIM118 - a protobuf enum, not a dict
    if name != "CATEGORY_UNSPECIFIED"
)
AGENCY_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
DEFAULT_POLICY = Path(__file__).parent / "data" / "dev-policy.toml"


@dataclass(frozen=True)
class AgencyPolicy:
    name: str
    display: str
    roles: frozenset[str]
    publish: frozenset[str]
    receive: frozenset[str]
    #: agencies that may also see the TLP:AMBER alerts addressed to this one (TLP 2.0: AMBER may
    #: be shared on a need-to-know basis; the policy says with whom)
    amber_shares_with: frozenset[str] = frozenset()
    #: actions granted per kind of identity ("system", "officer"), before the roles' bound
    kinds: Mapping[str, frozenset[str]] = field(default_factory=lambda: dict(DEFAULT_GRANTS))
    #: actions granted to named identities ("officer/budi"), instead of their kind's
    principals: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @functools.cached_property
    def bound(self) -> frozenset[str]:
        """Every action the agency's roles allow."""
        return frozenset().union(*(ROLE_ACTIONS[role] for role in self.roles))

    def granted(self, who: SpiffeId) -> tuple[str, frozenset[str]]:
        """Whom the policy's grant names (``officers``, ``officer/budi``) and what ``who`` may
        do by it, within the agency's roles."""
        named = f"{who.kind}/{who.name}"
        if named in self.principals:
            return named, self.principals[named] & self.bound
        return f"{who.kind}s", self.kinds.get(who.kind, frozenset()) & self.bound


@dataclass(frozen=True)
class Policy:
    agencies: Mapping[str, AgencyPolicy]
    digest: str
    #: days an alert's personal data is kept after it stops being in force, per category
    retention: Mapping[str, int] = field(default_factory=dict)
    default_retention: int = 365

    def retention_days(self, category: str) -> int:
        return self.retention.get(category, self.default_retention)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        data = Path(path).read_bytes()
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"policy {path}: {exc}") from None
        return cls.parse(doc, hashlib.sha256(data).hexdigest(), str(path))

    @classmethod
    def parse(cls, doc: Mapping[str, object], digest: str, source: str = "policy") -> Policy:
        _keys(doc, {"version", "agencies", "retention"}, source)
        if doc.get("version") != 1:
            raise ConfigError(f"{source}: 'version' must be 1")
        agencies_doc = doc.get("agencies")
        if not isinstance(agencies_doc, Mapping) or not agencies_doc:
            raise ConfigError(f"{source}: [agencies] must name at least one agency")
        agencies = {}
        for name, entry in agencies_doc.items():
            where = f"{source}: agencies.{name}"
            if not AGENCY_NAME.fullmatch(name):
                raise ConfigError(f"{where}: not a valid agency name")
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{where}: must be a table")
            allowed = {"display", "roles", "publish", "receive", "amber_shares_with"}
            _keys(entry, allowed | {"systems", "officers", "principals"}, where)
            roles = _names(entry.get("roles", []), ROLES, f"{where}.roles")
            shares = entry.get("amber_shares_with", [])
            known = frozenset(agencies_doc)
            shares_with = _names(shares, known - {name}, f"{where}.amber_shares_with")
            agencies[name] = AgencyPolicy(
                name=name,
                display=str(entry.get("display", name)),
                roles=roles,
                publish=_categories(entry.get("publish", []), f"{where}.publish"),
                receive=_categories(entry.get("receive", []), f"{where}.receive"),
                amber_shares_with=shares_with,
                kinds={
                    kind: _grants(entry[f"{kind}s"], f"{where}.{kind}s")
                    if f"{kind}s" in entry
                    else DEFAULT_GRANTS[kind]
                    for kind in KINDS
                },
                principals=_principals(entry.get("principals", {}), f"{where}.principals"),
            )
        default, retention = _retention(doc.get("retention", {}), f"{source}: retention")
        return cls(agencies, digest, retention, default)

    def _agency(self, agency: str, role: str) -> AgencyPolicy:
        policy = self.agencies.get(agency)
        if policy is None:
            raise PermissionDenied(f"agency {agency!r} is not a member of this exchange")
        if role not in policy.roles:
            raise PermissionDenied(f"agency {agency!r} does not have the {role} role")
        return policy

    def authorize_call(self, who: SpiffeId, method: str) -> None:
        """Refuse a call that ``who``'s kind or name is not granted, before the servicer runs.

        ``method`` is the full path (``/sinergi.v1.Exchange/Publish``). A method the agency's
        roles do not allow at all is left to the servicer, which refuses it with the role it
        lacks; an unknown method of the exchange's services is refused (deny by default)."""
        service, _, name = method.lstrip("/").partition("/")
        agency = self.agencies.get(who.agency)
        if agency is None:
            raise PermissionDenied(f"agency {who.agency!r} is not a member of this exchange")
        if name in WITNESS_METHODS and service == "sinergi.v1.AuditLedger":
            return
        action = _ACTION_OF.get(name) if service in SERVICES else None
        if action is None:
            raise PermissionDenied(f"the policy grants no one {method}")
        if action not in agency.bound:
            return  # the servicer refuses it, naming the role the agency lacks
        whom, may = agency.granted(who)
        if action not in may:
            listed = ", ".join(a for a in ACTIONS if a in may) or "nothing"
            raise PermissionDenied(
                f"{who.agency} {who.kind} {who} may not call {name}: "
                f"the policy gives {whom} of {who.agency}: {listed}"
            )

    def recipients_of(self, category: str, sender: str) -> list[str]:
        """Every member agency, other than the sender, that may receive ``category``: what the
        recipient list ``["*"]`` stands for."""
        return sorted(
            name
            for name, agency in self.agencies.items()
            if name != sender and "recipient" in agency.roles and category in agency.receive
        )

    def authorize_publish(self, agency: str, category: str, recipients: Iterable[str]) -> None:
        """Refuse unless ``agency`` may send ``category`` and every recipient may receive it."""
        sender = self._agency(agency, "publisher")
        if category not in sender.publish:
            raise PermissionDenied(f"agency {agency!r} may not publish {category} alerts")
        unknown = [
            (f"alert.recipients[{i}]", f"{name!r} is not a recipient agency of this exchange")
            for i, name in enumerate(recipients)
            if "recipient" not in getattr(self.agencies.get(name), "roles", ())
        ]
        if unknown:
            raise InvalidArgument("unknown recipient", unknown)
        refused = [name for name in recipients if category not in self.agencies[name].receive]
        if refused:
            raise PermissionDenied(f"{', '.join(refused)} may not receive {category} alerts")

    def authorize_sender(self, agency: str) -> AgencyPolicy:
        """Update and Cancel: a publisher (which alerts it may touch is checked per alert)."""
        return self._agency(agency, "publisher")

    def authorize_read(self, agency: str) -> AgencyPolicy:
        """Reading alerts by id or listing them: any member that exchanges alerts."""
        policy = self.agencies.get(agency)
        if policy is None or not policy.roles & {"publisher", "recipient", "searcher"}:
            raise PermissionDenied(f"agency {agency!r} may not read alerts")
        return policy

    def authorize_search(self, agency: str) -> AgencyPolicy:
        return self._agency(agency, "searcher")

    def amber_sharers(self, agency: str) -> frozenset[str]:
        """Agencies whose TLP:AMBER alerts ``agency`` may see (they share with it)."""
        return frozenset(
            name for name, policy in self.agencies.items() if agency in policy.amber_shares_with
        )

    def authorize_receive(self, agency: str) -> AgencyPolicy:
        return self._agency(agency, "recipient")

    def authorize_audit(self, agency: str) -> AgencyPolicy:
        return self._agency(agency, "auditor")

    def authorize_member(self, agency: str) -> AgencyPolicy:
        """Any role: what every member may do (witness the ledger's consistency)."""
        policy = self.agencies.get(agency)
        if policy is None or not policy.roles:
            raise PermissionDenied(f"agency {agency!r} is not a member of this exchange")
        return policy


def _grants(value: object, where: str) -> frozenset[str]:
    """A list of actions and roles (a role stands for its actions); ``["*"]`` is every action."""
    if value == ["*"]:
        return frozenset(ACTIONS)
    names = _names(value, frozenset(ACTIONS) | ROLES, where)
    return frozenset().union(*(ROLE_ACTIONS.get(n, frozenset({n})) for n in names))


def _principals(value: object, where: str) -> dict[str, frozenset[str]]:
    """``"<kind>/<name>" = [actions and roles]``: what a named identity of the agency may do."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table")
    found = {}
    for key, grants in value.items():
        kind, _, name = key.partition("/")
        if kind not in KINDS or not AGENCY_NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: {key!r} is not <kind>/<name> of a SPIFFE ID "
                f'(kind {" or ".join(KINDS)}), e.g. "officer/budi"'
            )
        found[key] = _grants(grants, f"{where}.{key!r}")
    return found


def _retention(value: object, where: str) -> tuple[int, dict[str, int]]:
    """``[retention]``: ``default_days`` and one ``<CATEGORY> = days`` per category to differ."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table")
    _keys(value, {"default_days", *CATEGORIES}, where)
    days = {}
    for key, n in value.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ConfigError(f"{where}.{key}: must be a whole number of days, 0 or more")
        days[key] = n
    default = days.pop("default_days", 365)
    return default, days


def _keys(doc: Mapping[str, object], allowed: set[str], where: str) -> None:
    for key in doc:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
            )


def _names(value: object, allowed: frozenset[str], where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    for v in value:
        if v not in allowed:
            raise ConfigError(
                f"{where}: unknown value {v!r} (allowed: {', '.join(sorted(allowed))})"
            )
    return frozenset(value)


def _categories(value: object, where: str) -> frozenset[str]:
    if value == ["*"]:
        return CATEGORIES
    return _names(value, CATEGORIES, where)
