"""Clients for a node's peers: raw record bytes out, bounded retries, never blocking the node.

The engine already serialized what it sends, so the payload goes on the wire as it is. A peer
that is down costs a few retries with back-off and a counted failure; the node keeps working.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence

import grpc

from node.ledger.errors import RejectReason
from node.protocol.events import MessageKind
from node.service import tls as transport
from node.service.config import TlsFiles
from node.service.rpc import Refused
from proto.dfl.v1 import node_pb2, records_pb2

log = logging.getLogger(__name__)

SERVICE = "dfl.v1.Node"
PEER_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
METHODS = {
    MessageKind.TRANSACTION: "SubmitTransaction",
    MessageKind.DRAFT_BLOCK: "SubmitDraftBlock",
    MessageKind.CONFIRMATIONS: "SubmitConfirmations",
    MessageKind.POW_BLOCK: "SubmitPowBlock",
    MessageKind.BLOCK_VOTE: "SubmitBlockVote",
}
SENDER_METADATA = "dfl-sender"  # the sender's listen address, for routing receipts back
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
MAX_CONCURRENT_STREAMS = 64  # per connection: one client cannot hold every RPC slot


def server_options(max_request_bytes: int) -> list[tuple[str, int]]:
    """A node's server: requests up to the largest record (the gate refuses anything between
    its own bounds and this), answers as large as a chain or a round's models."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", max_request_bytes + 1024),
        ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
    ]


DROPPED = "network fault: dropped"  # what an injected loss answers (node/service/netfault.py)
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _identity(payload: bytes) -> bytes:
    return payload


class PeerClient:
    """One peer's channel: the record-carrying calls, and fetching its chain."""

    def __init__(
        self,
        target: str,
        sender: str,
        *,
        timeout: float,
        retries: int,
        on_failure: Callable[[str, str], None] = lambda peer, code: None,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
        tls: TlsFiles | None = None,
    ) -> None:
        self.target = target
        self._metadata = ((SENDER_METADATA, sender),)
        self._timeout = timeout
        self._retries = retries
        self._on_failure = on_failure
        # Over TLS when the node has certificates: the peer must show one of the run's CA.
        self._channel = transport.channel(target, tls, CHANNEL_OPTIONS, interceptors)
        self._calls = {
            kind: self._channel.unary_unary(
                f"/{SERVICE}/{method}",
                request_serializer=_identity,
                response_deserializer=_identity,
            )
            for kind, method in METHODS.items()
        }

    async def send(self, kind: MessageKind, payload: bytes) -> bool:
        """True when the peer accepted it; False when it refused or could not be reached."""
        for attempt in range(self._retries + 1):
            try:
                await self._calls[kind](payload, timeout=self._timeout, metadata=self._metadata)
                return True
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code in RETRYABLE and attempt < self._retries:
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                if code not in RETRYABLE or error.details() == DROPPED:
                    # The peer refused the record (duplicate, expired, ...): normal in gossip;
                    # or an injected fault lost it, which the fault's own counters show.
                    log.debug("%s did not take %s: %s", self.target, kind.value, error.details())
                else:
                    log.warning("%s unreachable for %s: %s", self.target, kind.value, code.name)
                self._on_failure(self.target, code.name)
                return False
        return False

    async def fetch_chain(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        """The peer's blocks from height 1 (raw) and its pool models of the last block's round.

        Raises grpc.aio.AioRpcError when the peer cannot be reached; the caller reports it.
        """
        stream = self._channel.unary_stream(
            f"/{SERVICE}/StreamChain",
            request_serializer=node_pb2.ChainRequest.SerializeToString,
            response_deserializer=_identity,
        )
        blocks = tuple(
            [block async for block in stream(node_pb2.ChainRequest(from_height=1), timeout=30)]
        )
        round_models = self._channel.unary_unary(
            f"/{SERVICE}/GetRoundModels",
            request_serializer=node_pb2.RoundRequest.SerializeToString,
            response_deserializer=records_pb2.TransactionBatch.FromString,
        )
        batch = await round_models(node_pb2.RoundRequest(round=len(blocks)), timeout=30)
        models = tuple(tx.SerializeToString(deterministic=True) for tx in batch.transactions)
        return blocks, models

    async def close(self) -> None:
        await self._channel.close()


def check_peer_address(peer: str) -> None:
    """host:port with a plausible host and a port number; Refused naming what is wrong."""
    host, colon, port = peer.rpartition(":")
    if not colon or not PEER_HOST.fullmatch(host) or not (port.isascii() and port.isdigit()):
        raise Refused(RejectReason.BAD_PEER_ADDRESS, f"{peer!r} is not host:port")
    if not 1 <= int(port) <= 65535:
        raise Refused(RejectReason.BAD_PEER_ADDRESS, f"port {port} is not in 1-65535")
