"""The development PKI (``certs/dev/``): one CA, the exchange server, one identity per agency,
and the TLS identities of two witnesses (docs/witness.md).

It is created once and then left alone, so keys handed to a running server or copied into a demo
never change under it; a directory that holds part of a PKI is refused rather than completed with
a second CA.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives import serialization

from certs._errors import CertsError
from certs._identity import _PUBLIC, _private_dir, _write, write_ca, write_identity
from certs._names import CaScope, SpiffeId
from certs._x509 import create_ca, issue_client, issue_server

__all__ = [
    "DEV_AGENCIES",
    "DEV_AUDITOR_AGENCY",
    "DEV_TRUST_DOMAIN",
    "DEV_WITNESSES",
    "DevPki",
    "create_dev_pki",
]

DEV_TRUST_DOMAIN = "sinergi.dev"
DEV_AGENCIES = ("immigration", "police", "customs", "labour")
DEV_AUDITOR_AGENCY = "internal-affairs"
#: The development witnesses (a witness's name: its directory). Their cosigning keys, trusted
#: log keys and state are the witness package's (``witness.create_dev_witnesses``): certs
#: imports nothing of ours, so it issues their TLS identities only.
DEV_WITNESSES = MappingProxyType(
    {"internal-affairs": "witness-internal-affairs", "police": "witness-police"}
)

_CA_DIR = "ca"
_CA_BUNDLE = "ca.crt"
_SERVER = "server"
_POLICE_OFFICER = "police-officer"


@dataclass(frozen=True)
class DevPki:
    """Where the development PKI lives; ``identities`` maps a directory name to its path."""

    directory: Path
    created: bool
    identities: Mapping[str, Path]


def _principals(trust_domain: str) -> dict[str, SpiffeId]:
    principals = {
        agency: SpiffeId(trust_domain, agency, "system", "gateway") for agency in DEV_AGENCIES
    }
    principals[DEV_AUDITOR_AGENCY] = SpiffeId(
        trust_domain, DEV_AUDITOR_AGENCY, "officer", "auditor"
    )
    principals[_POLICE_OFFICER] = SpiffeId(trust_domain, "police", "officer", "investigator")
    return principals


def create_dev_pki(
    directory: str | os.PathLike[str], *, trust_domain: str = DEV_TRUST_DOMAIN
) -> DevPki:
    """Create the development PKI under ``directory`` unless ``ca/ca.crt`` is already there."""
    root = Path(directory)
    principals = _principals(trust_domain)
    names = [_SERVER, *principals, *DEV_WITNESSES.values()]
    identities = MappingProxyType({name: root / name for name in names})
    if (root / _CA_DIR / "ca.crt").exists():
        return DevPki(root, created=False, identities=identities)
    # ca/ca.crt is written last, so its absence beside any of our entries means a partial PKI
    # (an interrupted run, or a CA removed by hand). Unrelated files, such as the ledger's
    # public key, may share the directory.
    present = [str(root / name) for name in (_CA_DIR, _CA_BUNDLE, *names) if (root / name).exists()]
    if present:
        raise CertsError(
            f"{root} holds part of a PKI ({', '.join(present)}) but no {root / _CA_DIR / 'ca.crt'};"
            " refusing to mix two CAs: remove them and run again"
        )

    # The development CA issues every identity itself; its scope says so (CaScope).
    ca = create_ca("Sinergi Development CA", scope=CaScope(trust_domain, development=True))
    _private_dir(root)
    # The exchange is also the witnesses' TLS client: its certificate says clientAuth too.
    server = issue_server(
        ca,
        common_name="sinergi-exchange",
        dns_names=["localhost"],
        ip_addresses=["127.0.0.1", "::1"],
        client_auth=True,
    )
    write_identity(identities[_SERVER], server, ca.certificate)
    for witness, witness_dir in DEV_WITNESSES.items():
        issued = issue_server(
            ca,
            common_name=f"sinergi-witness-{witness}",
            dns_names=["localhost"],
            ip_addresses=["127.0.0.1", "::1"],
        )
        write_identity(identities[witness_dir], issued, ca.certificate)
    for name, principal in principals.items():
        write_identity(identities[name], issue_client(ca, principal), ca.certificate)
    ca_pem = ca.certificate.public_bytes(serialization.Encoding.PEM)
    _write(root / _CA_BUNDLE, ca_pem, _PUBLIC, replace=True)
    write_ca(root / _CA_DIR, ca)
    return DevPki(root, created=True, identities=identities)
