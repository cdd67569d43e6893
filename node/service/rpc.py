"""Every RPC's front door: who is calling, may they, and what did they send.

gRPC's own deserializer raises on bytes that do not parse, which reaches the client as UNKNOWN
and the node's log as a seven-line traceback per call. So every method here takes raw bytes and
goes through one gate, in this order: a banned connection is refused; a control call must carry
the orchestrator's signature (node/service/control.py), any other call must fit its connection's
rate; the request must fit its method's size bound; then it is decoded here (a record is decoded
by the engine, which names what is wrong with it). Each refusal answers a definite status, is
counted in dfl_rejected_total by reason, and is logged in one line, at most a few a second.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.validation import decode
from node.service import loopcpu
from node.service.admission import Admission
from node.service.control import CONTROL_METHODS, ControlRefused, ControlVerifier

log = logging.getLogger(__name__)

LOG_LINES_PER_SECOND = 5


class Refused(Exception):
    """A request the node will not serve: counted under `reason`, answered with `status`."""

    def __init__(self, reason: RejectReason, detail: str, status: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.status = grpc.StatusCode[status or reason.grpc_status]


class RateLimitedLog:
    """At most `per_second` refusal lines a second; the rest are counted and summarised."""

    def __init__(self, per_second: int = LOG_LINES_PER_SECOND) -> None:
        self._per_second = per_second
        self._second = 0
        self._lines = 0
        self._suppressed: Counter[str] = Counter()

    def refused(self, method: str, peer: str, refusal: Refused, now: float) -> None:
        second = int(now)
        if second != self._second:
            if self._suppressed:
                summary = ", ".join(f"{n} {r}" for r, n in self._suppressed.most_common())
                log.warning("refusals not logged in the last second: %s", summary)
                self._suppressed.clear()
            self._second, self._lines = second, 0
        if self._lines >= self._per_second:
            self._suppressed[refusal.reason.label] += 1
            return
        self._lines += 1
        log.warning(
            "refused %s from %s: %s: %s", method, peer, refusal.reason.label, refusal.detail
        )


@dataclass(frozen=True)
class Method:
    """One RPC: its handler and what the gate checks before it.

    `request` None: the handler takes the raw bytes (records, which the engine decodes).
    `shape`: unary (one request, one response), stream_in (a stream of requests, one response)
    or stream_out (one request, a stream of responses).
    `task`: the profiler task its loop CPU and bytes are charged to (node/service/loopcpu.py);
    a record's handler may name a more precise one once it knows the record.
    """

    handler: Callable[..., Any]
    request: type[Message] | None
    max_bytes: int
    shape: str = "unary"
    task: str = "observe"


def _bare(refusal: Refused) -> Refused:
    """The refusal without its traceback and context: those hold the handler's frames, and
    with them the request, until the garbage collector finds the cycle."""
    refusal.__traceback__ = None
    refusal.__context__ = None
    return refusal


def _serialize(response: Message | bytes) -> bytes:
    """Handlers answer a message, or bytes already serialized (records, blocks)."""
    data = response if isinstance(response, bytes) else response.SerializeToString()
    loopcpu.moved(len(data))
    return data


def decode_request(message_type: type[Message], data: bytes, max_bytes: int) -> Message:
    """Parses one request (bounded) as records are parsed; Refused, never a traceback."""
    try:
        return decode(message_type, data, max_bytes)
    except RecordRejected as rejected:
        raise Refused(rejected.reason, rejected.detail) from None


class Gate:
    """The checks every call passes, and what a refusal does (count, log, answer)."""

    def __init__(
        self,
        admission: Admission,
        verifier: ControlVerifier,
        count: Callable[[RejectReason], None],
    ) -> None:
        self.admission = admission
        self.verifier = verifier
        self._count = count
        self._log = RateLimitedLog()

    def admit(self, method: str, context: grpc.aio.ServicerContext) -> None:
        """Raises Refused unless the call may go on to its request."""
        peer, now = context.peer(), time.time()
        banned = self.admission.banned(peer, now)
        if banned is not None:
            raise Refused(RejectReason.BANNED, f"this connection is banned for {banned:.0f} s")
        if method in CONTROL_METHODS:
            try:
                self.verifier.check(method, context.invocation_metadata() or (), now)
            except ControlRefused as refused:
                raise Refused(
                    RejectReason.UNAUTHENTICATED, refused.detail, refused.status
                ) from None
        elif not self.admission.allow_request(peer, now):
            raise Refused(RejectReason.RATE_LIMITED, "too many requests from this connection")

    async def refuse(
        self, method: str, context: grpc.aio.ServicerContext, refusal: Refused
    ) -> None:
        self._count(refusal.reason)
        self._log.refused(method, context.peer(), refusal, time.time())
        await context.abort(refusal.status, f"{refusal.reason.label}: {refusal.detail}")

    def handler(self, name: str, method: Method) -> grpc.RpcMethodHandler:
        """The gRPC handler of `method`: raw bytes in, every check, then `method.handler`."""
        if method.shape == "stream_in":
            build = grpc.stream_unary_rpc_method_handler
            call: Any = self._stream_in(name, method)
        elif method.shape == "stream_out":
            build, call = grpc.unary_stream_rpc_method_handler, self._stream_out(name, method)
        else:
            build, call = grpc.unary_unary_rpc_method_handler, self._unary(name, method)
        return build(call, response_serializer=_serialize)

    def _request(self, method: Method, data: bytes) -> Any:
        if method.request is None:  # a record: its handler counts the bytes for its task
            if len(data) > method.max_bytes:
                raise Refused(
                    RejectReason.MESSAGE_TOO_LARGE, f"{len(data)} bytes; at most {method.max_bytes}"
                )
            return data
        loopcpu.moved(len(data))
        return decode_request(method.request, data, method.max_bytes)

    def _unary(
        self, name: str, method: Method
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def call(data: bytes, context: grpc.aio.ServicerContext) -> Any:
            loopcpu.charge_to(method.task)
            try:
                self.admit(name, context)
                return await method.handler(self._request(method, data), context)
            except Refused as caught:
                refusal = _bare(caught)
            del data  # a refused 16 MB request must not outlive its answer
            await self.refuse(name, context, refusal)

        return call

    def _stream_out(
        self, name: str, method: Method
    ) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def call(data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            loopcpu.charge_to(method.task)
            try:
                self.admit(name, context)
                request = self._request(method, data)
            except Refused as caught:
                refusal = _bare(caught)
            else:
                async for response in method.handler(request, context):
                    yield response
                return
            await self.refuse(name, context, refusal)

        return call

    def _stream_in(
        self, name: str, method: Method
    ) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext], Awaitable[Any]]:
        async def call(chunks: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            loopcpu.charge_to(method.task)
            try:
                self.admit(name, context)

                async def requests() -> AsyncIterator[Any]:
                    async for data in chunks:
                        yield self._request(method, data)

                return await method.handler(requests(), context)
            except Refused as caught:
                refusal = _bare(caught)
            await self.refuse(name, context, refusal)

        return call
