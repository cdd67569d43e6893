"""Hypothesis strategies for hostile bytes: random, near the size limit, and mutated records.

Random bytes alone rarely get past a protobuf parser into a validator, so most strategies start
from a valid seed (tests/fuzz/corpus.py) and damage it a little: at the byte level, field by
field on the wire (tests/fuzz/wire.py), by splicing two records, or by setting one field of the
parsed message to a hostile value through the protobuf API, the way a peer with its own encoder
would. The first three are mutation programs (tests/fuzz/programs.py), drawn as one binary value
and also run by the atheris target; the typed edits draw Hypothesis's own floats, text and JSON.
Only typed edits reach checks behind a digest, so they may also recompute digests, as a forger
who can hash but not sign would (and, for the unsigned genesis, anyone editing a store).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from functools import cache, partial
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from node.learning.codec import MAX_SAFETENSORS_HEADER
from node.ledger.hashing import digest_message
from node.ledger.pow import header_hash
from proto.dfl.v1 import records_pb2 as pb
from tests.fuzz import programs, wire
from tests.fuzz.corpus import CHAIN_BLOCKS, CHAIN_MODELS, FUZZ_MAX_BYTES
from tests.fuzz.targets import ALL_SEEDS, Target

Path = tuple[tuple[str, int | None], ...]

# --- random input -------------------------------------------------------------------------------


def random_bytes() -> st.SearchStrategy[bytes]:
    """Mostly short, some up to a kilobyte: what a garbled or hostile connection sends."""
    return st.one_of(st.binary(max_size=16), st.binary(max_size=160), st.binary(max_size=1024))


def random_messages() -> st.SearchStrategy[bytes]:
    """Well-formed wire messages of random fields (programs.random_message), which parse into
    some record and so reach the first checks behind the parser."""
    return _programs(max_size=256).map(programs.random_message)


def near_the_limit() -> st.SearchStrategy[bytes]:
    """Inputs a few bytes either side of FUZZ_MAX_BYTES, filled with a short repeated pattern
    (a 4 KiB random draw would exhaust Hypothesis's buffer), some starting with a valid seed."""
    return st.builds(
        lambda size, head, pattern: (head + pattern * (size // max(len(pattern), 1) + 1))[:size],
        st.integers(FUZZ_MAX_BYTES - 3, FUZZ_MAX_BYTES + 3),
        st.sampled_from((b"", *ALL_SEEDS)),
        st.binary(min_size=1, max_size=24),
    )


# --- mutations of valid records -----------------------------------------------------------------


def _programs(max_size: int = 128) -> st.SearchStrategy[bytes]:
    """Mutation programs (tests/fuzz/programs.py): long enough for a few edits each."""
    return st.binary(min_size=24, max_size=max_size)


def byte_mutations(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """One to four byte-level edits: bit flips, interesting bytes, inserts, cuts, copies."""
    return _programs().map(partial(programs.byte_edits, seeds))


def wire_mutations(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """One to three field-level edits at depths 1-4 (see wire.mutate_field)."""
    return _programs().map(partial(programs.field_edits, seeds))


def splices(seeds: tuple[bytes, ...]) -> st.SearchStrategy[bytes]:
    """A seed spliced with a seed of any target (often of another record type)."""
    return _programs().map(partial(programs.splice, seeds, ALL_SEEDS))


# --- one field set through the protobuf API -----------------------------------------------------

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_STRINGS = ("", "f32le", "F32", "nan", "inf", "-inf", "0", "-1", "1e309", "pow_difficulty", "é")


def _values(field: FieldDescriptor, old: Any) -> st.SearchStrategy[Any]:
    """Hostile values of the field's own type: boundaries first, then anything in range."""
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        edges = [v for v in (low, high, 0, 1, -1, 2, old + 1, old - 1) if low <= v <= high]
        return st.sampled_from(edges) | st.integers(low, high)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        special = st.sampled_from((0.0, -0.0, 1.0, 1.0000001, -1e-300, 5e-324, float("inf")))
        return special | st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return st.sampled_from(_STRINGS) | st.text(max_size=24)
    sizes = st.sampled_from((0, 1, 31, 32, 33, 63, 64, 65, 66))
    flipped = st.integers(0, max(len(old) - 1, 0)).map(
        lambda at: old[:at] + bytes([old[at] ^ 1]) + old[at + 1 :] if old else b"\x01"
    )
    resized = st.just(old[:-1]) | st.binary(min_size=1, max_size=4).map(lambda tail: old + tail)
    fixed = sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n))
    return fixed | flipped | resized | st.binary()


def _walk(message: Message, prefix: Path = ()) -> Iterator[tuple[Path, FieldDescriptor]]:
    """Every field of every present sub-message: scalars set or not, messages, repeated ones."""
    for field in message.DESCRIPTOR.fields:
        yield (*prefix, (field.name, None)), field
        value = getattr(message, field.name)
        if field.message_type is None:
            if field.is_repeated:
                for index in range(len(value)):
                    yield (*prefix, (field.name, index)), field
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _walk(item, (*prefix, (field.name, index)))
        elif message.HasField(field.name):
            yield from _walk(value, (*prefix, (field.name, None)))


@cache
def _paths(message_type: type[Message], seed: bytes) -> tuple[tuple[Path, FieldDescriptor], ...]:
    return tuple(_walk(message_type.FromString(seed)))


def _holder(message: Message, path: Path) -> Message:
    for name, index in path[:-1]:
        message = getattr(message, name) if index is None else getattr(message, name)[index]
    return message


def resized_bytes_fields(message_type: type[Message], seed: bytes) -> Iterator[bytes]:
    """The seed with each bytes field in turn one byte shorter, or one byte (0x00, 0x01)
    longer: the lengths either side of a digest's 32 bytes and a signature's 64, which fixed
    layouts (struct "32s" pads and truncates) and length checks disagree about."""
    for path, field in _paths(message_type, seed):
        name, index = path[-1]
        if field.type != FieldDescriptor.TYPE_BYTES or index is not None:
            continue
        for change in (lambda v: v[:-1], lambda v: v + b"\0", lambda v: v + b"\1"):
            message = message_type.FromString(seed)
            holder = _holder(message, path)
            setattr(holder, name, change(getattr(holder, name)))
            yield message.SerializeToString()


def _redigest(message: Message) -> None:
    """Recomputes every digest and PoW hash, innermost first: anyone can hash, none can sign."""
    for field, value in message.ListFields():
        if field.message_type is not None:
            for item in value if field.is_repeated else [value]:
                _redigest(item)
    names = message.DESCRIPTOR.fields_by_name
    if "body" in names and "digest" in names and message.HasField("body"):
        message.digest = digest_message(message.body)
    if "header" in names and message.HasField("header"):
        message.hash = header_hash(message.header)
    if "finalization" in names and message.HasField("finalization"):
        message.final_digest = digest_message(message.finalization)


@st.composite
def field_edits(draw: st.DrawFn, message_type: type[Message], seeds: tuple[bytes, ...]) -> bytes:
    """A seed parsed, one field set, emptied, cleared, dropped or repeated, serialized again."""
    seed = draw(st.sampled_from(seeds))
    message = message_type.FromString(seed)
    path, field = draw(st.sampled_from(_paths(message_type, seed)))
    holder = _holder(message, path)
    name, index = path[-1]
    container = getattr(holder, name)
    action = draw(st.sampled_from(("set", "set", "set", "clear", "repeat")))
    if field.is_repeated and index is None:
        if action == "clear" or not len(container):
            holder.ClearField(name)
        elif field.message_type is not None:
            container.add().CopyFrom(container[draw(st.integers(0, len(container) - 1))])
        else:
            container.append(draw(_values(field, container[0])))
    elif field.is_repeated:
        if action == "clear":
            del container[index]
        elif field.message_type is None:
            container[index] = draw(_values(field, container[index]))
        else:
            container[index].Clear()
    elif field.message_type is not None:
        if action == "clear":
            holder.ClearField(name)
        else:  # present but empty
            container.Clear()
            container.SetInParent()
    elif action == "clear":
        holder.ClearField(name)
    else:
        setattr(holder, name, draw(_values(field, container)))
    if draw(st.booleans()):
        _redigest(message)
    return message.SerializeToString(deterministic=draw(st.booleans()))


_CHAIN_TYPES = (pb.PowBlock,) * len(CHAIN_BLOCKS) + (pb.Transaction,) * len(CHAIN_MODELS)


@st.composite
def chain_edits(draw: st.DrawFn, seeds: tuple[bytes, ...], api: bool) -> bytes:
    """A fetched chain with one slot's record mutated on the wire (or through the API), and
    sometimes inserted after its slot rather than replacing it (the selector's top bit)."""
    seed = draw(st.sampled_from(seeds))
    slot, record = seed[0], seed[1:]
    if api:
        record = draw(field_edits(_CHAIN_TYPES[slot], (record,)))
    else:
        record = programs.field_edits((record,), draw(_programs()))
    return bytes([slot | (0x80 if draw(st.integers(0, 7)) == 0 else 0)]) + record


# --- structure of the other formats -------------------------------------------------------------

_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from((0, -1, 1, 15, 48, 60, 2**63, 2**64, 10**400, 1e309, "F32", "F16", "U8"))
    | st.integers()
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children)
    ),
    max_leaves=6,
)


