"""Interoperability: the Node.js example (clients/examples/node), built from the .proto files alone,
publishes over mutual TLS to a real exchange, and the ledger attributes it to the identity used.
Its receipt check (receipt.js, the reference for other languages) accepts the receipts the Python
client accepts, and refuses, naming what is wrong, every receipt that proves something else.

node and npm are required under CI (CI set) and skip these tests elsewhere; a failed `npm ci`
fails them under CI and skips them elsewhere."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from google.protobuf import json_format

import ledger
from clients import ExchangeClient, new_alert
from ledger import Action, Actor, VerifiedReceipt
from sinergi.v1 import ledger_pb2
from tests.conftest import ORIGIN, RunningServer, require_tool

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "clients" / "examples" / "node"
INSTALL = "Debian: apt-get install nodejs npm"
VECTORS = json.loads((REPO / "tests/ledger/vectors/transparency-dev-merkle.json").read_text())
IMMIGRATION = "spiffe://sinergi.dev/agency/immigration/system/gateway"
GROUP_ORDER = 2**252 + 27742317777372353535851937790883648493  # Ed25519's L (RFC 8032 5.1)

Case = tuple[dict[str, Any], dict[str, Any]]  # an input for receipt.js, Python's verdict


@pytest.fixture(scope="session")
def node_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the example with its locked packages installed (`npm ci`, once per session)."""
    require_tool("node", install=INSTALL)
    npm = require_tool("npm", install=INSTALL)
    copy = tmp_path_factory.mktemp("node-example")
    for source in [EXAMPLE / "package.json", EXAMPLE / "package-lock.json", *EXAMPLE.glob("*.js")]:
        shutil.copy2(source, copy / source.name)
    installed = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if installed.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"npm ci failed:\n{installed.stderr}")
        pytest.skip(f"npm ci failed (no registry?): {installed.stderr.strip()[-300:]}")
    return copy


