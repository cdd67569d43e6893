"""Network faults injected by the node itself: latency, jitter, loss and partitions.

These machines have no netem (the kernel module behind Pumba, Blockade and Chaos Mesh), so a node
degrades its own gossip: a gRPC server interceptor for what peers send it, a client interceptor
for what it sends them. Only peer traffic is touched (records and chain fetches); the
orchestrator's calls (injection, status, the fault switch itself) always get through, or a fault
could never be healed. The fault is switched by the authenticated control call SetNetworkFault,
never by a peer.

Which messages are lost and how much jitter each gets comes from the node's own stream
(node/seeds.py NETWORK_FAULT), so a run with the same spec and seed draws the same fate for the
n-th message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from node import seeds
from node.service.peers import DROPPED, METHODS, SENDER_METADATA
from proto.dfl.v1 import node_pb2

# The RPCs that carry peer traffic: what a network fault delays or drops.
GOSSIP_METHODS = frozenset({*METHODS.values(), "StreamChain", "GetRoundModels"})


@dataclass(frozen=True)
class NetworkFault:
    """What the network does to this node's gossip now; the default is a healthy network."""

    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds, uniform in [-jitter, +jitter]
    loss: float = 0.0  # probability that a message is lost
    cut: frozenset[str] = field(default_factory=frozenset)  # peers (host:port) cut off

    @classmethod
    def from_message(cls, message: node_pb2.NetworkFault) -> NetworkFault:
        """ValueError naming the field when the message asks for something impossible."""
        if not 0.0 <= message.loss <= 1.0:
            raise ValueError(f"loss {message.loss} is not a probability")
        if message.jitter_ms > message.delay_ms:
            raise ValueError(f"jitter_ms {message.jitter_ms} exceeds delay_ms {message.delay_ms}")
        return cls(
            message.delay_ms / 1000, message.jitter_ms / 1000, message.loss, frozenset(message.cut)
        )

    def to_message(self) -> node_pb2.NetworkFault:
        return node_pb2.NetworkFault(
            delay_ms=round(self.delay * 1000),
            jitter_ms=round(self.jitter * 1000),
            loss=self.loss,
            cut=sorted(self.cut),
        )

    @property
    def healthy(self) -> bool:
        return not (self.delay or self.loss or self.cut)


class NetworkFaults:
    """The node's current fault and the seeded draws that apply it, message by message."""

    def __init__(
        self,
        seed: int,
        index: int,
        on_fault: Callable[[str, str], None] = lambda direction, fate: None,
    ) -> None:
        self.fault = NetworkFault()
        self._random = seeds.stream(seed, seeds.Purpose.NETWORK_FAULT, index)
        self._on_fault = on_fault  # (direction in|out, fate dropped|delayed): the metrics

    def fate(self, peer: str, direction: str) -> float | None:
        """None: the message is lost; else the seconds it is held back (0: untouched)."""
        fault = self.fault
        if fault.healthy:
            return 0.0
        if peer in fault.cut or (fault.loss and self._random.random() < fault.loss):
            self._on_fault(direction, "dropped")
            return None
        if not fault.delay:
            return 0.0
        self._on_fault(direction, "delayed")
        return max(0.0, fault.delay + fault.jitter * (2 * self._random.random() - 1))


def _method(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class IncomingFaults(grpc.aio.ServerInterceptor):
    """What peers send: held back, or refused as UNAVAILABLE, as a lossy link would lose it."""

    def __init__(self, faults: NetworkFaults) -> None:
        self._faults = faults

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or self._faults.fault.healthy
            or _method(handler_call_details.method) not in GOSSIP_METHODS
        ):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        fate = self._faults.fate(str(metadata.get(SENDER_METADATA, "")), "in")
        if handler.unary_stream is not None:
            return _delayed_stream(handler, fate)
        return _delayed_unary(handler, fate)


def _delayed_unary(handler: grpc.RpcMethodHandler, fate: float | None) -> grpc.RpcMethodHandler:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if fate is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, DROPPED)
        await asyncio.sleep(fate)
        return await handler.unary_unary(request, context)

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _delayed_stream(handler: grpc.RpcMethodHandler, fate: float | None) -> grpc.RpcMethodHandler:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if fate is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, DROPPED)
        await asyncio.sleep(fate)
        async for response in handler.unary_stream(request, context):
            yield response

    return grpc.unary_stream_rpc_method_handler(
        call,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _lost() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), DROPPED
    )


class OutgoingFaults(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """What this node sends one peer: held back, or lost (the sender sees UNAVAILABLE and
    retries as it would on a real lossy link)."""

    def __init__(self, faults: NetworkFaults, peer: str) -> None:
        self._faults = faults
        self._peer = peer

    async def _hold(self) -> None:
        fate = self._faults.fate(self._peer, "out")
        if fate is None:
            raise _lost()
        if fate:
            await asyncio.sleep(fate)

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        await self._hold()
        return await continuation(client_call_details, request)

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        await self._hold()
        return await continuation(client_call_details, request)
