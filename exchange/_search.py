"""Search keys: how SearchAlerts finds alerts by a subject's identifier without storing it, and
correlation links them (exchange/_correlation.py).

Each normalised identifier (``ledger.normalise_identifier``, which the SEARCH entry's digest is
also built from) is kept as a blind index: HMAC-SHA256 under a key derived from the current KEK,
or its plain SHA-256 when the server has no keyring. Exact match only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Connection, Select, insert, select

from exchange._sealing import Keyring
from exchange._tables import alert_subjects
from ledger import normalise_identifier
from sinergi.v1 import alert_pb2

# Built once: it runs on every publish (docs/performance.md, benchmark 1).
_INSERT_SUBJECTS = insert(alert_subjects)


def search_key(kind: str, value: str, keys: Keyring | None = None) -> str:
    """The index key of one identifier for a new row: a blind index (HMAC under the current
    KEK's index key), or SHA-256 of its normalised form without a keyring."""
    identifier = normalise_identifier(kind, value)
    return keys.index_key(identifier) if keys else hashlib.sha256(identifier).hexdigest()


def search_keys(kind: str, value: str, keys: Keyring | None) -> list[str]:
    """Every key a row about the identifier may carry: one per KEK, and plain SHA-256 (rows
    written before encryption was turned on)."""
    identifier = normalise_identifier(kind, value)
    return [*(keys.index_keys(identifier) if keys else []), hashlib.sha256(identifier).hexdigest()]


def identifiers(alert: alert_pb2.Alert) -> list[tuple[str, str]]:
    """Every subject identifier of ``alert`` the index keeps, as (kind, value): a person's
    passport number, NIK, and name with birth date; a device's IMEI; an organisation's name and
    registration number."""
    found = []
    for subject in alert.subjects:
        kind = subject.WhichOneof("kind")
        if kind == "person":
            person = subject.person
            if person.passport_number:
                found.append(("passport", person.passport_number))
            if person.nik:
                found.append(("nik", person.nik))
            if person.name and person.birth_date:
                found.append(("person", f"{person.name}|{person.birth_date}"))
        elif kind == "device":
            found.append(("imei", subject.device.imei))
        elif kind == "organisation":
            organisation = subject.organisation
            if organisation.name.strip():
                found.append(("organisation", organisation.name))
            if organisation.registration_number.strip():
                found.append(("registration", organisation.registration_number))
    return found


def subject_keys(alert: alert_pb2.Alert, keys: Keyring | None = None) -> set[str]:
    return {search_key(kind, value, keys) for kind, value in identifiers(alert)}


def index_subjects(
    connection: Connection,
    position: int,
    thread_id: str,
    alert: alert_pb2.Alert,
    keys: Keyring | None,
) -> None:
    """Insert the search keys of the message stored at ``position``."""
    rows = [
        {"alert_position": position, "key": key, "thread_id": thread_id}
        for key in subject_keys(alert, keys)
    ]
    if rows:
        connection.execute(_INSERT_SUBJECTS, rows)


def matching_threads(keys: Sequence[str]) -> Select[tuple[str]]:
    """The threads with a message whose subjects have one of ``keys``."""
    return select(alert_subjects.c.thread_id).where(alert_subjects.c.key.in_(list(keys)))
