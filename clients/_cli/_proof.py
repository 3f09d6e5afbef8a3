"""`sinergi alert proof`: a message's proof of record, as a bundle; `sinergi ledger verify-proof`:
the offline check of one, by a recipient or a court, without the exchange."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import grpc

from certs import TrustAnchors, load_identity
from clients._cli import _names
from clients._cli._common import (
    emit,
    handle_errors,
    identity_option,
    json_option,
    ledger_key_option,
    proof_verified,
    server_option,
    witness_policy_option,
)
from clients._cli._language import Command
from clients._client import (
    ExchangeClient,
    find_ledger_key,
    find_witness_policy,
    load_policy,
    load_verifier,
)
from clients._errors import Refused, UsageError
from clients._i18n import L_, _
from clients._proof import AlertProof, ProofChecked


def _described(checked: ProofChecked, *, intact: bool = False) -> str:
    """What the proof showed, for a person; with ``intact``, as `verify-proof`'s verdict."""
    a, cp, entry = checked.alert, checked.checkpoint, checked.entry
    signed = (
        _("proof intact: {kind} {id} signed by {sender} (signature verified)")
        if intact
        else _("{kind} {id} signed by {sender} (signature verified)")
    )
    recorded = _("ledger entry {seq}, {action} at {time} {verified}")
    if checked.cosigners:
        witnessed = _("checkpoint {origin} size {size}, cosigned by {who}")
    else:
        witnessed = _(
            "checkpoint {origin} size {size}, no witness policy: cosignatures not checked"
        )
    return "\n".join(
        [
            signed.format(
                kind=_names.message_type(a.message_type), id=a.id, sender=checked.signed.sender
            ),
            "  "
            + recorded.format(
                seq=entry.seq, action=entry.action.value, time=entry.time, verified=proof_verified()
            ),
            "  "
            + witnessed.format(origin=cp.origin, size=cp.size, who=", ".join(checked.cosigners)),
        ]
    )


def _json(checked: ProofChecked) -> dict[str, object]:
    return {
        "ok": True,
        "alert_id": checked.alert.id,
        "sender": str(checked.signed.sender),
        "seq": checked.entry.seq,
        "action": checked.entry.action.value,
        "recorded": checked.entry.time,
        "checkpoint": {"origin": checked.checkpoint.origin, "size": checked.checkpoint.size},
        "cosigners": list(checked.cosigners),
    }


def _proof_when_witnessed(client: ExchangeClient, alert_id: str, wait: float) -> AlertProof:
    """The proof, asked again while no cosigned checkpoint covers the alert yet (witnesses
    cosign within about a second of each commit), for at most ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return client.alert_proof(alert_id)
        except Refused as exc:
            if exc.code != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@click.command(cls=Command)
@click.argument("alert_id")
@identity_option
@server_option
@ledger_key_option
@witness_policy_option
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the bundle to this file (default: standard output).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to wait for a checkpoint its witnesses cosigned to cover a new alert.",
)
@json_option
@handle_errors
def proof(
    alert_id: str,
    identity: str,
    server: str,
    ledger_key: str | None,
    witness_policy: str | None,
    output: Path | None,
    wait: float,
    as_json: bool,
) -> None:
    """Print the proof that a message was recorded, for checking offline.

    A self-contained JSON bundle: the message as stored (with its sender's signature), its
    ledger entry, the inclusion proof and the checkpoint its witnesses cosigned. Checked here
    before it is written; anyone checks it again with `sinergi ledger verify-proof`. Your
    agency must be able to read the alert; the exchange records the read.

    \b
    Example:
      sinergi alert proof 3f0c... --identity certs/dev/immigration -o alert.proof.json
    """
    with ExchangeClient(
        identity, server, ledger_key=ledger_key, witness_policy=witness_policy
    ) as client:
        bundle = _proof_when_witnessed(client, alert_id, wait)
        checked = client.verify_proof(bundle)
    text = json.dumps(bundle.to_json(), indent=2, sort_keys=True) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    emit(as_json, {**_json(checked), "file": str(output)}, f"{_described(checked)}\n  -> {output}")


@click.command(name="verify-proof", cls=Command)
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--identity",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="An identity directory: its ca.crt, trust domain, ledger key and witness policy "
    "are used unless given below.",
)
@click.option(
    "--ledger-key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The ledger's verifier key.",
)
@click.option(
    "--witness-policy",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The witness policy whose quorum the checkpoint needs.",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The agencies' CA certificates (PEM), to check the sender's signature.",
)
@click.option("--trust-domain", default=None, help="The federation's SPIFFE trust domain.")
@json_option
@handle_errors
def verify_proof(
    bundle: Path,
    identity: Path | None,
    ledger_key: Path | None,
    witness_policy: Path | None,
    ca: Path | None,
    trust_domain: str | None,
    as_json: bool,
) -> None:
    """Check a proof bundle offline: no exchange, no network.

    The sender's signature against the CA certificates, the message against its ledger entry,
    the entry's inclusion in the checkpoint, the checkpoint's signature under the ledger key
    and, with a witness policy, its witnesses' quorum. Exit 1 when anything does not hold.

    \b
    Example:
      sinergi ledger verify-proof alert.proof.json --identity certs/dev/police
    """
    if identity is not None:
        me = load_identity(identity).spiffe_id
        ca = ca or identity / "ca.crt"
        trust_domain = trust_domain or (me.trust_domain if me is not None else None)
        ledger_key = ledger_key or find_ledger_key(identity, None)
        witness_policy = witness_policy or find_witness_policy(identity, None)
    if ca is None or trust_domain is None or ledger_key is None:
        raise UsageError(L_("give --identity, or --ca, --trust-domain and --ledger-key"))
    policy = load_policy(witness_policy) if witness_policy is not None else None
    anchors = TrustAnchors.from_pem(ca.read_bytes())
    found = AlertProof.loads(bundle.read_bytes())
    checked = found.verify([load_verifier(ledger_key)], anchors, trust_domain, policy)
    emit(as_json, _json(checked), _described(checked, intact=True))
