"""Clients for a node's peers: raw record bytes out, bounded retries, never blocking the node.

The engine already serialized what it sends, so the payload goes on the wire as it is. A peer
that is down costs a few retries with back-off and a counted failure; the node keeps working.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from node.protocol.dfl import MessageKind

log = logging.getLogger(__name__)

SERVICE = "dfl.v1.Node"
METHODS = {
    MessageKind.TRANSACTION: "SubmitTransaction",
    MessageKind.DRAFT_BLOCK: "SubmitDraftBlock",
    MessageKind.CONFIRMATIONS: "SubmitConfirmations",
}
SENDER_METADATA = "dfl-sender"  # the sender's listen address, for routing receipts back
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def _identity(payload: bytes) -> bytes:
    return payload


class PeerClient:
    """One peer's channel and the three record-carrying calls."""

    def __init__(
        self,
        target: str,
        sender: str,
        *,
        timeout: float,
        retries: int,
        on_failure: Callable[[str, str], None] = lambda peer, code: None,
    ) -> None:
        self.target = target
        self._metadata = ((SENDER_METADATA, sender),)
        self._timeout = timeout
        self._retries = retries
        self._on_failure = on_failure
        self._channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
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
                if code not in RETRYABLE:
                    # The peer refused the record (duplicate, expired, ...): normal in gossip.
                    log.debug("%s refused %s: %s", self.target, kind.value, error.details())
                else:
                    log.warning("%s unreachable for %s: %s", self.target, kind.value, code.name)
                self._on_failure(self.target, code.name)
                return False
        return False

    async def close(self) -> None:
        await self._channel.close()
