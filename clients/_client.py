"""The Python client of the exchange: mutual TLS from an identity directory, verified receipts."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc

from certs import CertsError, Identity, Signer, SpiffeId, TrustAnchors, load_identity
from clients._errors import Refused, Unreachable, UsageError, VerificationFailed, from_rpc_error
from clients._proof import AlertProof, ProofChecked
from clients._signatures import (
    SignedBy,
    SignedRequest,
    check_for_us,
    sign_request,
    verify_alert,
)
from clients._witness import Kept, OtherLedger, QuorumFailed, Witness
from ledger import (
    WITNESSED_SIZE_HEADER,
    LedgerError,
    PolicyError,
    QuorumError,
    Receipt,
    VerifiedReceipt,
    Verifier,
    Witnessing,
    WitnessPolicy,
    leaf_hash,
    open_checkpoint,
    under_key,
)
from ledger import Checkpoint as LedgerCheckpoint
from sinergi.v1 import alert_pb2, exchange_pb2, exchange_pb2_grpc, ledger_pb2, ledger_pb2_grpc

DEFAULT_SERVER = "127.0.0.1:50051"
# The stream is resumed from its cursor after these: a dropped connection, a restarted server,
# the exchange shedding a subscriber that did not read fast enough, or grpc ending the stream
# CANCELLED under a burst of new streams before the exchange's code ran (a stream this client
# cancels itself ends the generator instead, and is never resumed).
RESUMABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)
LEDGER_KEY_FILE = "ledger.vkey"
WITNESS_FILE = "witness.json"
#: The witness policy (C2SP tlog-policy) looked for beside an identity, as the ledger key is.
WITNESS_POLICY_FILE = "witness-policy"
Reply = TypeVar("Reply")
_JITTER = secrets.SystemRandom()
# The channel's own reconnection backoff (gRPC's default starts at 1s and grows to 120s): short,
# so that a retry after a dropped connection finds the channel reconnecting, not idling.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of UNAVAILABLE only: exponential backoff with full jitter, within the deadline.

    Other codes are answers, not outages, and are never retried. Writes are retried with the
    idempotency key of the first attempt, so a retry can only return the first result."""

    attempts: int = 6  # the first and five retries
    initial: float = 0.1
    maximum: float = 2.0

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1, 2, ...): uniform in [0, cap]."""
        return _JITTER.uniform(0, self._cap(retry))

    def patience(self) -> float:
        """The longest the retries can wait in all: how long an outage they ride out."""
        return sum(self._cap(n) for n in range(1, self.attempts))

    def _cap(self, retry: int) -> float:
        return min(self.maximum, self.initial * 2.0 ** (retry - 1))


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class Published:
    alert_id: str
    receipt: VerifiedReceipt


@dataclass(frozen=True)
class Acknowledged:
    acknowledgement: alert_pb2.Acknowledgement
    receipt: VerifiedReceipt


@dataclass(frozen=True)
class NewestCheckpoint:
    """The exchange's newest checkpoint as it answered: verified, its signed note as received
    (cosignatures included), and what the witness policy made of it (None without one)."""

    checkpoint: LedgerCheckpoint
    note: bytes
    witnessing: Witnessing | None


@dataclass(frozen=True)
class Trusted:
    """A ledger trusted on purpose (`sinergi ledger trust`), and the one it replaced."""

    newest: NewestCheckpoint
    replaced: Kept | None


def find_ledger_key(identity_dir: Path, explicit: str | os.PathLike[str] | None) -> Path:
    """The ledger's verifier key: explicit, else beside the identity, else in its parent.

    Raises :class:`UsageError` when neither holds one: no key, no verified receipt."""
    if explicit is not None:
        return Path(explicit)
    for candidate in (identity_dir / LEDGER_KEY_FILE, identity_dir.parent / LEDGER_KEY_FILE):
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"no ledger verifier key: expected {identity_dir / LEDGER_KEY_FILE} or "
        f"{identity_dir.parent / LEDGER_KEY_FILE} (or pass --ledger-key)"
    )


def find_witness_policy(identity_dir: Path, explicit: str | os.PathLike[str] | None) -> Path | None:
    """The witness policy: explicit, else ``witness-policy`` beside the identity, else in its
    parent, else None (no policy: checkpoints need no cosignature)."""
    if explicit is not None:
        return Path(explicit)
    for candidate in (
        identity_dir / WITNESS_POLICY_FILE,
        identity_dir.parent / WITNESS_POLICY_FILE,
    ):
        if candidate.is_file():
            return candidate
    return None


def load_policy(path: str | os.PathLike[str]) -> WitnessPolicy:
    """The witness policy in ``path``; :class:`UsageError` naming the file and line when it
    cannot be read or is malformed."""
    try:
        return WitnessPolicy.load(path)
    except PolicyError as exc:
        raise UsageError(str(exc)) from None


def load_verifier(path: Path) -> Verifier:
    """The ledger's verifier key from ``path`` (a ``ledger.vkey`` line).

    Raises :class:`UsageError` when it cannot be read or is not a verifier key."""
    try:
        return Verifier.from_vkey(path.read_text(encoding="ascii").strip())
    except OSError as exc:
        raise UsageError(f"cannot read ledger key {path}: {exc.strerror}") from None
    except (LedgerError, UnicodeDecodeError) as exc:
        raise UsageError(f"ledger key {path} is not a verifier key: {exc}") from None


class ExchangeClient:
    """A connection to the exchange as one identity. Use as a context manager.

    Every call to the exchange raises :class:`Refused` when the exchange says no (``.code`` is
    the gRPC status, ``.violations`` the fields it named), :class:`Unreachable` when it cannot be
    reached within the deadline (UNAVAILABLE is retried first), and :class:`VerificationFailed`
    when its TLS certificate does not verify against the identity's ``ca.crt``. Each method
    names the codes it expects and what else it raises."""

    def __init__(
        self,
        identity: str | os.PathLike[str] | Identity,
        server: str = DEFAULT_SERVER,
        *,
        ledger_key: str | os.PathLike[str] | None = None,
        witness_state: str | os.PathLike[str] | None = None,
        witness_policy: str | os.PathLike[str] | WitnessPolicy | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        verify_senders: bool = True,
    ) -> None:
        """``timeout`` is the deadline of each call, retries included (not of ``subscribe``,
        which runs until the caller stops reading).

        Every alert received is checked against its sender's signature (:func:`verify_alert`)
        unless ``verify_senders`` is false: a tool that must show a message which does not
        verify, to say so, checks it itself.

        ``witness_policy`` (a file, or a parsed policy; by default ``witness-policy`` beside the
        identity or in its parent, as the ledger key is found) names the witnesses whose quorum
        a checkpoint needs: receipts then report their cosigned checkpoint, the kept checkpoint
        is the newest with its quorum, and :meth:`checkpoint` requires it. Without one, or with
        ``quorum none``, checkpoints need no cosignature.

        Raises :class:`UsageError` when the identity directory, the ledger key or the witness
        policy cannot be read, or the certificate names no principal; nothing is sent before
        the first call."""
        try:
            self.identity = identity if isinstance(identity, Identity) else load_identity(identity)
            me = self.identity.spiffe_id
            if me is None:
                raise UsageError(f"{self.identity.directory}: the certificate names no principal")
            self._me: SpiffeId = me
            self._signer = Signer(self.identity.key_pem)
            self.anchors = TrustAnchors.from_pem(self.identity.ca_pem)
        except CertsError as exc:
            raise UsageError(str(exc)) from None
        self._verify_senders = verify_senders
        self._verifier = load_verifier(find_ledger_key(self.identity.directory, ledger_key))
        if not isinstance(witness_policy, WitnessPolicy):
            found = find_witness_policy(self.identity.directory, witness_policy)
            witness_policy = load_policy(found) if found is not None else None
        if witness_policy is not None and not witness_policy.needs_cosignatures:
            witness_policy = None
        #: the witness policy in force: None without one, or when its quorum is ``none``
        self.policy: WitnessPolicy | None = witness_policy
        self.server = server
        self.witness = Witness(
            witness_state or self.identity.directory / WITNESS_FILE, [self._verifier], self.policy
        )
        self._timeout = timeout
        self._retry = retry
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.identity.ca_pem,
            private_key=self.identity.key_pem,
            certificate_chain=self.identity.cert_pem,
        )
        self._channel = grpc.secure_channel(server, credentials, options=CHANNEL_OPTIONS)
        self._stub = exchange_pb2_grpc.ExchangeStub(self._channel)
        self._audit = ledger_pb2_grpc.AuditLedgerStub(self._channel)

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; raises nothing."""
        self._channel.close()

    def publish(self, alert: alert_pb2.Alert, *, idempotency_key: str | None = None) -> Published:
        """Publish ``alert``; succeeds only once the receipt proves the ledger recorded it.

        Raises :class:`Refused` (INVALID_ARGUMENT for a bad field, PERMISSION_DENIED when the
        policy forbids it, ALREADY_EXISTS for a key reused with other content),
        :class:`Unreachable`, :class:`VerificationFailed` when the receipt does not verify, and
        :class:`ForkDetected` when its checkpoint contradicts one verified before: the alert may
        then be recorded, but on a ledger that cannot be trusted."""
        request = exchange_pb2.PublishRequest(
            idempotency_key=idempotency_key or secrets.token_urlsafe(24), alert=alert
        )
        response = self._call(self._stub.Publish, request, witnessed=True, signed=request)
        receipt = self.verify_receipt(response.receipt, "PUBLISH", f"alert:{response.alert_id}")
        return Published(response.alert_id, receipt)

    def update(
        self, alert_id: str, alert: alert_pb2.Alert, *, idempotency_key: str | None = None
    ) -> Published:
        """Supersede the content of ``alert_id`` (an alert of your agency) with ``alert``.

        ``alert`` is the whole new content (:func:`clients.content_alert`); the exchange keeps the
        original's category, handling and recipients. The result names the UPDATE message.

        Raises as :meth:`publish` does; :class:`Refused` also with NOT_FOUND (no alert your
        agency may see), PERMISSION_DENIED (another agency's) and FAILED_PRECONDITION
        (cancelled)."""
        request = exchange_pb2.UpdateRequest(
            idempotency_key=idempotency_key or secrets.token_urlsafe(24),
            alert_id=alert_id,
            alert=alert,
        )
        response = self._call(self._stub.Update, request, witnessed=True, signed=request)
        receipt = self.verify_receipt(response.receipt, "UPDATE", f"alert:{response.alert_id}")
        return Published(response.alert_id, receipt)

    def cancel(
        self, alert_id: str, reason: str, *, idempotency_key: str | None = None
    ) -> Published:
        """Cancel ``alert_id`` (an alert of your agency); the result names the CANCEL message.

        Raises :class:`UsageError` for an empty reason, before anything is sent; then as
        :meth:`update` does."""
        if not reason.strip():
            raise UsageError("a reason is required to cancel an alert")
        request = exchange_pb2.CancelRequest(
            idempotency_key=idempotency_key or secrets.token_urlsafe(24),
            alert_id=alert_id,
            reason=reason,
        )
        response = self._call(self._stub.Cancel, request, witnessed=True, signed=request)
        receipt = self.verify_receipt(response.receipt, "CANCEL", f"alert:{response.alert_id}")
        return Published(response.alert_id, receipt)

    def acknowledge(
        self,
        alert_id: str,
        response: alert_pb2.Response.ValueType,
        *,
        case_reference: str = "",
        note: str = "",
        idempotency_key: str | None = None,
    ) -> Acknowledged:
        """Acknowledge ``alert_id``; retried like a publish, with one idempotency key for every
        attempt, so it is recorded once.

        Raises :class:`Refused` (NOT_FOUND when the alert was not addressed to your agency,
        INVALID_ARGUMENT for ACTION_TAKEN without a case reference), :class:`Unreachable`,
        :class:`VerificationFailed` when the receipt does not verify, :class:`ForkDetected`."""
        request = exchange_pb2.AcknowledgeRequest(
            alert_id=alert_id,
            response=response,
            case_reference=case_reference,
            note=note,
            idempotency_key=idempotency_key or secrets.token_urlsafe(24),
        )
        reply = self._call(self._stub.Acknowledge, request, witnessed=True)
        receipt = self.verify_receipt(reply.receipt, "ACK", f"alert:{alert_id}")
        return Acknowledged(reply.acknowledgement, receipt)

    def subscribe(
        self,
        *,
        after: int = 0,
        categories: Sequence[alert_pb2.Category.ValueType] = (),
        reconnect: bool = True,
        related: bool = False,
    ) -> Iterator[exchange_pb2.Delivery]:
        """Deliveries after cursor ``after``, UPDATE and CANCEL messages included; with
        ``related``, each with the newest related alerts of its thread that your agency may see
        (``Delivery.related``: the exchange's word, recorded in the ledger; open one with
        :meth:`get_alert` to have it checked).

        On a dropped connection, when the exchange sheds this subscriber for reading too
        slowly (RESOURCE_EXHAUSTED), and when the stream is ended CANCELLED, it reconnects and
        resumes after the last cursor yielded, so nothing is lost; a message may come twice
        (delivery is at least once).

        Raises, while the caller iterates: :class:`SignatureFailed` for a message whose sender
        signature does not verify, and :class:`NotForUs` for one whose signed recipients do not
        name your agency (unless ``verify_senders`` is false); :class:`Refused`
        (PERMISSION_DENIED, INVALID_ARGUMENT);
        :class:`VerificationFailed` for a refused server certificate; and, with ``reconnect``
        false only, :class:`Unreachable` or :class:`Refused` with RESOURCE_EXHAUSTED."""
        cursor, retry = after, 0
        while True:
            call = self._stub.Subscribe(
                exchange_pb2.SubscribeRequest(
                    after=cursor, categories=list(categories), related=related
                )
            )
            try:
                for delivery in call:
                    retry = 0
                    self._check(delivery.alert)
                    self._for_us(delivery.alert, delivered=True)
                    cursor = delivery.cursor
                    yield delivery
                return
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                # A refused server certificate stays refused, and a halted ledger stays halted
                # until an operator acts: resuming would loop for ever.
                if (
                    not reconnect
                    or exc.code() not in RESUMABLE
                    or isinstance(error, VerificationFailed)
                    or (exc.code() == grpc.StatusCode.UNAVAILABLE and isinstance(error, Refused))
                ):
                    raise error from None
                retry += 1
                time.sleep(self._retry.delay(min(retry, 30)))
            finally:
                call.cancel()  # type: ignore[no-untyped-call]

    def get_alert(self, alert_id: str) -> exchange_pb2.AlertView:
        """The thread of ``alert_id``: state, content in force, every message, and the newest
        related alerts your agency may see (``view.related``; the rest from
        :meth:`related_alerts`). The exchange records the read, naming each related alert.

        Raises :class:`Refused` (NOT_FOUND when your agency may not see it), :class:`Unreachable`,
        :class:`SignatureFailed` when a message of the thread is not what its sender signed, and
        :class:`NotForUs` when what its sender signed keeps it from your agency
        (:func:`check_for_us`)."""
        request = exchange_pb2.GetAlertRequest(alert_id=alert_id)
        return self._checked(self._unary(self._stub.GetAlert, request))

    def list_alerts(
        self,
        *,
        categories: Sequence[alert_pb2.Category.ValueType] = (),
        sender_agency: str = "",
        sent_after: datetime | None = None,
        sent_before: datetime | None = None,
        states: Sequence[alert_pb2.AlertState.ValueType] = (),
        page_size: int = 0,
    ) -> Iterator[exchange_pb2.AlertView]:
        """Threads your agency may see, newest first, fetching pages as the caller iterates.

        ``sent_after`` is inclusive, ``sent_before`` exclusive; naive datetimes are UTC.

        Raises, while the caller iterates: :class:`Refused` (INVALID_ARGUMENT for a bad
        filter), :class:`Unreachable`, :class:`SignatureFailed` for a message that is not what
        its sender signed, and :class:`NotForUs` for a thread whose sender's signed marking and
        recipients keep it from your agency."""
        request = exchange_pb2.ListAlertsRequest(
            categories=list(categories),
            sender_agency=sender_agency,
            states=list(states),
            page_size=page_size,
        )
        if sent_after is not None:
            request.sent_after.FromDatetime(sent_after)
        if sent_before is not None:
            request.sent_before.FromDatetime(sent_before)
        return self._pages(self._stub.ListAlerts, request)

    def search_alerts(
        self,
        *,
        passport: str | None = None,
        nik: str | None = None,
        imei: str | None = None,
        name: str | None = None,
        birth_date: date | str | None = None,
        page_size: int = 0,
    ) -> Iterator[exchange_pb2.AlertView]:
        """Threads your agency may see whose subjects match one identifier: a passport number,
        a NIK, an IMEI, or a name with a birth date. The exchange records a digest of the query.

        Raises :class:`UsageError` at once unless exactly one identifier is given; then, while
        the caller iterates, as :meth:`list_alerts` does (PERMISSION_DENIED for an agency that
        may not search)."""
        given = [k for k, v in (("passport", passport), ("nik", nik), ("imei", imei)) if v]
        if name or birth_date:
            if not (name and birth_date):
                raise UsageError("search by name needs a birth date too (and vice versa)")
            given.append("name")
        if len(given) != 1:
            raise UsageError(
                "search by exactly one identifier: a passport number, a NIK, an IMEI, "
                f"or a name with a birth date (got {', '.join(given) or 'none'})"
            )
        request = exchange_pb2.SearchAlertsRequest(
            passport_number=(passport or "").strip().upper(),
            nik=(nik or "").strip(),
            imei=(imei or "").strip(),
            name=(name or "").strip(),
            birth_date=birth_date.isoformat() if isinstance(birth_date, date) else birth_date or "",
            page_size=page_size,
        )
        return self._pages(self._stub.SearchAlerts, request)

    def related_alerts(
        self, alert_id: str, *, page_size: int = 0
    ) -> Iterator[exchange_pb2.RelatedAlert]:
        """The threads your agency may see that share a subject identifier with ``alert_id``'s
        (correlation), newest first, fetching pages as the caller iterates. Each says its id,
        category, sender agency, publication time, state and the kinds of identifier shared,
        never the identifier; the exchange records each one shown. They are the exchange's
        word: :meth:`get_alert` on one checks its sender's signature.

        Raises, while the caller iterates: :class:`Refused` (NOT_FOUND when your agency may not
        see ``alert_id``, INVALID_ARGUMENT for a malformed id or page size) and
        :class:`Unreachable`."""
        request = exchange_pb2.GetRelatedAlertsRequest(alert_id=alert_id, page_size=page_size)
        while True:
            page = self._unary(self._stub.GetRelatedAlerts, request)
            yield from page.related
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def acknowledgements(self, alert_id: str) -> list[alert_pb2.Acknowledgement]:
        """Every acknowledgement of ``alert_id`` if your agency sent it, else your agency's own.

        Acknowledgements carry no content of the alert, nor its marking: there is nothing here for
        :func:`check_for_us` to check (:meth:`get_alert` checks the alert itself).

        Raises :class:`Refused` (NOT_FOUND for an alert your agency neither sent nor received)
        and :class:`Unreachable`."""
        request = exchange_pb2.ListAcknowledgementsRequest(alert_id=alert_id)
        return list(self._unary(self._stub.ListAcknowledgements, request).acknowledgements)

    def verify_sender(
        self, alert: alert_pb2.Alert, original: alert_pb2.Alert | None = None
    ) -> SignedBy:
        """Check ``alert`` against its sender's signature (:func:`clients.verify_alert`).

        Raises :class:`SignatureFailed` saying what is wrong; sends nothing."""
        trust_domain = self._me.trust_domain
        return verify_alert(alert, self.anchors, trust_domain, original=original)

    def _check(self, alert: alert_pb2.Alert, original: alert_pb2.Alert | None = None) -> None:
        if self._verify_senders:
            self.verify_sender(alert, original)

    def _for_us(
        self,
        alert: alert_pb2.Alert,
        original: alert_pb2.Alert | None = None,
        *,
        delivered: bool = False,
    ) -> None:
        """Refuse what the exchange must not have shown this agency (:func:`check_for_us`): an
        exchange that lies, or whose visibility rows were altered. Checked with the signatures,
        so a tool that shows unverified messages (``verify_senders`` false) sees these too."""
        if self._verify_senders:
            check_for_us(alert, self._me.agency, original=original, delivered=delivered)

    def _checked(self, view: exchange_pb2.AlertView) -> exchange_pb2.AlertView:
        """``view`` once every message in it verifies, with the original when it is there, and
        the thread's signed addressing lets this agency see it."""
        original = view.history[0] if view.history else None
        for message in view.history:
            self._check(message, original)
        if view.HasField("current"):
            self._check(view.current, original)
        self._for_us(view.current, original)
        return view

    def _unary(self, method: Callable[..., Reply], request: object) -> Reply:
        return self._call(method, request)

    def _call(
        self,
        method: Callable[..., Reply],
        request: object,
        *,
        witnessed: bool = False,
        signed: SignedRequest | None = None,
    ) -> Reply:
        """One unary call within one deadline, retried on UNAVAILABLE per the retry policy.
        Every write (``witnessed``) carries an idempotency key, so a retry never records anything
        twice; a ``signed`` request is signed afresh for each attempt, so a retry after a long
        outage is not refused for an old signing time (the first attempt's message keeps its
        signature).

        A write whose deadline passed may still have committed (an overloaded exchange answers
        late, and the caller must not be told "failed" for an alert that went out): it is asked
        once more, under the same key and a fresh deadline, and the answer is the committed
        result, or the write now."""
        deadline = time.monotonic() + self._timeout
        attempt, settling = 0, witnessed and self._retry.attempts > 1
        while True:
            attempt += 1
            if signed is not None:
                sign_request(signed, self._signer, self._me)
            metadata = self._witnessed() if witnessed else ()
            try:
                return method(
                    request, timeout=max(deadline - time.monotonic(), 0.001), metadata=metadata
                )
            except grpc.RpcError as exc:
                if settling and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    settling = False  # once: a second expiry is the answer
                    deadline = time.monotonic() + self._timeout
                    continue
                error = from_rpc_error(exc)
                pause = self._retry.delay(attempt)
                if (
                    not isinstance(error, Unreachable)  # we refused its certificate: final
                    or exc.code() != grpc.StatusCode.UNAVAILABLE
                    or attempt >= self._retry.attempts
                    or time.monotonic() + pause >= deadline
                ):
                    raise error from None
            time.sleep(pause)

    def _pages(
        self,
        method: Callable[..., exchange_pb2.ListAlertsResponse],
        request: exchange_pb2.ListAlertsRequest | exchange_pb2.SearchAlertsRequest,
    ) -> Iterator[exchange_pb2.AlertView]:
        """Follow ``next_page_token`` lazily: a caller that stops early fetches no more pages.
        Each page is checked whole before any of it is yielded: a page with a lie in it is not
        half shown."""
        while True:
            page = self._unary(method, request)
            yield from [self._checked(view) for view in page.alerts]
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def _witnessed(self) -> tuple[tuple[str, str], ...]:
        """The size of the kept checkpoint (with a policy, the newest with its quorum), from
        which the receipt's consistency proof is to start."""
        kept = self.witness.pinned(self._verifier.name)
        return ((WITNESSED_SIZE_HEADER, str(kept.checkpoint.size)),) if kept else ()

    @property
    def agency(self) -> str:
        """The agency this identity speaks for."""
        return self._me.agency

    def envelopes(self, start: int, tree_size: int) -> ledger_pb2.Envelopes:
        """One GetEnvelopes answer, unchecked: the entries addressed to this agency among
        ``start``..``tree_size`` (:class:`Monitor` checks them). Recorded as LEDGER_READ."""
        request = ledger_pb2.GetEnvelopesRequest(start=start, tree_size=tree_size)
        return self._call(self._audit.GetEnvelopes, request)

    def alert_proof(self, alert_id: str) -> AlertProof:
        """The proof that message ``alert_id`` was recorded (GetAlertProof), checked here as a
        court would check it offline (:meth:`AlertProof.verify`): the sender's signature, the
        entry, its inclusion in a checkpoint signed by the ledger key and, with a witness
        policy, cosigned by its quorum. The exchange records the read.

        Raises :class:`Refused` (NOT_FOUND for an alert your agency may not see,
        FAILED_PRECONDITION while no cosigned checkpoint covers it yet),
        :class:`VerificationFailed`, :class:`Unreachable`."""
        reply = self._call(
            self._audit.GetAlertProof, ledger_pb2.GetAlertProofRequest(alert_id=alert_id)
        )
        proof = AlertProof.from_reply(reply)
        self.verify_proof(proof)
        if proof.alert.id != alert_id:
            raise VerificationFailed(f"asked for the proof of {alert_id}, got {proof.alert.id}")
        return proof

    def verify_proof(self, proof: AlertProof) -> ProofChecked:
        """:meth:`AlertProof.verify` with this client's ledger key, CAs and witness policy."""
        return proof.verify([self._verifier], self.anchors, self._me.trust_domain, self.policy)

    def consistency_proof(self, first: int, second: int) -> Sequence[bytes]:
        """A consistency proof between two sizes, the second a stored checkpoint's."""
        return self._consistency(first, second)

    def _consistency(self, first: int, second: int) -> Sequence[bytes]:
        """For the witness: a proof to a size it already holds a signed checkpoint of."""
        reply = self._call(
            self._audit.GetConsistencyProof,
            ledger_pb2.ConsistencyProofRequest(first=first, second=second),
        )
        cp = self._open(reply.checkpoint.note)
        if cp.size != second:
            raise VerificationFailed(f"asked for a proof to size {second}, got size {cp.size}")
        return list(reply.proof)

    def _open(self, note: bytes) -> LedgerCheckpoint:
        try:
            return open_checkpoint(note, [self._verifier])
        except LedgerError as exc:
            raise VerificationFailed(f"checkpoint does not verify: {exc}") from None

    def checkpoint(self) -> LedgerCheckpoint:
        """The exchange's newest checkpoint, verified and witnessed; with a witness policy, the
        newest with its quorum (:meth:`newest`).

        Raises :class:`VerificationFailed` when its signature does not verify,
        :class:`QuorumFailed` when a policy's quorum did not cosign it, :class:`OtherLedger`
        when it is of another ledger than the one kept, and :class:`ForkDetected` when it is
        older than, or inconsistent with, one verified before (a rollback or a rewritten
        history)."""
        return self.newest().checkpoint

    def newest(self, *, quorum: bool = True) -> NewestCheckpoint:
        """The exchange's newest checkpoint (GetCheckpoint), verified, with its note as received
        and what the witness policy made of it; witnessed: checked against the kept one of its
        ledger, and kept if newer (:meth:`Witness.observe`). With a policy it must have its
        quorum, unless ``quorum`` is false (to show a ledger whose witnesses lag).

        Raises as :meth:`checkpoint` does, and :class:`Refused` or :class:`Unreachable`."""
        kept = self.witness.pinned(self._verifier.name)
        reply = self._call(self._audit.GetCheckpoint, ledger_pb2.GetCheckpointRequest())
        cp = self._open(reply.note)
        witnessing = self._judge(reply.note, required=quorum)
        cosigned = (cp, reply.note) if witnessing is not None and witnessing.witnessed else None
        self._observe(
            cp, reply.note, newest_since=self._rollback_floor(kept, reply.note), cosigned=cosigned
        )
        return NewestCheckpoint(cp, reply.note, witnessing)

    def _observe(
        self,
        checkpoint: LedgerCheckpoint,
        note: bytes,
        *,
        written: tuple[str, str, int] | None = None,
        proof: Sequence[bytes] = (),
        proof_from: int = 0,
        newest_since: int | None = None,
        cosigned: tuple[LedgerCheckpoint, bytes] | None = None,
    ) -> None:
        """:meth:`Witness.observe`, fetching proofs from the exchange; an :class:`OtherLedger`
        names this identity and exchange, and ``written`` (action, object, seq) for a write."""
        try:
            self.witness.observe(
                checkpoint,
                note,
                proof=proof,
                proof_from=proof_from,
                fetch=self._consistency,
                newest_since=newest_since,
                cosigned=cosigned,
            )
        except OtherLedger as exc:
            action, obj, seq = written if written is not None else (None, None, None)
            raise exc.after(
                identity=str(self.identity.directory),
                server=self.server,
                action=action,
                obj=obj,
                seq=seq,
            ) from None

    def _judge(self, note: bytes, *, required: bool) -> Witnessing | None:
        """What the policy makes of a checkpoint's note (None without a policy):
        :class:`QuorumFailed` when ``required`` and its quorum did not cosign it."""
        if self.policy is None:
            return None
        try:
            cosigned = self.policy.check(note, [self._verifier])
        except QuorumError as exc:
            if required:
                raise QuorumFailed(f"the exchange's newest {exc}") from None
            # check() verified every cosignature before it counted them: these raise nothing.
            cosigners = tuple(sorted(self.policy.cosigners(note)))
            return Witnessing(self.policy.describe(), cosigners=cosigners)
        except LedgerError as exc:
            raise VerificationFailed(f"checkpoint does not verify: {exc}") from None
        return Witnessing.of(self.policy, cosigned, note)

    def _rollback_floor(self, kept: Kept | None, note: bytes) -> int | None:
        """The size the exchange's newest checkpoint may not be below (:func:`ledger.advance`'s
        ``newest_since``): the kept one's, when it is of the kind the exchange answers with. An
        exchange with witnesses answers with its newest checkpoint that has its quorum, which
        trails the batch checkpoints receipts carry: smaller than one of those, it is no
        rollback, and must only be consistent with it."""
        if kept is None:
            return None
        if self.policy is not None:
            return kept.checkpoint.size if kept.witnessed else None
        return None if _signature_lines(note) > 1 else kept.checkpoint.size

    def trust(self, origin: str) -> Trusted:
        """Make the exchange's newest checkpoint, which must be of ``origin``, the kept one of
        this ledger key, replacing the kept ledger of another origin (recorded in the state):
        after the exchange's ledger was made anew on purpose (`sinergi ledger trust`).

        Raises :class:`UsageError` when ``origin`` is not a ledger of this client's ledger key,
        :class:`VerificationFailed` when the checkpoint is of another origin or does not
        verify, :class:`QuorumFailed` when a policy's quorum did not cosign it, and
        :class:`Refused` or :class:`Unreachable`."""
        key_name = self._verifier.name
        if not under_key(origin, key_name):
            raise UsageError(f"{origin} is not a ledger of the key {key_name} (ledger.vkey)")
        reply = self._call(self._audit.GetCheckpoint, ledger_pb2.GetCheckpointRequest())
        cp = self._open(reply.note)
        if cp.origin != origin:
            raise VerificationFailed(
                f"the exchange's newest checkpoint is of ledger {cp.origin}, not {origin}"
            )
        witnessing = self._judge(reply.note, required=True)
        try:
            replaced = self.witness.trust(cp, reply.note, key_name)
        except OtherLedger as exc:  # a state that holds several ledgers of the key
            raise exc.after(identity=str(self.identity.directory), server=self.server) from None
        return Trusted(NewestCheckpoint(cp, reply.note, witnessing), replaced)

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes, bytes]]:
        """Ledger entries start..end as (seq, hash, bytes), for :func:`ledger.verify_ledger`.

        Auditors only; the exchange records the read. The entries are not verified here:
        :func:`ledger.verify_ledger` does that.

        Raises, while the caller iterates: :class:`Refused` (PERMISSION_DENIED for a caller that
        is not an auditor, INVALID_ARGUMENT for a bad range) and :class:`Unreachable` (a stream
        is not retried)."""
        request = ledger_pb2.GetEntriesRequest(start=start, end=end)
        timeout = max(self._timeout, 600)
        try:
            # Pages: grpcio's blocking stream costs about 100 µs of CPU per message here, ten
            # times what checking an entry costs (docs/performance.md, change 19).
            pages = 0
            try:
                for page in self._audit.GetEntryPages(request, timeout=timeout):
                    pages += 1
                    for row in page.entries:
                        yield row.seq, leaf_hash(row.entry), row.entry
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNIMPLEMENTED or pages:
                    raise
            # A server from before GetEntryPages does not know the method: one message each.
            for row in self._audit.GetEntries(request, timeout=timeout):
                yield row.seq, leaf_hash(row.entry), row.entry
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def inclusion(self, seq: int) -> VerifiedReceipt:
        """Entry ``seq`` with its inclusion proof in the newest checkpoint, verified and witnessed.

        Auditors only. Raises :class:`Refused` (PERMISSION_DENIED; NOT_FOUND for no such entry),
        :class:`Unreachable`, :class:`VerificationFailed` when the proof does not verify, and
        :class:`ForkDetected`."""
        reply = self._call(self._audit.GetInclusionProof, ledger_pb2.InclusionProofRequest(seq=seq))
        entry, note = reply.entry, reply.checkpoint.note
        proof = Receipt(seq, leaf_hash(entry), entry, note, 0, tuple(reply.proof))
        verified = self._verified(proof)
        self._observe(verified.checkpoint, verified.note)
        return verified

    def consistency(self, first: int, second: int) -> tuple[LedgerCheckpoint, list[bytes]]:
        """The checkpoint at ``second`` (verified and witnessed) and the proof that size
        ``first`` is its prefix, which the caller checks against its own checkpoint of that
        size (:func:`ledger.verify_consistency`).

        Raises :class:`Refused` (NOT_FOUND for no checkpoint of size ``second``,
        INVALID_ARGUMENT for ``first`` after it), :class:`Unreachable`,
        :class:`VerificationFailed` when the checkpoint does not verify, and
        :class:`ForkDetected`."""
        reply = self._call(
            self._audit.GetConsistencyProof,
            ledger_pb2.ConsistencyProofRequest(first=first, second=second),
        )
        cp = self._open(reply.checkpoint.note)
        self._observe(cp, reply.checkpoint.note)
        return cp, list(reply.proof)

    def verify_receipt(self, receipt: ledger_pb2.Receipt, action: str, obj: str) -> VerifiedReceipt:
        """Check the receipt (:meth:`ledger.Receipt.verify`): the checkpoint's signature, the
        entry's hash and inclusion, and that it records ``action`` of ``obj`` by this agency (a
        retried write is answered with the first attempt's entry, which another system of the
        same agency may have made); then witness its checkpoint. Raises
        :class:`VerificationFailed`, or :class:`ForkDetected` for a rewritten ledger (and
        :class:`Refused` or :class:`Unreachable` if a consistency proof had to be fetched).

        With a witness policy, the receipt's cosigned checkpoint must have its quorum
        (:class:`QuorumFailed`) and connect to the receipt's checkpoint; the result's
        ``witnessing`` says which it is, or that no checkpoint has its quorum yet (a new
        ledger), which is accepted. A receipt of another ledger under the same key than the one
        kept raises :class:`OtherLedger`, saying what was written."""
        shown = _wire_receipt(receipt)
        verified = self._verified(
            shown, action=action, obj=obj, actor=self._same_agency, policy=self.policy
        )
        witnessing = verified.witnessing
        cosigned = None
        if witnessing is not None and witnessing.cosigned is not None:
            cosigned = (witnessing.cosigned, witnessing.note)
        self._observe(
            verified.checkpoint,
            verified.note,
            written=(action, obj, verified.seq),
            proof=list(receipt.consistency_proof),
            proof_from=receipt.witnessed_size,
            cosigned=cosigned,
        )
        return verified

    def _verified(
        self,
        receipt: Receipt,
        *,
        action: str | None = None,
        obj: str | None = None,
        actor: Callable[[str], bool] | None = None,
        policy: WitnessPolicy | None = None,
    ) -> VerifiedReceipt:
        try:
            return receipt.verify(
                [self._verifier], action=action, obj=obj, actor=actor, policy=policy
            )
        except QuorumError as exc:
            raise QuorumFailed(str(exc)) from None
        except LedgerError as exc:
            raise VerificationFailed(str(exc)) from None

    def _same_agency(self, principal: str) -> bool:
        try:
            return SpiffeId.parse(principal).agency == self._me.agency
        except CertsError:
            return False


def _wire_receipt(receipt: ledger_pb2.Receipt) -> Receipt:
    """A receipt as the exchange sends it (its tree size is known once its note is opened)."""
    return Receipt(
        seq=receipt.seq,
        entry_hash=receipt.entry_hash,
        entry=receipt.entry,
        checkpoint=receipt.checkpoint.note,
        tree_size=0,
        inclusion_proof=tuple(receipt.inclusion_proof),
        cosigned=receipt.cosigned.note if receipt.HasField("cosigned") else b"",
        cosigned_proof=tuple(receipt.cosigned_proof),
    )


def _signature_lines(note: bytes) -> int:
    """How many signature lines a note carries (the ledger's own and any cosignatures), read
    without checking them (C2SP signed-note: they follow the last empty line)."""
    _text, _, signatures = note.rpartition(b"\n\n")
    return signatures.count(b"\n")
