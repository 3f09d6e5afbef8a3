"""The database side of GetEnvelopes and GetAlertProof: which entries are addressed to an agency,
read from the ledger itself (never from ``alert_recipients``, the table an administrator would
change to withhold an alert), and the proof that a visible message was recorded.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from exchange._errors import NotFound
from exchange._tables import alerts
from exchange._threads import thread_of
from exchange._visibility import Visibility, visible, visible_thread
from ledger import EncodingError, Entry, Receipt, addressed
from ledger._envelopes import MESSAGE_PREFIXES
from ledger.store import iter_entries, prove
from sinergi.v1 import ledger_pb2


def envelopes_for(
    connection: Connection, agency: str, start: int, end: int, tree_size: int
) -> list[ledger_pb2.Envelope]:
    """The message entries among start..end numbered for ``agency`` (``meta.to_index``), each
    with its inclusion proof in the checkpoint of ``tree_size``. Entries from before numbering
    began are not envelopes: a monitor could not tell one kept from it."""
    marker = f'"{agency}:'.encode()
    found = []
    for seq, _hash, body in iter_entries(connection, start, end):
        if not body.startswith(MESSAGE_PREFIXES) or marker not in body:
            continue
        try:
            _to, numbers = addressed(Entry.decode(body).meta)
        except EncodingError:
            continue  # not the exchange's writing: `verify` names it, a monitor sees the gap
        if numbers is not None and agency in numbers:
            receipt = prove(connection, seq, tree_size)
            found.append(
                ledger_pb2.Envelope(seq=seq, entry=body, proof=list(receipt.inclusion_proof))
            )
    return found


def proof_of(
    connection: Connection, message_id: str, visibility: Visibility, cosigned: int | None
) -> tuple[bytes, Receipt] | NotFound | None:
    """The stored bytes of message ``message_id`` and the receipt of its entry in the checkpoint
    of size ``cosigned`` (the newest without witnesses); NotFound when the caller may not see
    it, None when that checkpoint does not cover the entry yet."""
    messages = thread_of(connection, message_id)
    if messages and visible(connection, messages[0].position, visibility):
        checked = visible_thread(visibility, messages, messages[0].alert.id)
        for message in checked.served[0] if checked.served else []:
            if message.alert.id == message_id:
                seq = connection.execute(
                    select(alerts.c.publish_seq).where(alerts.c.position == message.position)
                ).scalar_one()
                if cosigned is not None and seq > cosigned:
                    return None
                return message.body, prove(connection, seq, cosigned)
    return NotFound("no alert with that id is visible to your agency")
