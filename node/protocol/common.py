"""Events and actions that both protocol engines (DFL and BLADE-FL) speak.

A host that runs either engine feeds it the same kinds of input (samples arrived, a record came
in, peers changed, time passed) and sends what it asks to send the same way, so these live here
and the engines add only what is their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplesCollected:
    count: int


@dataclass(frozen=True)
class TransactionReceived:
    """A model record (DFL transaction or BLADE-FL pool model) as wire bytes, from `sender`."""

    payload: bytes
    sender: str


@dataclass(frozen=True)
class PeersChanged:
    peers: tuple[str, ...]


@dataclass(frozen=True)
class Tick:
    pass


class MessageKind(enum.Enum):
    """What a Send carries; each kind is one RPC of the node service."""

    TRANSACTION = "transaction"
    DRAFT_BLOCK = "draft_block"
    CONFIRMATIONS = "confirmations"
    POW_BLOCK = "pow_block"
    BLOCK_VOTE = "block_vote"


@dataclass(frozen=True)
class Send:
    to: tuple[str, ...]
    kind: MessageKind
    payload: bytes


def to_ms(now: float) -> int:
    return round(now * 1000)