def _deep(depth: int, opener: str) -> str:
    closer = {"[": "]", "{": "}"}[opener]
    if opener == "{":
        return '{"a":' * depth + "0" + closer * depth
    return opener * depth + closer * depth


@st.composite
def safetensors_edits(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A safetensors header edited as JSON: a value replaced (by anything, or nested to a
    boundary depth), a key added or removed, the length prefix or data section changed."""
    data = draw(st.sampled_from(seeds))
    (size,) = struct.unpack_from("<Q", data)
    header: dict[str, Any] = json.loads(data[8 : 8 + size])
    payload = data[8 + size :]
    name = draw(st.sampled_from(sorted(header)))
    entry = header[name]
    edit = draw(st.sampled_from(("value", "deep", "key", "drop", "prefix", "pad", "payload")))
    text: str | None = None
    if edit == "value" and isinstance(entry, dict):
        entry[draw(st.sampled_from([*sorted(entry), "extra"]))] = draw(_JSON_VALUES)
    elif edit == "value":
        header[name] = draw(_JSON_VALUES)
    elif edit == "deep":  # nesting to boundary depths: the recursion limit of json is ~1000
        depth = draw(st.sampled_from((1, 2, 16, 64, 256, 999, 1000, 1024, 4096, 50_000)))
        placeholder = "\x00deep\x00"
        holder = entry if isinstance(entry, dict) and entry else header
        holder[draw(st.sampled_from(sorted(holder)))] = placeholder
        nest = _deep(depth, draw(st.sampled_from("[{")))
        text = json.dumps(header).replace(json.dumps(placeholder), nest)
    elif edit == "key":
        header[draw(st.text(max_size=10))] = draw(_JSON_VALUES)
    elif edit == "drop":
        del header[name]
    raw = (text if text is not None else json.dumps(header)).encode()
    claimed = len(raw)
    if edit == "prefix":
        claimed = draw(
            st.sampled_from(
                (0, 1, claimed - 1, claimed + 1, claimed + len(payload), 1 << 20, 2**64 - 1)
            )
        )
    elif edit == "pad":  # trailing whitespace is valid JSON: a header at its size bound
        limit = MAX_SAFETENSORS_HEADER + draw(st.sampled_from((-1, 0, 1)))
        raw, claimed = raw.ljust(limit), limit
    elif edit == "payload":
        op = "delete" if draw(st.booleans()) else "insert"
        payload = wire.mutate_bytes(payload, op, draw(st.integers(0, 64)), 3, b"x")
    return struct.pack("<Q", claimed) + raw + payload


@st.composite
def f32le_edits(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A weight set to a special float (NaN, infinities, subnormals) or the length changed."""
    data = bytearray(draw(st.sampled_from(seeds)))
    specials = (float("nan"), float("inf"), float("-inf"), 1e-45, -0.0, 3.4028235e38)
    at = draw(st.integers(0, len(data) // 4 - 1)) * 4
    data[at : at + 4] = struct.pack("<f", draw(st.sampled_from(specials)))
    change = draw(st.integers(-5, 5))
    return bytes(data[: len(data) + change] if change < 0 else data + bytes(change))


@st.composite
def frame_edits(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A frame whose address length, round or weights disagree with what follows."""
    data = bytearray(draw(st.sampled_from(seeds)))
    edit = draw(st.sampled_from(("length", "round", "weights", "cut")))
    if edit == "length":
        near = ((data[0] - 1) % 256, (data[0] + 1) % 256)
        data[0] = draw(st.sampled_from((0, 1, *near, 0xFF)) | st.integers(0, 255))
    elif edit == "round":
        start = 1 + data[0]
        data[start : start + 4] = draw(st.binary(min_size=4, max_size=4))
    elif edit == "weights":
        data += draw(st.binary(min_size=1, max_size=8))
    else:
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


def structured(target: Target) -> st.SearchStrategy[bytes]:
    """The format-aware mutation of the target's own kind of input."""
    if target.kind == "protobuf":
        return wire_mutations(target.seeds)
    if target.kind == "chain":
        return chain_edits(target.seeds, api=False)
    if target.kind == "safetensors":
        return safetensors_edits(target.seeds)
    if target.kind == "f32le":
        return f32le_edits(target.seeds)
    return frame_edits(target.seeds)


def field_level(target: Target) -> st.SearchStrategy[bytes]:
    """Set one field through the protobuf API; for the other formats, their own structure."""
    if target.message is not None:
        return field_edits(target.message, target.seeds)
    if target.kind == "chain":
        return chain_edits(target.seeds, api=True)
    return structured(target)
