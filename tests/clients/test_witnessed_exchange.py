"""The client against an exchange whose checkpoints two real witnesses cosign: receipts report
the checkpoint the witnesses vouched for, the client keeps it and sends its size, and the
auditor commands see the same from the outside."""

from __future__ import annotations

from clients import ExchangeClient, NewestCheckpoint, QuorumFailed, new_alert
from ledger import WitnessPolicy
from tests.clients.conftest import QUORUM, Exchange, last_json, run
from tests.conftest import wait_for


def _newest(client: ExchangeClient) -> NewestCheckpoint | None:
    try:
        return client.newest()
    except QuorumFailed:
        return None


def test_receipts_carry_the_checkpoint_the_witnesses_cosigned(exchange: Exchange) -> None:
    alert = new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="held")
    with exchange.client() as client:
        client.publish(alert)
        newest = wait_for(lambda: _newest(client), what="a checkpoint with its quorum")
        assert newest.witnessing is not None
        assert newest.witnessing.cosigners == ("internal-affairs", "police")
        receipt = client.publish(alert).receipt
        witnessing = receipt.witnessing
        assert witnessing is not None
        assert witnessing.cosigned is not None
        assert witnessing.cosigned.size <= receipt.checkpoint.size
        assert witnessing.describe() == (
            f"witnessed: checkpoint of size {witnessing.cosigned.size} cosigned by "
            f"internal-affairs, police (quorum: {QUORUM})"
        )
        kept = client.witness.pinned(client.witness.policy.logs[0].name)  # type: ignore[union-attr]
        assert kept is not None
        assert kept.witnessed
        assert kept.checkpoint.size >= witnessing.cosigned.size
        assert WitnessPolicy.load(exchange.policy).satisfied(
            WitnessPolicy.load(exchange.policy).cosigners(kept.note)
        )

    pki, address = exchange.pki, exchange.server.address
    policy = ["--witness-policy", str(exchange.policy)]
    published = run(
        *("alert", "publish", "--identity", str(pki / "immigration"), "--server", address),
        *("--category", "PASSPORT_HOLD", "--to", "police", "--summary", "held", *policy),
    )
    assert published.returncode == 0, published.stderr
    assert published.stdout.splitlines()[-1].startswith("  witnessed: checkpoint of size ")
    assert published.stdout.splitlines()[-1].endswith(
        f"cosigned by internal-affairs, police (quorum: {QUORUM})"
    )

    auditor = ["--server", address, "--identity", str(pki / "internal-affairs"), *policy]
    key = ["--ledger-key", str(pki / "ledger.vkey")]
    verified = run("ledger", "verify", *auditor, *key, "--json")
    assert verified.returncode == 0, verified.stderr
    doc = last_json(verified)
    assert doc["cosigners"] == ["internal-affairs", "police"]
    assert doc["quorum"] == {"needs": QUORUM, "met": True}
    assert [w["consistent"] for w in doc["witnesses"]] == [True, True]  # type: ignore[union-attr]
    status = run("witness", "status", *auditor, "--json")
    assert status.returncode == 0, status.stderr
    assert [w["consistent"] for w in last_json(status)["witnesses"]] == [True, True]  # type: ignore[union-attr]
