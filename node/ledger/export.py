"""Chain export as JSON lines: one object per block, the genesis first, bytes as hex.

Blocks already store transactions without their weights, so every model appears as the digest
and size its generator signed; an export is small enough to diff, grep and load into pandas.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from node.ledger.records import confirmed_fraction
from node.ledger.store import ChainStore
from node.ledger.validation import decode
from proto.dfl.v1 import records_pb2 as pb


def to_plain(message: Message) -> dict[str, Any]:
    """The set fields of `message` as JSON-ready values; bytes become lowercase hex."""
    plain: dict[str, Any] = {}
    for descriptor, value in message.ListFields():
        plain[descriptor.name] = (
            [_plain_value(descriptor, item) for item in value]
            if descriptor.is_repeated
            else _plain_value(descriptor, value)
        )
    return plain


def _plain_value(descriptor: FieldDescriptor, value: Any) -> Any:
    if descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        return to_plain(value)
    if descriptor.type == FieldDescriptor.TYPE_BYTES:
        return value.hex()
    return value


def export_lines(store: ChainStore) -> Iterator[str]:
    yield json.dumps({"height": 0, "genesis": to_plain(store.genesis)}, sort_keys=True)
    for height, _, data in store.blocks():
        block = decode(store.format.message, data)
        line: dict[str, Any] = {"height": height, "block": to_plain(block)}
        if isinstance(block, pb.Block):
            line["confirmed_fraction"] = round(confirmed_fraction(block), 6)
        yield json.dumps(line, sort_keys=True)
