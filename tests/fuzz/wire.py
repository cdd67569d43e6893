"""Protobuf wire format, read just far enough to mutate records field by field.

Byte flips mostly break the outermost length prefix, and then the record fails to parse and
nothing deeper is tested. Mutating whole fields (drop, duplicate, retype, renumber, re-encode a
varint, corrupt one length prefix) at any depth keeps the rest of the record well formed, so a
mutation reaches the validators behind the parser. There are no Hypothesis imports here, so the
atheris target (fuzz/records_target.py) drives the same mutations from libFuzzer's bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.ledger import wire

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
MAX_FIELD_NUMBER = (1 << 29) - 1
UNKNOWN_FIELD = 1000  # no record message uses it: padding that parsers keep and digests ignore

WIRE_OPS = (
    "drop",
    "duplicate",
    "move",
    "varint",
    "overlong",
    "wire_type",
    "renumber",
    "payload",
    "length",
    "insert",
    "nest",
)
BYTE_OPS = ("flip", "set", "insert", "delete", "truncate", "duplicate", "fill")
SPLICE_MODES = ("concat", "cross", "insert", "fields")
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF)


def encode_varint(value: int) -> bytes:
    """Minimal varint of `value` modulo 2**64 (negative int64s take ten bytes, as on the wire)."""
    return wire.encode_varint(value & ((1 << 64) - 1))


def read_varint(data: bytes, position: int) -> tuple[int, int] | None:
    """(value, next position), or None where the varint runs off the end or past ten bytes."""
    value = shift = 0
    for index in range(position, min(len(data), position + 10)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    return None


RAW = 0  # a Field with this number is `body` verbatim, tags and all (what a nest inserts)


@dataclass(frozen=True)
class Field:
    """One field: number, wire type and `body`, the exact bytes after the tag."""

    number: int
    wire_type: int
    body: bytes

    def encode(self) -> bytes:
        if self.number == RAW:
            return self.body
        return encode_varint((self.number << 3) | self.wire_type) + self.body

    @property
    def payload(self) -> bytes | None:
        """A length-delimited field's content (None for the other wire types)."""
        if self.wire_type != LEN:
            return None
        read = read_varint(self.body, 0)
        return None if read is None else self.body[read[1] :]


def length_delimited(number: int, payload: bytes) -> Field:
    return Field(number, LEN, encode_varint(len(payload)) + payload)


def parse(data: bytes) -> list[Field] | None:
    """The top-level fields of `data`, or None where it is not a well-formed message of fields."""
    fields: list[Field] = []
    position = 0
    while position < len(data):
        tag = read_varint(data, position)
        if tag is None:
            return None
        key, start = tag
        number, wire_type = key >> 3, key & 7
        if number == 0 or number > MAX_FIELD_NUMBER:
            return None
        if wire_type == VARINT:
            read = read_varint(data, start)
            if read is None:
                return None
            end = read[1]
        elif wire_type in (I64, I32):
            end = start + (8 if wire_type == I64 else 4)
        elif wire_type == LEN:
            read = read_varint(data, start)
            if read is None:
                return None
            end = read[1] + read[0]
        else:
            return None  # groups: never written by these records; left alone
        if end > len(data):
            return None
        fields.append(Field(number, wire_type, data[start:end]))
        position = end
    return fields


def serialize(fields: Sequence[Field]) -> bytes:
    return b"".join(field.encode() for field in fields)


def pad_to(message: bytes, size: int) -> bytes:
    """`message` plus an unknown length-delimited field, `size` bytes in all (when it fits)."""
    for filler in range(max(0, size - len(message)), -1, -1):
        padded = message + length_delimited(UNKNOWN_FIELD, bytes(filler)).encode()
        if len(padded) <= size:
            return padded + bytes(size - len(padded))  # 0x00 bytes after: a zero tag, not parsed
    return message


def nested(depth: int, groups: bool) -> bytes:
    """An unknown field nested `depth` deep: as groups, or as messages inside messages."""
    if groups:
        start = encode_varint((UNKNOWN_FIELD << 3) | SGROUP)
        end = encode_varint((UNKNOWN_FIELD << 3) | EGROUP)
        return start * depth + end * depth
    inner = b""
    for _ in range(depth):
        inner = length_delimited(UNKNOWN_FIELD, inner).encode()
    return inner


def _overlong(value: bytes, extra: int) -> bytes:
    """The same varint with `extra` redundant continuation bytes (parsers accept up to ten)."""
    body = bytearray(value)
    body[-1] |= 0x80
    body += b"\x80" * (extra - 1) + b"\x00"
    return bytes(body[:10]) if len(body) > 10 else bytes(body)


