"""The guard every RPC passes through: identity, rate, what the caller's identity may call,
error mapping, DENIED records and the log line.

grpcio's ``ServerInterceptor`` sees no peer, so the guard wraps each method handler to get the
``ServicerContext`` (docs/grpc-python.md). Methods are registered without a request
deserializer and parsed here, so malformed bytes are answered INVALID_ARGUMENT and recorded instead
of grpcio's bare INTERNAL. Nothing reaches a servicer without an authenticated :class:`Principal`
whose kind or name the policy grants the method (:meth:`Policy.authorize_call`): the servicers
check the agency's roles and the alerts, the guard which of the agency's identities may act.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import contextvars
import hashlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_status import rpc_status

from exchange import _entries
from exchange._errors import (
    ExchangeError,
    Internal,
    InvalidArgument,
    RateLimited,
    ResourceExhausted,
    ledger_unavailable,
)
from exchange._identity import PeerRejected, Principal, Trust, authenticate, require
from exchange._limits import RateLimiter
from exchange._metrics import Metrics
from exchange._policy import Policy
from ledger import Actor, EntryDraft, LedgerError
from ledger.store import LedgerWriter

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal")
_denied: contextvars.ContextVar[DeniedRecorder] = contextvars.ContextVar("denied")
_log = structlog.get_logger("sinergi.rpc")


def current_principal() -> Principal:
    """The caller of the RPC being served (set by the guard before any servicer code runs)."""
    return _principal.get()


def denied_recorder() -> DeniedRecorder:
    """The recorder of the RPC being served (set by the guard before any servicer code runs)."""
    return _denied.get()


class DeniedRecorder:
    """The one writer of DENIED entries: one per call, so that a refusal is recorded once.

    The guard writes every refusal that leaves a servicer (:meth:`write`). A refusal decided in a
    ledger work, from what the work read (a reused idempotency key, an alert not visible), is
    returned by the work with :meth:`within`: its entry names the alert asked for and commits in
    the same transaction as the decision, and the guard then knows it is written.
    """

    def __init__(self, ledger: LedgerWriter, method: str, raw: bytes, *, recorded: bool) -> None:
        self._ledger = ledger
        self.method = method  # the full path: /sinergi.v1.Exchange/Publish
        self.digest = hashlib.sha256(raw).hexdigest()  # of the request bytes as received
        self.actor = Actor("unknown", "")  # whom the peer's certificate names, once authenticated
        #: False: this call's refusals are not written (health and reflection, or a rate-limit
        #: refusal after the first of its second)
        self.recorded = recorded
        self._written: ExchangeError | None = None

    def within(
        self, error: ExchangeError, objects: tuple[str, ...] = ()
    ) -> tuple[ExchangeError, list[EntryDraft]]:
        """``error`` and its DENIED entry naming ``objects``, for a ledger work to return."""
        self._written = error
        return error, [_entries.denied(self.actor, self.method, self.digest, error, objects)]

    async def commit(self, error: ExchangeError, objects: tuple[str, ...]) -> ExchangeError:
        """Commit ``error``'s DENIED entry naming ``objects`` and return it to raise: for a
        refusal decided after a read (an alert not visible), committed before the answer as a
        write's work commits its refusal, so that when the ledger cannot take it the caller is
        answered UNAVAILABLE, never the refusal unrecorded."""
        try:
            work = self._ledger.submit(lambda _c, _s: self.within(error, objects))
            await asyncio.wrap_future(work)
        except LedgerError as exc:
            raise ledger_unavailable(self._ledger.halted) from exc
        return error

    async def write(self, error: ExchangeError) -> None:
        """Append ``error``'s DENIED entry and wait for its commit, unless it is written."""
        if not self.recorded or error is self._written:
            return
        entry = _entries.denied(self.actor, self.method, self.digest, error)
        try:
            await asyncio.wrap_future(self._ledger.append(entry))
        except Exception:  # the refusal stands; losing its record must be loud
            if self._ledger.halted is None:
                _log.exception("could not record a denied request", method=self.method)
            else:  # the halt itself is logged at error, once, with its reason
                _log.warning("denied request not recorded: ledger halted", method=self.method)


if TYPE_CHECKING:  # grpc-stubs makes these generic; grpcio's classes are not subscriptable
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


