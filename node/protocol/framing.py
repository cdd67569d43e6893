"""How the engines without records put a model on the wire, the one framing all of them use.

Without a record around a model nothing says who generated it, and a receiver's `sender` is only
the transport's last hop, so the generator's address travels with the weights; BLADE-FL's rounds
overlap (a fast client's model of the next round can arrive before the round closes here), so
the round does too. DFL has no rounds and sends 0.

Layout: address length (1 byte), address, round (u32 little-endian), the f32le weights.

FedAvg's models cross real networks (not only the simulator's), where no record's signed genesis
digest says which experiment they belong to, so its frame starts with the genesis digest
(length, 1 byte, then the digest): nodes of two experiments refuse each other's models, as the
ledger's records make them do for DFL and BLADE-FL.
"""

from __future__ import annotations

from dataclasses import dataclass

_ROUND_BYTES = 4


@dataclass(frozen=True)
class FramedModel:
    generator: bytes
    round: int
    model: bytes | memoryview


def frame_model(generator: bytes, model: bytes, *, round: int = 0) -> bytes:
    if len(generator) > 0xFF:
        raise ValueError(f"a generator address of {len(generator)} bytes does not fit the frame")
    return bytes([len(generator)]) + generator + round.to_bytes(_ROUND_BYTES, "little") + model


def unframe_model(payload: bytes) -> FramedModel:
    if not payload:
        raise ValueError("an empty payload is not a framed model")
    start = 1 + payload[0]
    end = start + _ROUND_BYTES
    if len(payload) < end:
        raise ValueError("the payload ends inside the frame's header")
    round = int.from_bytes(payload[start:end], "little")
    return FramedModel(payload[1:start], round, payload[end:])


def frame_experiment_model(genesis: bytes, generator: bytes, model: bytes, *, round: int) -> bytes:
    """`frame_model` behind the experiment's genesis digest."""
    if len(genesis) > 0xFF:
        raise ValueError(f"a genesis digest of {len(genesis)} bytes does not fit the frame")
    return bytes([len(genesis)]) + genesis + frame_model(generator, model, round=round)


def unframe_experiment_model(payload: bytes) -> tuple[bytes, FramedModel]:
    """(genesis digest, framed model); ValueError for a payload that is not such a frame.

    The model is a view into `payload` (events.py: ModelBytes), not a copy of the weights."""
    if not payload:
        raise ValueError("an empty payload is not a framed model")
    start = 1 + payload[0]
    if len(payload) < start:
        raise ValueError("the payload ends inside the genesis digest")
    framed = unframe_model(memoryview(payload)[start:])  # type: ignore[arg-type]
    return bytes(payload[1:start]), FramedModel(bytes(framed.generator), framed.round, framed.model)
