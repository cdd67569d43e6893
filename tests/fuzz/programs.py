"""Mutation programs: a byte string read as "which seed, which edits, with which parameters".

Both fuzzers drive these: Hypothesis draws the program as one binary value (one draw instead of
dozens keeps an example cheap, and shrinking the bytes shrinks the edits), and the atheris
target reads it from libFuzzer's input. A program that runs out reads as zeros, so every byte
string is a valid program and a short one means few, simple edits of the first seed.
"""

from __future__ import annotations

from collections.abc import Sequence

from tests.fuzz import wire

VARINT_VALUES = (
    0,
    1,
    2,
    127,
    128,
    255,
    300,
    16_384,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**63 - 1,
    2**63,
    2**64 - 2,
    2**64 - 1,
)


class Reader:
    """Numbers and byte strings taken from the front of a program, zeros once it is used up."""

    def __init__(self, program: bytes) -> None:
        self._program = program
        self._at = 0

    def take(self, size: int) -> bytes:
        chunk = self._program[self._at : self._at + size]
        self._at += size
        return chunk.ljust(size, b"\0")

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "little")

    def below(self, bound: int) -> int:
        return self.number(2) % bound if bound > 1 else 0

    def blob(self, max_size: int) -> bytes:
        return self.take(self.below(max_size + 1))

    def varint_value(self) -> int:
        """A boundary value half of the time, else any 64-bit one."""
        choice = self.number(1)
        return VARINT_VALUES[choice % len(VARINT_VALUES)] if choice < 128 else self.number(8)


def byte_edits(seeds: Sequence[bytes], program: bytes) -> bytes:
    """One to four byte-level edits of a seed (wire.mutate_bytes)."""
    read = Reader(program)
    data = seeds[read.below(len(seeds))]
    for _ in range(1 + read.below(4)):
        operation = wire.BYTE_OPS[read.below(len(wire.BYTE_OPS))]
        data = wire.mutate_bytes(data, operation, read.number(2), read.number(2), read.blob(12))
    return data


def field_edits(seeds: Sequence[bytes], program: bytes) -> bytes:
    """One to three field-level edits of a seed at depths 1-4 (wire.mutate_field)."""
    read = Reader(program)
    data = seeds[read.below(len(seeds))]
    for _ in range(1 + read.below(3)):
        path = tuple(read.below(16) for _ in range(1 + read.below(4)))
        operation = wire.WIRE_OPS[read.below(len(wire.WIRE_OPS))]
        data = wire.mutate_field(data, path, operation, read.varint_value(), read.blob(70))
    return data


def splice(seeds: Sequence[bytes], others: Sequence[bytes], program: bytes) -> bytes:
    """A seed spliced with a seed of its own kind or of any other (wire.splice)."""
    read = Reader(program)
    first = seeds[read.below(len(seeds))]
    pool = others if read.number(1) & 1 else seeds
    second = pool[read.below(len(pool))]
    mode = wire.SPLICE_MODES[read.below(len(wire.SPLICE_MODES))]
    return wire.splice(first, second, mode, read.number(2), read.number(2))


def random_message(program: bytes, depth: int = 0) -> bytes:
    """A well-formed message of up to six random fields (low numbers, so they are the records'
    own), some of them messages of random fields again, down to three levels."""
    read = Reader(program)
    out = bytearray()
    for _ in range(read.below(7)):
        kind = read.number(1)
        if depth < 3 and kind < 64:
            inner = random_message(read.blob(60), depth + 1)
            out += wire.length_delimited(1 + kind % 8, inner).encode()
        else:
            out += wire.mutate_field(b"", (), "insert", kind % 48, read.blob(40))
    return bytes(out)