class Guard(_Interceptor):
    """``unrecorded`` names services (health, reflection) that carry no alert or ledger data:
    their refusals are logged and counted but not written to the ledger, so a misconfigured
    probe cannot fill it with DENIED entries."""

    def __init__(
        self,
        ledger: LedgerWriter,
        trust: Trust,
        stall_seconds: float = 30.0,
        *,
        metrics: Metrics | None = None,
        unrecorded: Collection[str] = (),
        limiter: RateLimiter | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._ledger = ledger
        self._trust = trust  # the server's CAs and CRL, replaced in place on rotation
        self._stall_seconds = stall_seconds
        self._metrics = metrics
        self._unrecorded = frozenset(unrecorded)
        self._limiter = limiter
        self._policy = policy  # None: no per-identity grants (the servicers' checks alone)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        details: grpc.HandlerCallDetails,
    ) -> _Handler:
        # grpc-stubs types handlers of the sync server; ours are coroutines and async generators.
        handler: Any = await continuation(details)
        if handler is None:
            return None  # type: ignore[return-value]  # grpcio then answers UNIMPLEMENTED
        method: str = details.method
        parse = handler.request_deserializer
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def unary_behavior(
                raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
            ) -> Any:  # noqa: ANN401
                call = _Call(self, method, raw, context)
                try:
                    request = call.start(parse)
                    return await unary(request, context)
                except BaseException as exc:
                    await call.fail(exc)
                finally:
                    call.log()

            return grpc.unary_unary_rpc_method_handler(
                unary_behavior, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None:
            stream = handler.unary_stream

            async def stream_behavior(
                raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
            ) -> None:
                # Writes, not yields, so that a consumer that stops reading (its HTTP/2 window
                # full) is cut off after stall_seconds instead of holding the stream forever.
                call = _Call(self, method, raw, context)
                try:
                    request = call.start(parse)
                    await self._relay(stream(request, context), context, call)
                except BaseException as exc:
                    await call.fail(exc)
                finally:
                    call.log()

            return grpc.unary_stream_rpc_method_handler(
                stream_behavior, response_serializer=_as_is(handler.response_serializer)
            )
        if handler.stream_stream is not None:  # server reflection
            bidi = handler.stream_stream

            async def bidi_behavior(
                requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
            ) -> None:
                call = _Call(self, method, b"", context)
                try:
                    call.start(None)
                    await self._relay(bidi(_parsed(requests, parse), context), context, call)
                except BaseException as exc:
                    await call.fail(exc)
                finally:
                    call.log()

            return grpc.stream_stream_rpc_method_handler(
                bidi_behavior, response_serializer=handler.response_serializer
            )
        raise NotImplementedError(f"{method}: client-streaming methods are not served")

    async def _relay(
        self, output: object, context: grpc.aio.ServicerContext[Any, Any], call: _Call
    ) -> None:
        """Send what a streaming servicer yields; one that writes itself (health's Watch) is
        awaited. The generator is closed here, so its cleanup (a subscriber count) runs now."""
        if inspect.isawaitable(output):
            await output
            return
        assert isinstance(output, collections.abc.AsyncGenerator)
        watch = _StallWatch(self._stall_seconds)
        try:
            async with contextlib.aclosing(output) as items:
                async for item in items:
                    await self._write(context, item, call, watch)
        finally:
            watch.stop()

    async def _write(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        item: object,
        call: _Call,
        watch: _StallWatch,
    ) -> None:
        """Write one message, or give up on a consumer that has stopped reading.

        grpcio cannot end a call while a message is stuck in flow control: the status goes out
        after it, when the client reads again. So the stalled client still gets everything in
        flight, then RESOURCE_EXHAUSTED; meanwhile the stream holds one message and no page."""
        watch.started = watch.loop.time()
        try:
            await context.write(item)
        except asyncio.CancelledError:
            if not watch.stalled:
                raise
            watch.task.uncancel()
            stall = self._stall_seconds
            _log.warning("stream stalled", method=call.method, peer=call.peer, stall_seconds=stall)
            raise ResourceExhausted(
                f"you read nothing for {self._stall_seconds:g} s; "
                "resume from the last cursor you received"
            ) from None
        except Exception:
            if context.cancelled() or context.done():
                raise _ClientGone from None  # it hung up or its deadline passed mid-write
            raise
        finally:
            watch.started = None


class _StallWatch:
    """One timer per stream, not one per message (a timer per write was a sixth of the event
    loop's time under fan-out): it fires every ``stall`` seconds, or ``stall`` after the write in
    progress began, and cancels the stream's task once a write has waited that long."""

    def __init__(self, stall: float) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.stall = stall
        self.started: float | None = None  # when the write in progress began
        self.stalled = False
        self._timer = self.loop.call_later(stall, self._check)

    def _check(self) -> None:
        started = self.started
        if started is not None and self.loop.time() - started >= self.stall:
            self.stalled = True
            self.task.cancel()
            return
        self._timer = self.loop.call_at((started or self.loop.time()) + self.stall, self._check)

    def stop(self) -> None:
        self._timer.cancel()


def _as_is(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """``serialize``, except for bytes, sent as they are: a message serialized once for every
    stream it goes to (a Subscribe page, docs/performance.md "Fan-out")."""
    if serialize is None:
        return None

    def serializer(message: Any) -> bytes:  # noqa: ANN401
        return message if type(message) is bytes else serialize(message)

    return serializer


async def _parsed(
    requests: AsyncIterator[bytes], parse: Callable[[bytes], Any] | None
) -> AsyncIterator[Any]:
    async for raw in requests:
        if parse is None:
            yield raw
            continue
        try:
            yield parse(raw)
        except DecodeError:
            raise InvalidArgument("request is not a valid protobuf message") from None


class _ClientGone(Exception):
    """The client left while we were writing to it: nothing to answer, nothing to record."""


class _Call:
    """One RPC as the guard sees it."""

    def __init__(
        self, guard: Guard, method: str, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self.guard, self.method, self.raw, self.context = guard, method, raw, context
        # Read now: after a stream is cancelled, grpcio's aio context may no longer be usable
        # (calling peer() in a finally block of a cancelled stream crashed the process).
        self.peer = context.peer()
        self.service = method.split("/")[1] if method.count("/") >= 2 else method
        self.started = time.perf_counter()
        self.who: Principal | PeerRejected | None = None
        self.code = grpc.StatusCode.OK
        recorded = self.service not in guard._unrecorded
        self.denied = DeniedRecorder(guard._ledger, method, raw, recorded=recorded)

    def start(self, parse: Callable[[bytes], Any] | None) -> Any:  # noqa: ANN401
        _denied.set(self.denied)
        self.who = authenticate(self.context, self.guard._trust)
        self.denied.actor = self.who.actor
        principal = require(self.who)
        _principal.set(principal)
        guarded = self.service not in self.guard._unrecorded
        limiter = self.guard._limiter
        if limiter is not None and guarded:
            allowed, record = limiter.take(str(principal.id))
            if not allowed:
                self.denied.recorded = record  # only the first refusal of each second
                raise RateLimited(f"more than {limiter.rate:g} requests per second; retry later")
        if self.guard._policy is not None and guarded:
            self.guard._policy.authorize_call(principal.id, self.method)
        if parse is None:
            return self.raw
        try:
            return parse(self.raw)
        except DecodeError:
            raise InvalidArgument("request is not a valid protobuf message") from None

    async def fail(self, exc: BaseException) -> None:
        if isinstance(exc, grpc.aio.AbortError):  # the servicer aborted (health: NOT_FOUND)
            with contextlib.suppress(Exception):
                code: object = self.context.code()
                self.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            raise exc
        if isinstance(exc, _ClientGone):
            self.code = grpc.StatusCode.CANCELLED
            return
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            self.code = grpc.StatusCode.CANCELLED
            raise exc
        if not isinstance(exc, ExchangeError):
            _log.error("unhandled error", method=self.method, exc_info=exc)
            exc = Internal("internal error")
        self.code = exc.code
        if exc.denied:
            if self.guard._metrics is not None:
                self.guard._metrics.denied(self.method, exc.code.name)
            await self.denied.write(exc)
        status = rpc_status.to_status(exc.to_status())
        await self.context.abort(status.code, status.details, status.trailing_metadata)

    def log(self) -> None:
        who = self.who
        seconds = time.perf_counter() - self.started
        if self.guard._metrics is not None:
            self.guard._metrics.rpc(self.method, self.code.name, seconds)
        _log.info(
            "rpc",
            method=self.method,
            principal=str(who.id) if isinstance(who, Principal) else "unauthenticated",
            cert=who.fingerprint if isinstance(who, Principal) else None,
            peer=self.peer,
            code=self.code.name,
            duration_ms=round(seconds * 1000, 3),
        )
