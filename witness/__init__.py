"""A witness of Sinergi ledgers: C2SP tlog-witness over HTTPS with mutual TLS.

It cosigns a ledger checkpoint only when it is consistent with the last one it cosigned for the
same origin, so that a ledger operator cannot show one history to some parties and another to
others, or roll a ledger back, without a witness refusing and raising the alarm. Internal
affairs and any agency may run one (docs/witness.md). It imports the pure :mod:`ledger` and
:mod:`certs` only.
"""

from witness._dev import DEV_WITNESS_PORTS, POLICY_FILE, DevWitnesses, create_dev_witnesses
from witness._errors import ConfigError, StateError, WitnessError
from witness._logs import LOGS_FILE, TrustedLogs
from witness._server import WitnessServer, parse_listen, server_tls
from witness._setup import Initialised, WitnessSetup, init_witness, load_setup
from witness._state import STATE_FILE, State, create_state

__all__ = [
    "DEV_WITNESS_PORTS",
    "LOGS_FILE",
    "POLICY_FILE",
    "STATE_FILE",
    "ConfigError",
    "DevWitnesses",
    "Initialised",
    "State",
    "StateError",
    "TrustedLogs",
    "WitnessError",
    "WitnessServer",
    "WitnessSetup",
    "create_dev_witnesses",
    "create_state",
    "init_witness",
    "load_setup",
    "parse_listen",
    "server_tls",
]
