"""How the chainless engines put a model on the wire, the one framing both of them use.

Without a record around a model nothing says who generated it, and a receiver's `sender` is only
the transport's last hop, so the generator's address travels with the weights; BLADE-FL's rounds
overlap (a fast client's model of the next round can arrive before the round closes here), so
the round does too. DFL has no rounds and sends 0.

Layout: address length (1 byte), address, round (u32 little-endian), the f32le weights.
"""

from __future__ import annotations

from dataclasses import dataclass

_ROUND_BYTES = 4


@dataclass(frozen=True)
class FramedModel:
    generator: bytes
    round: int
    model: bytes


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
