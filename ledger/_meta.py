"""The keys of an entry's ``meta`` object, one name each, for the writers (the exchange) and the
readers (verifiers, audit queries) alike (docs/ledger-format.md, section 1.1, the table of keys).
"""

from __future__ import annotations

from typing import Final

# PUBLISH, UPDATE, CANCEL (and CATEGORY for REDACT)
CATEGORY: Final = "category"
TO: Final = "to"
#: "<agency>:<n>" for each agency of TO, in its order: the entry is the n-th addressed to it
TO_INDEX: Final = "to_index"
HANDLING: Final = "handling"
SIGNATURE: Final = "signature"
# DELIVER
CURSOR: Final = "cursor"
#: A DELIVER to several principals at once (the exchange's own entry): "<SPIFFE ID> <cert>" each
RECEIVED_BY: Final = "received_by"
# ACK
RESPONSE: Final = "response"
# READ, SEARCH, LEDGER_READ, DENIED
METHOD: Final = "method"
RESULTS: Final = "results"
#: READ (GetAlert, GetRelatedAlerts) and DELIVER: each related alert shown through correlation,
#: "alert:<id> <kind>[,<kind>...]" (the kinds of identifier it shares, never their values)
RELATED: Final = "related"
# SEARCH
KIND: Final = "kind"
SALT: Final = "salt"
# LEDGER_READ
START: Final = "start"
END: Final = "end"
SEQ: Final = "seq"
TREE_SIZE: Final = "tree_size"
FIRST: Final = "first"
SECOND: Final = "second"
# REDACT
RETENTION_DAYS: Final = "retention_days"
ENDED: Final = "ended"
# START
POLICY_DIGEST: Final = "policy_digest"
ORIGIN: Final = "origin"


def method_name(method: str) -> str:
    """An RPC's name alone, from either spelling the ledger holds: DENIED entries record the full
    gRPC path (``/sinergi.v1.Exchange/GetAlert``), the others the name (``GetAlert``)."""
    return method.rpartition("/")[2]
