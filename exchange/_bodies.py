"""How a stored body meets its row: sealed under the connection's keyring when there is one
(exchange/_sealing.py), bound to the row it belongs to, and opened again when read.

The keyring travels with the engine (an execution option), so code that stores or reads a body
never passes keys around.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine

from exchange._errors import Internal
from exchange._sealing import OPTION, Keyring
from exchange._tables import acknowledgements


def keyring_of(connection: Connection | Engine) -> Keyring | None:
    """The server's keyring, carried by its engine's execution options (None: no encryption)."""
    keys = connection.get_execution_options().get(OPTION)
    assert keys is None or isinstance(keys, Keyring)
    return keys


def with_keyring(engine: Engine, keys: Keyring | None) -> Engine:
    """``engine`` whose connections seal and open bodies with ``keys``."""
    return engine.execution_options(**{OPTION: keys}) if keys is not None else engine


def alert_context(alert_id: str) -> bytes:
    """What a sealed alert body is bound to (AES-GCM associated data)."""
    return f"sinergi/v1/alert:{alert_id}".encode()


def ack_context(position: int, agency: str, principal: str) -> bytes:
    return f"sinergi/v1/ack:{position}:{agency}:{principal}".encode()


def stored_body(connection: Connection, body: bytes, context: bytes) -> dict[str, object]:
    """The column values that store ``body``: sealed when the connection has a keyring."""
    keys = keyring_of(connection)
    if keys is None:
        return {"body": body, "key_id": None, "wrapped_key": None}
    sealed = keys.seal(body, context)
    return {"body": sealed.body, "key_id": sealed.key_id, "wrapped_key": sealed.wrapped_key}


def opened_body(connection: Connection, row: Any, context: bytes) -> bytes:  # noqa: ANN401
    """The plaintext of a stored ``row``'s body (plain rows pass through)."""
    if row.key_id is None:
        return bytes(row.body)
    keys = keyring_of(connection)
    if keys is None or row.wrapped_key is None:
        raise Internal("stored data is encrypted and this process has no key-encryption key")
    return keys.open(row.key_id, bytes(row.wrapped_key), bytes(row.body), context)


#: The columns :func:`opened_ack` needs.
ACK_COLUMNS = (
    acknowledgements.c.id,
    acknowledgements.c.alert_position,
    acknowledgements.c.agency,
    acknowledgements.c.principal,
    acknowledgements.c.body,
    acknowledgements.c.key_id,
    acknowledgements.c.wrapped_key,
)


def opened_ack(connection: Connection, row: Any) -> bytes:  # noqa: ANN401 - a result row
    context = ack_context(row.alert_position, row.agency, row.principal)
    return opened_body(connection, row, context)
