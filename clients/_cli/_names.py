"""What a person reads for an enum value (docs/i18n.md): in English its own name, which is also
what the flags take (``PASSPORT_HOLD``); in another language the name officers use for it
(``Cekal paspor``). Display only: flags, ``--json`` and the ledger keep the enum's names.

Each name is marked below for the catalog under its enum's context; a new enum value needs a
line here, and tests/clients/test_i18n.py fails until it has one and a translation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clients._i18n import NP_, pgettext
from sinergi.v1 import alert_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

#: Enum, the prefix its values' names carry, and the catalog context of their display names.
ENUMS: dict[str, tuple[_EnumTypeWrapper[Any], str]] = {
    "category": (alert_pb2.Category, "CATEGORY_"),
    "tlp": (alert_pb2.Tlp, "TLP_"),
    "response": (alert_pb2.Response, "RESPONSE_"),
    "state": (alert_pb2.AlertState, "ALERT_STATE_"),
    "message type": (alert_pb2.MessageType, "MESSAGE_TYPE_"),
    "status": (alert_pb2.Status, "STATUS_"),
    "severity": (alert_pb2.Severity, "SEVERITY_"),
    "urgency": (alert_pb2.Urgency, "URGENCY_"),
    "certainty": (alert_pb2.Certainty, "CERTAINTY_"),
}

_MARKED = (
    NP_("category", "UNSPECIFIED"),
    NP_("category", "TRAFFICKING_SUSPECT"),
    NP_("category", "TRAFFICKING_VICTIM"),
    NP_("category", "NON_PROCEDURAL_MIGRANT_WORKER"),
    NP_("category", "PASSPORT_HOLD"),
    NP_("category", "ILLEGAL_RECRUITER"),
    NP_("category", "PEOPLE_SMUGGLING"),
    NP_("category", "IMEI_FRAUD"),
    NP_("category", "FOREIGN_NATIONAL_ACTIVITY"),
    NP_("category", "WHISTLEBLOWER_REPORT"),
    NP_("category", "OTHER"),
    # TLP 2.0 labels stay as they are in every language; the translation adds what they mean.
    NP_("tlp", "UNSPECIFIED"),
    NP_("tlp", "RED"),
    NP_("tlp", "AMBER_STRICT"),
    NP_("tlp", "AMBER"),
    NP_("tlp", "GREEN"),
    NP_("tlp", "CLEAR"),
    NP_("response", "UNSPECIFIED"),
    NP_("response", "RECEIVED"),
    NP_("response", "ACCEPTED"),
    NP_("response", "ACTION_TAKEN"),
    NP_("response", "NOT_RELEVANT"),
    NP_("state", "UNSPECIFIED"),
    NP_("state", "ACTIVE"),
    NP_("state", "UPDATED"),
    NP_("state", "CANCELLED"),
    NP_("state", "EXPIRED"),
    NP_("message type", "UNSPECIFIED"),
    NP_("message type", "ALERT"),
    NP_("message type", "UPDATE"),
    NP_("message type", "CANCEL"),
    NP_("status", "UNSPECIFIED"),
    NP_("status", "ACTUAL"),
    NP_("status", "EXERCISE"),
    NP_("status", "TEST"),
    NP_("severity", "UNSPECIFIED"),
    NP_("severity", "EXTREME"),
    NP_("severity", "SEVERE"),
    NP_("severity", "MODERATE"),
    NP_("severity", "MINOR"),
    NP_("severity", "UNKNOWN"),
    NP_("urgency", "UNSPECIFIED"),
    NP_("urgency", "IMMEDIATE"),
    NP_("urgency", "EXPECTED"),
    NP_("urgency", "FUTURE"),
    NP_("urgency", "PAST"),
    NP_("urgency", "UNKNOWN"),
    NP_("certainty", "UNSPECIFIED"),
    NP_("certainty", "OBSERVED"),
    NP_("certainty", "LIKELY"),
    NP_("certainty", "POSSIBLE"),
    NP_("certainty", "UNLIKELY"),
    NP_("certainty", "UNKNOWN"),
    # The anomaly rules of ledger.anomalies (`sinergi audit anomalies`, the report).
    NP_("rule", "volume"),
    NP_("rule", "off-hours"),
    NP_("rule", "unaddressed-search"),
)


def shown(context: str, value: int) -> str:
    """The display name of ``value`` of the enum of ``context`` (a key of :data:`ENUMS`)."""
    enum, prefix = ENUMS[context]
    return pgettext(context, str(enum.Name(value)).removeprefix(prefix))


def category(value: int) -> str:
    return shown("category", value)


def state(value: int) -> str:
    return shown("state", value)


def response(value: int) -> str:
    return shown("response", value)


def message_type(value: int) -> str:
    return shown("message type", value)


def tlp_meaning(value: alert_pb2.Tlp.ValueType) -> str:
    """The TLP label with, in a language other than English, what it means: ``TLP:AMBER``, or
    ``TLP:AMBER (terbatas: ...)``. The label itself is never translated (TLP 2.0)."""
    name = alert_pb2.Tlp.Name(value).removeprefix("TLP_")
    label = "TLP:" + name.replace("_", "+")
    meaning = pgettext("tlp", name)
    return label if meaning == name else f"{label} ({meaning})"


def rule(name: str) -> str:
    """An anomaly rule's display name (``off-hours``: ``di luar jam kerja``)."""
    return pgettext("rule", name)
