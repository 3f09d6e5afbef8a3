"""The development witnesses in a development PKI: keys, trusted log, state, and the policy.

``certs.create_dev_pki`` issues their TLS identities; this adds what needs the ledger's code
(certs imports nothing of ours) and the ledger's key (``ledger.vkey``, written beside the PKI
by `sinergi pki dev`): so it runs after both, and again harmlessly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from certs import DEV_TRUST_DOMAIN, DEV_WITNESSES
from ledger import LedgerError, Verifier, WitnessPolicy
from witness._errors import ConfigError
from witness._setup import init_witness, load_key
from witness._state import STATE_FILE

#: Where each development witness listens: its URL in the development witness policy.
DEV_WITNESS_PORTS = {"internal-affairs": 50061, "police": 50062}
POLICY_FILE = "witness-policy"
_LEDGER_VKEY = "ledger.vkey"
_GROUP = "dev-witnesses"


@dataclass(frozen=True)
class DevWitnesses:
    """The development witnesses' directories by name, and the policy that needs both."""

    directories: dict[str, Path]
    policy: Path


def create_dev_witnesses(
    pki: str | os.PathLike[str], *, trust_domain: str = DEV_TRUST_DOMAIN
) -> DevWitnesses:
    """Give each development witness of ``pki`` its cosigning key
    (``<trust domain>/witness/<name>``), a ``logs`` file trusting ``pki/ledger.vkey``, and an
    empty state; then write ``pki/witness-policy`` (C2SP tlog-policy) naming both with their
    URLs, with a quorum of both. What exists is kept."""
    pki = Path(pki)
    try:
        ledger_vkey = (pki / _LEDGER_VKEY).read_text(encoding="utf-8").strip()
        Verifier.from_vkey(ledger_vkey)
    except OSError as exc:
        raise ConfigError(
            f"{pki / _LEDGER_VKEY}: {exc.strerror} (write the ledger key first)"
        ) from None
    except LedgerError as exc:
        raise ConfigError(f"{pki / _LEDGER_VKEY}: {exc}") from None
    directories = {name: pki / directory for name, directory in DEV_WITNESSES.items()}
    lines = [
        "# Development witness policy (C2SP tlog-policy): both development witnesses cosign.",
        f"log {ledger_vkey}",
    ]
    for name, directory in directories.items():
        if not (directory / "tls.crt").exists():
            raise ConfigError(
                f"{directory}: no TLS identity; a development PKI made before the witnesses has"
                " none: remove it and create it again (`sinergi pki dev`)"
            )
        if not (directory / STATE_FILE).exists():
            init_witness(directory, f"{trust_domain}/witness/{name}", logs=[ledger_vkey])
        vkey = load_key(directory).verifier_key()
        lines.append(f"witness {name} {vkey} https://127.0.0.1:{DEV_WITNESS_PORTS[name]}")
    lines += [f"group {_GROUP} all {' '.join(directories)}", f"quorum {_GROUP}"]
    policy = pki / POLICY_FILE
    if not policy.exists():
        text = "".join(line + "\n" for line in lines).encode()
        WitnessPolicy.parse(text, str(policy))  # what we write, others must be able to read
        policy.write_bytes(text)
    return DevWitnesses(directories, policy)