def node(
    example: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", *args],
        cwd=example,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def publish_js(
    example: Path, server: RunningServer, identity: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return node(
        example,
        "publish.js",
        SINERGI_SERVER=server.address,
        SINERGI_IDENTITY=str(server.pki / identity),
        SINERGI_PROTO=str(REPO / "proto"),
        **env,
    )


# ---------------------------------------------------------------------------------------------
# publish.js against a real exchange


def test_node_client_publishes_over_mtls_and_the_ledger_names_it(
    node_example: Path, start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    server = start_server(sqlite_url)
    identity = server.pki / "immigration"
    result = publish_js(node_example, server, "immigration")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    alert_id = printed["alert_id"]
    assert printed["read_back"] == alert_id
    assert printed["sender"] == IMMIGRATION

    certificate = x509.load_pem_x509_certificate((identity / "tls.crt").read_bytes())
    fingerprint = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
    entries = server.entries()
    published = [e for e in entries if e.action is Action.PUBLISH]
    assert [e.objects for e in published] == [(f"alert:{alert_id}",)]
    assert published[0].seq == printed["seq"]
    assert published[0].actor.id == printed["sender"]
    assert published[0].actor.cert == fingerprint
    reads = [e for e in entries if e.action is Action.READ and f"alert:{alert_id}" in e.objects]
    assert [e.actor.id for e in reads] == [printed["sender"]]
    # The checkpoint Node verified the receipt against is the ledger's own at that size.
    checkpoint = printed["checkpoint"]
    assert ledger.under_key(checkpoint["origin"], ORIGIN)
    assert printed["seq"] <= checkpoint["size"]
    root = ledger.root_of([e.hash for e in entries[: checkpoint["size"]]])
    assert checkpoint["root"] == root.hex()
    # Node signed it with its identity key; the Python library checks that signature on receipt.
    with ExchangeClient(server.pki / "police", server.address) as police:
        signed = police.verify_sender(police.get_alert(alert_id).current)
    assert str(signed.sender) == printed["sender"]
    assert signed.fingerprint == fingerprint


def test_node_client_refusal_is_reported_with_its_status(
    node_example: Path, start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    server = start_server(sqlite_url)
    result = publish_js(node_example, server, "customs")
    assert result.returncode == 1
    assert "PERMISSION_DENIED: agency 'customs' may not publish PASSPORT_HOLD" in result.stderr
    assert [e.action for e in server.entries()][-1] is Action.DENIED


def test_node_client_refuses_a_receipt_the_trusted_key_did_not_sign(
    node_example: Path, start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    """The exchange signs with its ledger key; this client trusts another key of that name."""
    server = start_server(sqlite_url)
    vkey = server.pki / "other.vkey"
    vkey.write_text(ledger.Signer(ORIGIN, Ed25519PrivateKey.generate()).verifier_key() + "\n")
    result = publish_js(node_example, server, "immigration", SINERGI_LEDGER_KEY=str(vkey))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "publish.js: receipt refused: checkpoint does not verify: "
        "note has no verifying signature by a known key\n"
    )


def test_node_client_without_a_ledger_key_publishes_nothing(
    node_example: Path, start_server: Callable[..., RunningServer], sqlite_url: str
) -> None:
    server = start_server(sqlite_url)
    (server.pki / "ledger.vkey").unlink()
    result = publish_js(node_example, server, "immigration")
    assert result.returncode == 2
    assert result.stderr == (
        f"publish.js: no ledger verifier key: expected {server.pki / 'immigration/ledger.vkey'} "
        f"or {server.pki / 'ledger.vkey'} (or set SINERGI_LEDGER_KEY)\n"
    )
    assert Action.PUBLISH not in [e.action for e in server.entries()]


# ---------------------------------------------------------------------------------------------
# receipt.js on real receipts (verify-receipt.js reads one as proto3 JSON), genuine and altered


class KeepingClient(ExchangeClient):
    """The Python client, keeping each raw receipt it verified."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.receipts: list[ledger_pb2.Receipt] = []

    def verify_receipt(self, receipt: ledger_pb2.Receipt, action: str, obj: str) -> VerifiedReceipt:
        verified = super().verify_receipt(receipt, action, obj)
        kept = ledger_pb2.Receipt()
        kept.CopyFrom(receipt)
        self.receipts.append(kept)
        return verified


@dataclasses.dataclass
class Published:
    server: RunningServer
    alert_id: str
    receipt: ledger_pb2.Receipt

    @property
    def object(self) -> str:
        return f"alert:{self.alert_id}"

    @property
    def checkpoint(self) -> ledger.Checkpoint:
        note = self.receipt.checkpoint.note
        return ledger.Checkpoint.parse(note[: note.rindex(b"\n\n") + 1])

    @property
    def inclusion(self) -> str:
        """How receipt.js names a failed inclusion check of this receipt."""
        return (
            f"inclusion of entry {self.receipt.seq} in the checkpoint of size "
            f"{self.checkpoint.size} does not verify"
        )

    def signer(self) -> ledger.Signer:
        """The exchange's own checkpoint key."""
        return ledger.load_signer(self.server.pki / "ledger.key", ORIGIN)

    def entry_with(self, **changes: Any) -> bytes:
        """The canonical bytes of the receipt's entry with ``changes``."""
        entry = ledger.Entry.decode(self.receipt.entry)
        return dataclasses.replace(entry, **changes).encode()

    def reissued(self, entry: bytes) -> ledger_pb2.Receipt:
        """A receipt for ``entry`` in the place of this one whose every proof holds: the ledger's
        first entries then ``entry``, the checkpoint of that tree signed with the exchange's key.
        Only what the entry records can make it fail."""
        seq = self.receipt.seq
        leaves = [e.hash for e in self.server.entries()[: seq - 1]] + [ledger.leaf_hash(entry)]

        def node(level: int, index: int) -> bytes:
            return ledger.root_of(leaves[index << level : (index + 1) << level])

        note = ledger.sign_checkpoint(
            ledger.Checkpoint(self.checkpoint.origin, seq, ledger.root_of(leaves)), [self.signer()]
        )
        return ledger_pb2.Receipt(
            seq=seq,
            entry=entry,
            entry_hash=ledger.leaf_hash(entry),
            checkpoint=ledger_pb2.Checkpoint(note=note),
            inclusion_proof=ledger.inclusion_proof(seq - 1, seq, node),
        )


@pytest.fixture
def published(start_server: Callable[..., RunningServer], sqlite_url: str) -> Published:
    """A receipt from a real exchange: immigration published an alert with the Python client."""
    server = start_server(sqlite_url)
    alert = new_alert(category="PASSPORT_HOLD", recipients=["police"], summary="held at the gate")
    client = KeepingClient(server.pki / "immigration", server.address)
    with client:
        alert_id = client.publish(alert).alert_id
    (receipt,) = client.receipts
    return Published(server, alert_id, receipt)


def verify_js(
    example: Path,
    published: Published,
    receipt: ledger_pb2.Receipt | None = None,
    identity: str = "immigration",
) -> subprocess.CompletedProcess[str]:
    return node(
        example,
        "verify-receipt.js",
        "PUBLISH",
        published.object,
        stdin=json_format.MessageToJson(receipt or published.receipt),
        SINERGI_IDENTITY=str(published.server.pki / identity),
    )


def test_node_accepts_a_real_receipt(node_example: Path, published: Published) -> None:
    result = verify_js(node_example, published)
    assert result.returncode == 0, result.stderr
    checkpoint = published.checkpoint
    assert json.loads(result.stdout) == {
        "ok": True,
        "seq": published.receipt.seq,
        "action": "PUBLISH",
        "actor": IMMIGRATION,
        "checkpoint": {
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root": checkpoint.root.hex(),
        },
    }


def cosigned(p: Published) -> ledger_pb2.Receipt:
    """A witness's cosignature added: a line by a key the client does not know is ignored."""
    witness = ledger.Signer("witness.example/w1", Ed25519PrivateKey.generate())
    p.receipt.checkpoint.note += witness.sign(p.checkpoint.body())
    return p.receipt


def reissued_unchanged(p: Published) -> ledger_pb2.Receipt:
    """The reissuing alone: the refusals below that use it fail for what they change."""
    return p.reissued(p.receipt.entry)


def by_a_colleague(p: Published) -> ledger_pb2.Receipt:
    """A retry answered with the entry another principal of the same agency made."""
    officer = "spiffe://sinergi.dev/agency/immigration/officer/siti"
    return p.reissued(p.entry_with(actor=Actor(officer, "ab" * 32)))


@pytest.mark.parametrize("variant", [cosigned, reissued_unchanged, by_a_colleague])
def test_node_accepts_what_the_python_client_accepts(
    node_example: Path, published: Published, variant: Callable[[Published], ledger_pb2.Receipt]
) -> None:
    result = verify_js(node_example, published, variant(published))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


def proof_node_flipped(p: Published) -> str:
    first = p.receipt.inclusion_proof[0]
    p.receipt.inclusion_proof[0] = bytes([first[0] ^ 1]) + first[1:]
    return f"{p.inclusion}: inclusion proof does not lead to the root hash"


def proof_truncated(p: Published) -> str:
    del p.receipt.inclusion_proof[-1]
    return f"{p.inclusion}: inclusion proof is too short"


def proof_extended(p: Published) -> str:
    p.receipt.inclusion_proof.append(hashlib.sha256(b"one more").digest())
    return f"{p.inclusion}: inclusion proof is too long"


def signed_by_an_unknown_key(p: Published) -> str:
    impostor = ledger.Signer(ORIGIN, Ed25519PrivateKey.generate())  # the name, not the key
    p.receipt.checkpoint.note = ledger.sign_checkpoint(p.checkpoint, [impostor])
    return "checkpoint does not verify: note has no verifying signature by a known key"


def root_edited(p: Published) -> str:
    root = base64.b64encode(p.checkpoint.root)
    other = base64.b64encode(hashlib.sha256(b"another history").digest())
    p.receipt.checkpoint.note = p.receipt.checkpoint.note.replace(root, other)
    key = f"{ORIGIN}+{p.signer().key_id.hex()}"
    return f"checkpoint does not verify: invalid signature by known key {key}"


def wrong_root_signed(p: Published) -> str:
    """The exchange's key signed a root that is not the one of the tree the proof climbs."""
    wrong = dataclasses.replace(p.checkpoint, root=hashlib.sha256(b"another history").digest())
    p.receipt.checkpoint.note = ledger.sign_checkpoint(wrong, [p.signer()])
    return f"{p.inclusion}: inclusion proof does not lead to the root hash"


def another_origin(p: Published) -> str:
    elsewhere = dataclasses.replace(p.checkpoint, origin="elsewhere.example/ledger")
    p.receipt.checkpoint.note = ledger.sign_checkpoint(elsewhere, [p.signer()])
    return (
        'checkpoint does not verify: checkpoint is for origin "elsewhere.example/ledger", '
        f'not a ledger of the key "{ORIGIN}"'
    )


def entry_hash_wrong(p: Published) -> str:
    p.receipt.entry_hash = hashlib.sha256(b"\x00" + p.receipt.entry + b" ").digest()
    return "receipt entry does not match its hash"


def entry_not_canonical(p: Published) -> str:
    p.receipt.entry = b"{ " + p.receipt.entry[1:]
    p.receipt.entry_hash = ledger.leaf_hash(p.receipt.entry)
    return "receipt entry is not a ledger entry: JSON is not in canonical form"


def another_action(p: Published) -> str:
    p.receipt = p.reissued(p.entry_with(action=Action.ACK))
    return f'receipt records ACK of ["{p.object}"], not PUBLISH of {p.object}'


def another_object(p: Published) -> str:
    other = "alert:0b0e6f5e-3c3a-4d5e-9f6a-2b1c0d9e8f7a"
    p.receipt = p.reissued(p.entry_with(objects=(other,)))
    return f'receipt records PUBLISH of ["{other}"], not PUBLISH of {p.object}'


def another_agency(p: Published) -> str:
    customs = "spiffe://sinergi.dev/agency/customs/system/gateway"
    p.receipt = p.reissued(p.entry_with(actor=Actor(customs, "ab" * 32)))
    return f"receipt attributes the act to {customs}, not to agency immigration ({IMMIGRATION})"


def another_seq(p: Published) -> str:
    seq = p.receipt.seq
    p.receipt = p.reissued(p.entry_with(seq=seq + 1))
    return f"receipt is for entry {seq}, but its entry is entry {seq + 1}"


@pytest.mark.parametrize(
    "tamper",
    [
        proof_node_flipped,
        proof_truncated,
        proof_extended,
        signed_by_an_unknown_key,
        root_edited,
        wrong_root_signed,
        another_origin,
        entry_hash_wrong,
        entry_not_canonical,
        another_action,
        another_object,
        another_agency,
        another_seq,
    ],
)
def test_node_refuses_a_receipt_that_proves_something_else(
    node_example: Path, published: Published, tamper: Callable[[Published], str]
) -> None:
    """Each alteration alone; ``tamper`` changes the receipt and says how it must be refused."""
    refusal = tamper(published)
    result = verify_js(node_example, published, published.receipt)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"verify-receipt.js: receipt refused: {refusal}\n"


def test_node_refuses_the_real_receipt_of_another_agency(
    node_example: Path, published: Published
) -> None:
    """Immigration's genuine receipt, checked by police: it is not theirs."""
    result = verify_js(node_example, published, identity="police")
    assert result.returncode == 1
    assert result.stderr == (
        f"verify-receipt.js: receipt refused: receipt attributes the act to {IMMIGRATION}, not to "
        "agency police (spiffe://sinergi.dev/agency/police/system/gateway)\n"
    )


# ---------------------------------------------------------------------------------------------
# receipt.js against the Python library, input by input: the same verdict on each

VERDICTS_JS = """
const r = require("./receipt");
const b = (text) => Buffer.from(text, "base64");
const checks = {
  inclusion: (c) => r.verifyInclusion(c.index, c.size, b(c.leaf), c.proof.map(b), b(c.root)),
  checkpoint: (c) => {
    const cp = r.openCheckpoint(b(c.note), c.vkeys.map(r.parseVerifierKey));
    return { ...cp, size: String(cp.size), root: cp.root.toString("base64") };
  },
  note: (c) => {
    const { text, verified } = r.openNote(b(c.note), c.vkeys.map(r.parseVerifierKey));
    return { text: text.toString("base64"), verified };
  },
  vkey: (c) => {
    const v = r.parseVerifierKey(c.vkey);
    return { name: v.name, key_id: v.keyId.toString("hex"), key: v.publicKey.toString("base64") };
  },
  entry: (c) => r.decodeEntry(b(c.entry)),
};
const cases = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(cases.map((c) => {
  try {
    return { value: checks[c.kind](c) ?? null };
  } catch (err) {
    if (!(err instanceof r.LedgerError)) throw err;
    return { error: err.message };
  }
})));
"""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def verdict(check: Callable[[], object]) -> dict[str, object]:
    """What the Python library says, as VERDICTS_JS writes what receipt.js says."""
    try:
        return {"value": check()}
    except ledger.LedgerError as exc:
        return {"error": str(exc)}


def inclusion_case(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> Case:
    given = {"index": str(index), "size": str(size), "leaf": b64(leaf), "root": b64(root)}
    case = {"kind": "inclusion", **given, "proof": [b64(p) for p in proof]}
    return case, verdict(lambda: ledger.verify_inclusion(index, size, leaf, proof, root))


def inclusion_cases() -> list[Case]:
    """transparency-dev/merkle's vectors, then every proof in a tree of up to 13 leaves, each
    also against the next index and size (which a proof of the same shape can satisfy)."""
    cases = []
    for item in VECTORS["inclusion"]:
        v = item["vector"]
        proof = [base64.b64decode(p) for p in v["proof"] or []]
        leaf, root = base64.b64decode(v["leafHash"]), base64.b64decode(v["root"])
        cases.append(inclusion_case(v["leafIdx"], v["treeSize"], leaf, proof, root))
    leaves = [ledger.leaf_hash(bytes([i])) for i in range(13)]

    def node(level: int, index: int) -> bytes:
        return ledger.root_of(leaves[index << level : (index + 1) << level])

    for size in range(1, 14):
        root = ledger.root_of(leaves[:size])
        for m in range(size):
            proof = ledger.inclusion_proof(m, size, node)
            for index, n in ((m, size), (m + 1, size), (m, size + 1), (m, 2**64 - 1)):
                cases.append(inclusion_case(index, n, leaves[m], proof, root))
    return cases


def checkpoint_case(note: bytes, vkey: str) -> Case:
    verifier = ledger.Verifier.from_vkey(vkey)

    def check() -> dict[str, object]:
        cp = ledger.open_checkpoint(note, [verifier])
        root, extensions = b64(cp.root), list(cp.extensions)
        return {"origin": cp.origin, "size": str(cp.size), "root": root, "extensions": extensions}

    return {"kind": "checkpoint", "note": b64(note), "vkeys": [vkey]}, verdict(check)


def note_case(note: bytes, vkeys: list[str]) -> Case:
    verifiers = [ledger.Verifier.from_vkey(v) for v in vkeys]

    def check() -> dict[str, object]:
        text, verified = ledger.open_note(note, verifiers)
        return {"text": b64(text), "verified": verified}

    return {"kind": "note", "note": b64(note), "vkeys": vkeys}, verdict(check)


def vkey_case(vkey: str) -> Case:
    def check() -> dict[str, object]:
        verifier = ledger.Verifier.from_vkey(vkey)
        key = verifier.public_key().public_bytes_raw()
        return {"name": verifier.name, "key_id": verifier.key_id.hex(), "key": b64(key)}

    return {"kind": "vkey", "vkey": vkey}, verdict(check)


def forged_signature(seed: bytes, r: bytes, text: bytes) -> bytes:
    """R given, S = k * a: [S]B = [k]A holds, so R + [k]A = [S]B when R is the identity."""
    a = int.from_bytes(hashlib.sha512(seed).digest()[:32], "little")
    a = (a & (2**254 - 8)) | 2**254  # RFC 8032 5.1.5
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    k = int.from_bytes(hashlib.sha512(r + public + text).digest(), "little") % GROUP_ORDER
    return r + (k * a % GROUP_ORDER).to_bytes(32, "little")


def note_cases() -> list[Case]:
    """The worked example of docs/ledger-format.md 3.5 and its key, then altered."""
    seed = bytes(range(32))
    signer = ledger.Signer("sinergi.example/ledger", Ed25519PrivateKey.from_private_bytes(seed))
    vkey = signer.verifier_key()
    leaves = [ledger.leaf_hash(bytes.fromhex(x)) for x in VECTORS["constants"]["leaf_inputs_hex"]]
    checkpoint = ledger.Checkpoint(signer.name, 8, ledger.root_of(leaves))
    text = checkpoint.body()
    note = ledger.sign_checkpoint(checkpoint, [signer])
    b64_signature = note.rsplit(b" ", 1)[1].rstrip(b"\n")
    signature = base64.b64decode(b64_signature)
    s_plus_l = int.from_bytes(signature[36:], "little") + GROUP_ORDER  # the equation still holds

    def with_signature(raw: bytes, encode: Callable[[bytes], bytes] = base64.b64encode) -> bytes:
        return note.replace(b64_signature, encode(raw))

    # R the identity point, S = k * a: OpenSSL accepts it, libsodium (and so the Python
    # library) refuses an R of small order.
    identity = b"\x01" + bytes(31)
    r_small = forged_signature(seed, identity, text)
    witness = ledger.Signer("witness.example/w1", Ed25519PrivateKey.from_private_bytes(bytes(32)))
    notes = [
        note,
        note + witness.sign(text),  # a key the verifier does not know: ignored
        ledger.sign_checkpoint(checkpoint, [witness, signer]),
        text + b"\n" + signer.sign(text) * 100,
        text + b"\n" + signer.sign(text) * 101,
        note.replace(b"\n", b"\r\n"),
        note.replace(b"\n\n", b"\n", 1),
        note.rstrip(b"\n"),
        note + b"\n",
        note.replace("\u2014 ".encode(), b"- ", 1),
        note.replace("\u2014 ".encode(), "\u2014  ".encode(), 1),
        with_signature(signature[:-1]),
        with_signature(signature, lambda raw: base64.b64encode(raw).rstrip(b"=")),
        with_signature(signature, base64.urlsafe_b64encode),
        with_signature(signature[:36] + s_plus_l.to_bytes(32, "little")),
        with_signature(signature[:4] + r_small),
        ledger.sign_checkpoint(dataclasses.replace(checkpoint, origin="elsewhere/log"), [signer]),
        ledger.sign_checkpoint(dataclasses.replace(checkpoint, extensions=("ext",)), [signer]),
        ledger.sign_note(b"sinergi.example/ledger\n8\n", [signer]),
        ledger.sign_note(text + b"\n", [signer]),
    ]
    # Texts the Python library would not sign, signed all the same: refused for what they are.
    texts = [
        text.replace(b"sinergi", b"sin\tergi"),
        text.replace(b"\n", b"\r\n"),
        text.replace(b"sinergi", b"sin\x01ergi"),
        text.replace(b"sinergi", b"sin\x7fergi"),
        text.replace(b"sinergi", b"\xef\xbb\xbfsinergi"),
        text.replace(b"sinergi", b"sin\xed\xa0\x80ergi"),
        text.replace(b"sinergi", b"sin\xc3ergi"),
        text.replace(b"\n8\n", b"\n+8\n"),
        text.replace(b"\n8\n", b"\n08\n"),
        text.replace(b"\n8\n", f"\n{2**64}\n".encode()),
        text.replace(b"\n8\n", f"\n{2**64 - 1}\n".encode()),
        text.replace(b"\n8\n", b"\n\n8\n"),
        text + "\u2014 a line of the text\n".encode(),
    ]
    notes += [t + b"\n" + signer.sign(t) for t in texts]
    cases = [checkpoint_case(n, vkey) for n in notes]
    # A key of small order (the identity point), R = B and S = 1: [S]B = R + [k]A for any text.
    small_id = ledger.key_id("n", identity)
    small = f"n+{small_id.hex()}+{b64(bytes([ledger.ED25519_ALG]) + identity)}"
    base_point = bytes.fromhex("58" + "66" * 31)
    forged = ledger.Checkpoint("n", 8, checkpoint.root).body() + b"\n\xe2\x80\x94 n "
    forged += base64.b64encode(small_id + base_point + (1).to_bytes(32, "little")) + b"\n"
    cases.append(checkpoint_case(forged, small))
    # Notes that are not checkpoints: the text ends at the last blank line.
    for poem in (b"Ognuno sta solo\n\ned \xc3\xa8 subito sera.\n", b"\xef\xbb\xbfone line\n"):
        cases.append(note_case(ledger.sign_note(poem, [signer, witness]), [vkey]))
    for poem in (b"a\ttab\n", b"a\rreturn\n", b"a\x7fdelete\n"):
        cases.append(note_case(poem + b"\n" + signer.sign(poem), [vkey]))
    cases.append(
        note_case(ledger.sign_note(b"x\n", [witness, signer]), [vkey, witness.verifier_key()])
    )
    # Every proper substring of the vkey, and every single-character increment in it.
    mangled = [vkey[i:j] for i in range(len(vkey)) for j in range(i + 1, len(vkey) + 1)]
    mangled += [vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :] for i in range(len(vkey))]
    mangled.append(vkey.replace(signer.key_id.hex(), signer.key_id.hex().upper()))
    return cases + [vkey_case(v) for v in mangled]


def entry_cases() -> list[Case]:
    """Entries of several shapes, then spellings that are not canonical or not an entry."""
    draft = ledger.EntryDraft(
        Action.PUBLISH,
        Actor(IMMIGRATION, "ab" * 32),
        ("alert:x",),
        "cd" * 32,
        meta={"category": "PASSPORT_HOLD", "to": ["police"], "n": 3},
    )
    entry = draft.at(2, datetime(2026, 11, 23, 9, 0, 0, 123, tzinfo=UTC), "0" * 64)
    plain = entry.encode()
    refusal = ledger.Outcome("PERMISSION_DENIED", 'a "quote" \\ \n\x01\x7f é ☃ 😀')
    fields = json.loads(plain)
    spellings = [
        plain,
        dataclasses.replace(entry, outcome=refusal).encode(),
        dataclasses.replace(entry, objects=(), meta={}).encode(),
        plain.replace(b",", b", ", 1),
        plain + b"\n",
        b"\xef\xbb\xbf" + plain,
        plain.replace(b'"seq":2', b'"seq":2.0'),
        plain.replace(b'"seq":2', b'"seq":0'),
        plain.replace(b'"seq":2', b'"seq":9007199254740992'),
        plain.replace(b'"n":3', b'"n":9007199254740991'),
        plain.replace(b'"n":3', b'"n":-9007199254740992'),
        plain.replace(b'"n":3', b'"n":1.5'),
        plain.replace(b'"n":3', b'"n":-0'),
        plain.replace(b'"n":3', b'"n":1e2'),
        plain.replace(b'"v":1', b'"v":2'),
        plain.replace(b'"alert:x"', b'"alert:\\u0078"'),
        plain.replace(b'"alert:x"', b'"alert:\\ud800"'),
        plain.replace(b'"alert:x"', b'"alert:\\u001f"'),
        plain.replace(b'"alert:x"', b'"alert:\\u001F"'),
        plain.replace(b"PUBLISH", b"PUBLISHED"),
        plain.replace(b"2026-11-23", b"2026-11-3"),
        plain.replace(b'"prev":"0', b'"prev":"A'),
        plain.replace(b'{"action"', b'{"action":"PUBLISH","action"'),
        plain.replace(b'"v":1', b'"v":1,"x":1'),
        plain.replace(b'"meta":{', '"meta":{"é":1,'.encode()),
        plain.replace(b'"objects":["alert:x"]', b'"objects":[1]'),
        json.dumps(
            {k: v for k, v in fields.items() if k != "meta"}, separators=(",", ":")
        ).encode(),
        json.dumps(fields, separators=(",", ":")).encode(),
        b"[" + plain + b"]",
    ]

    def decode(e: bytes) -> object:
        ledger.Entry.decode(e)
        return json.loads(e)

    return [({"kind": "entry", "entry": b64(e)}, verdict(partial(decode, e))) for e in spellings]


def test_node_check_agrees_with_the_python_library_input_by_input(node_example: Path) -> None:
    """Proofs, notes, verifier keys and entry bytes, genuine and altered: receipt.js accepts
    exactly what the Python library accepts, reads the same from it, and refuses a proof in the
    same words."""
    cases = inclusion_cases() + note_cases() + entry_cases()
    assert sum("value" in python for _, python in cases) > 100
    assert len({python.get("error") for _, python in cases}) > 20
    result = node(node_example, "-e", VERDICTS_JS, stdin=json.dumps([case for case, _ in cases]))
    assert result.returncode == 0, result.stderr
    for (case, python), javascript in zip(cases, json.loads(result.stdout), strict=True):
        if "error" in python and case["kind"] != "inclusion":
            assert "error" in javascript, (case, python, javascript)
        else:
            assert javascript == python, case