def _apply(fields: list[Field], index: int, op: str, number: int, blob: bytes) -> list[Field]:
    """One field-level mutation of `fields` at `index` (which may be len(fields) for inserts)."""
    out = list(fields)
    if op == "insert" or not out:
        wire_type = (LEN, VARINT, I64, I32)[number % 4]
        body = {
            LEN: encode_varint(len(blob)) + blob,
            VARINT: encode_varint(int.from_bytes(blob[:10], "little")),
            I64: blob[:8].ljust(8, b"\0"),
            I32: blob[:4].ljust(4, b"\0"),
        }[wire_type]
        out.insert(min(index, len(out)), Field(1 + (number >> 2) % 12, wire_type, body))
        return out
    index %= len(out)
    field = out[index]
    if op == "drop":
        del out[index]
    elif op == "duplicate":
        out.insert(number % (len(out) + 1), field)
    elif op == "move":
        del out[index]
        out.insert(number % (len(out) + 1), field)
    elif op == "varint":
        out[index] = Field(field.number, VARINT, encode_varint(number))
    elif op == "overlong":
        if field.wire_type == VARINT:
            out[index] = Field(field.number, VARINT, _overlong(field.body, 1 + number % 4))
        elif field.wire_type == LEN and field.payload is not None:
            prefix = _overlong(encode_varint(len(field.payload)), 1 + number % 4)
            out[index] = Field(field.number, LEN, prefix + field.payload)
    elif op == "wire_type":
        out[index] = Field(field.number, number % 8, field.body)
    elif op == "renumber":
        out[index] = Field(1 + number % MAX_FIELD_NUMBER, field.wire_type, field.body)
    elif op == "payload":
        if field.wire_type == LEN:
            out[index] = length_delimited(field.number, blob)
        elif field.wire_type in (I64, I32):
            size = 8 if field.wire_type == I64 else 4
            out[index] = Field(field.number, field.wire_type, blob[:size].ljust(size, b"\0"))
        else:
            value = int.from_bytes(blob[:10], "little")
            out[index] = Field(field.number, VARINT, encode_varint(value))
    elif op == "length":
        payload = field.payload if field.payload is not None else field.body
        delta = (number % 17) - 8 or 1
        prefix = encode_varint(max(0, len(payload) + delta))
        out[index] = Field(field.number, LEN, prefix + payload)
    elif op == "nest":
        out.insert(index, Field(RAW, 0, nested(1 + number % 160, groups=bool(number & 0x100))))
    return out


def mutate_field(data: bytes, path: Sequence[int], op: str, number: int, blob: bytes) -> bytes:
    """Applies `op` to the field `path` picks: each step an index into one level's fields.

    The walk descends while the next step has a length-delimited field holding a message, so a
    path of three steps reaches e.g. Transaction.body.model.size_bytes; the length prefixes
    above the change are re-encoded, so only the chosen field is damaged.
    """
    fields = parse(data)
    if fields is None:
        return data
    if not path:
        return serialize(_apply(fields, len(fields), "insert", number, blob))
    if fields and len(path) > 1:
        index = path[0] % len(fields)
        payload = fields[index].payload
        if payload and parse(payload):
            inner = mutate_field(payload, path[1:], op, number, blob)
            fields[index] = length_delimited(fields[index].number, inner)
            return serialize(fields)
    index = path[0] % (len(fields) + 1) if op == "insert" else path[0]
    return serialize(_apply(fields, index, op, number, blob))


def mutate_bytes(data: bytes, op: str, position: int, number: int, blob: bytes) -> bytes:
    """One byte-level mutation: flip a bit, set, insert, delete, truncate, copy or fill bytes."""
    out = bytearray(data)
    size = len(out)
    at = position % (size + 1)
    if op == "flip" and size:
        out[position % size] ^= 1 << (number % 8)
    elif op == "set" and size:
        out[position % size] = INTERESTING_BYTES[number % 5] if number & 0x100 else number & 0xFF
    elif op == "insert":
        out[at:at] = blob
    elif op == "delete":
        del out[at : at + 1 + number % 16]
    elif op == "truncate":
        del out[at:]
    elif op == "duplicate" and size:
        start = position % size
        chunk = out[start : start + 1 + number % 64]
        where = number % (size + 1)
        out[where:where] = chunk
    elif op == "fill":
        value = INTERESTING_BYTES[number % 5]
        out[at : at + 1 + (number >> 3) % 16] = bytes([value]) * (1 + (number >> 3) % 16)
    return bytes(out)


def splice(first: bytes, second: bytes, mode: str, i: int, j: int) -> bytes:
    """Two messages in one: concatenated (protobuf merges them), crossed, or interleaved."""
    if mode == "concat":
        return first + second
    if mode == "cross":
        return first[: i % (len(first) + 1)] + second[j % (len(second) + 1) :]
    if mode == "insert":
        at = i % (len(first) + 1)
        return first[:at] + second + first[at:]
    head, tail = parse(first), parse(second)
    if head is None or tail is None:
        return first + second
    return serialize(head[: i % (len(head) + 1)] + tail[j % (len(tail) + 1) :])
