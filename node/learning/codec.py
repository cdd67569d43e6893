"""Model weights as bytes, and back: the only way a peer's model enters this process.

Two encodings, both checked against the genesis layer list (names and shapes in state order):

- `f32le`: the weights as raw little-endian float32, layers concatenated in genesis order. This is
  what the ledger carries; its size alone says whether it fits the genesis.
- safetensors: a JSON header naming each tensor's dtype, shape and byte range, then the data.
  Self-describing, so it is what files and other tools exchange.

Decoding never unpickles and never trusts a length it has not checked. Every refusal raises the
ledger's `RecordRejected` with a reason that can be counted and a detail that names the problem
(which tensor, which byte), because a rejected model is usually a misconfigured peer that someone
has to find. Weights come out as one flat float32 vector, the form the aggregators use.

torch is not imported here: the ledger validates models without needing it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from node.ledger.errors import RecordRejected, RejectReason

LayerShapes = list[tuple[str, tuple[int, ...]]]

F32LE = np.dtype("<f4")
MAX_SAFETENSORS_HEADER = 1 << 20  # a LeNet header is about 600 bytes; this only bounds garbage


class _HasStateDict(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...


def layer_shapes(model: _HasStateDict) -> LayerShapes:
    """The model's layers as (name, shape), in state order: what the genesis block records."""
    out: LayerShapes = []
    for name, tensor in model.state_dict().items():
        if str(tensor.dtype) != "torch.float32":
            raise TypeError(f"layer {name!r} is {tensor.dtype}; models on the wire are float32")
        out.append((name, tuple(int(d) for d in tensor.shape)))
    return out


def weight_count(shapes: Sequence[tuple[str, Sequence[int]]]) -> int:
    return sum(int(np.prod(shape, dtype=np.int64)) for _, shape in shapes)


def layer_slices(shapes: Sequence[tuple[str, Sequence[int]]]) -> dict[str, slice]:
    """Where each named layer sits in the flat vector."""
    out: dict[str, slice] = {}
    offset = 0
    for name, shape in shapes:
        n = int(np.prod(shape, dtype=np.int64))
        out[name] = slice(offset, offset + n)
        offset += n
    return out


def flatten(model: _HasStateDict) -> np.ndarray:
    """A model's weights as one float32 vector in state order (a copy)."""
    parts = [t.detach().reshape(-1).cpu().numpy() for t in model.state_dict().values()]
    return np.concatenate(parts).astype(np.float32, copy=False)


def unflatten(
    flat: np.ndarray, shapes: Sequence[tuple[str, Sequence[int]]]
) -> dict[str, np.ndarray]:
    """Per-layer views of a flat vector (no copy)."""
    if flat.shape != (weight_count(shapes),):
        raise ValueError(f"{flat.shape} does not hold the {weight_count(shapes)} weights given")
    return {
        name: flat[chunk].reshape(tuple(shape))
        for (name, shape), chunk in zip(shapes, layer_slices(shapes).values(), strict=True)
    }


def _as_flat(weights: _HasStateDict | np.ndarray) -> np.ndarray:
    if isinstance(weights, np.ndarray):
        if weights.ndim != 1:
            raise ValueError(f"flat weights must be one vector, got shape {weights.shape}")
        return weights
    return flatten(weights)


def _reject_non_finite(flat: np.ndarray, shapes: Sequence[tuple[str, Sequence[int]]]) -> None:
    if np.isfinite(flat).all():
        return
    index = int(np.flatnonzero(~np.isfinite(flat))[0])
    for name, chunk in layer_slices(shapes).items():
        if chunk.start <= index < chunk.stop:
            raise RecordRejected(
                RejectReason.NON_FINITE_WEIGHTS,
                f"layer {name!r} holds {flat[index]} at element {index - chunk.start}",
            )
    raise AssertionError("unreachable: index lies inside the layers")  # pragma: no cover


# --- f32le -----------------------------------------------------------------------------------


def encode_f32le(weights: _HasStateDict | np.ndarray) -> bytes:
    """Raw little-endian float32 in state order (a model, or a flat vector in that order)."""
    return _as_flat(weights).astype(F32LE, copy=False).tobytes()


def decode_f32le(data: bytes | bytearray | memoryview, shapes: LayerShapes) -> np.ndarray:
    """Bytes from a peer to a flat float32 vector, or RecordRejected saying why not."""
    flat = view_f32le(data, shapes).astype(np.float32)  # copy: writable, native order
    _reject_non_finite(flat, shapes)
    return flat


def view_f32le(data: bytes | bytearray | memoryview, shapes: LayerShapes) -> np.ndarray:
    """Weights the ledger has already checked (size, digest, finiteness) as a read-only view:
    no copy of 1.7 MB and no second scan. Only the size is checked again, since it is free."""
    expected = 4 * weight_count(shapes)
    size = len(data)
    if size % 4:
        raise RecordRejected(
            RejectReason.MALFORMED, f"{size} bytes is not a whole number of float32 values"
        )
    if size < expected:
        raise RecordRejected(
            RejectReason.MALFORMED, f"truncated: {size} bytes, the genesis layers need {expected}"
        )
    if size > expected:
        raise RecordRejected(
            RejectReason.MODEL_SHAPE_MISMATCH,
            f"{size // 4} weights, the genesis layers hold {expected // 4}",
        )
    return np.frombuffer(data, dtype=F32LE)


# --- safetensors -----------------------------------------------------------------------------


def encode_safetensors(
    weights: _HasStateDict | np.ndarray,
    shapes: LayerShapes | None = None,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """A safetensors file with the tensors laid out in genesis order.

    Written directly rather than through safetensors.numpy.save, which would copy every tensor
    out of the flat vector first; the output is read back by the safetensors library in tests.
    """
    if shapes is None:
        if isinstance(weights, np.ndarray):
            raise ValueError("a flat vector needs the layer shapes to be named")
        shapes = layer_shapes(weights)
    flat = _as_flat(weights)
    if flat.shape != (weight_count(shapes),):
        raise ValueError(f"{flat.shape[0]} weights do not fit the {weight_count(shapes)} given")
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    for (name, shape), chunk in zip(shapes, layer_slices(shapes).values(), strict=True):
        header[name] = {
            "dtype": "F32",
            "shape": list(shape),
            "data_offsets": [4 * chunk.start, 4 * chunk.stop],
        }
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8-byte alignment
    return struct.pack("<Q", len(raw)) + raw + flat.astype(F32LE, copy=False).tobytes()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _malformed(detail: str) -> RecordRejected:
    return RecordRejected(RejectReason.MALFORMED, detail)


def _read_header(data: memoryview) -> tuple[dict[str, Any], int]:
    if len(data) < 8:
        raise _malformed(f"truncated: {len(data)} bytes, too short for a safetensors header")
    (header_size,) = struct.unpack_from("<Q", data)
    if header_size > MAX_SAFETENSORS_HEADER:
        raise _malformed(f"header of {header_size} bytes exceeds {MAX_SAFETENSORS_HEADER}")
    if 8 + header_size > len(data):
        raise _malformed(f"truncated: header needs {header_size} bytes, {len(data) - 8} present")
    try:
        header = json.loads(
            bytes(data[8 : 8 + header_size]).decode("utf-8"), object_pairs_hook=_no_duplicate_keys
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # nesting: RecursionError
        raise _malformed(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise _malformed("header is not a JSON object")
    return header, 8 + header_size


def _tensor_entry(name: str, entry: Any) -> tuple[str, list[int], int, int]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise _malformed(f"tensor {name!r}: entry must hold exactly dtype, shape, data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str):
        raise _malformed(f"tensor {name!r}: dtype is not a string")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise _malformed(f"tensor {name!r}: shape is not a list of non-negative integers")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _malformed(f"tensor {name!r}: data_offsets is not an ordered [begin, end] pair")
    return dtype, shape, offsets[0], offsets[1]


def decode_safetensors(data: bytes | bytearray | memoryview, shapes: LayerShapes) -> np.ndarray:
    """A safetensors file from a peer to a flat float32 vector in genesis order, or RecordRejected.

    The tensor names must be exactly the genesis names, each F32 with its genesis shape, and the
    byte ranges must tile the data section with no gap, overlap or trailing byte.
    """
    view = memoryview(data).cast("B")
    header, data_start = _read_header(view)
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise _malformed("__metadata__ must map strings to strings")
    expected = dict(shapes)
    missing = [name for name in expected if name not in header]
    unexpected = [name for name in header if name not in expected]
    if unexpected:
        raise RecordRejected(
            RejectReason.MODEL_SHAPE_MISMATCH,
            f"unexpected tensor {unexpected[0]!r}; the genesis layers are {list(expected)}",
        )
    if missing:
        raise RecordRejected(RejectReason.MODEL_SHAPE_MISMATCH, f"missing tensor {missing[0]!r}")

    buffer_size = len(view) - data_start
    ranges: list[tuple[int, int, str]] = []
    for name, shape in shapes:
        dtype, got_shape, begin, end = _tensor_entry(name, header[name])
        if dtype != "F32":
            raise RecordRejected(
                RejectReason.MODEL_SHAPE_MISMATCH,
                f"tensor {name!r} has dtype {dtype}, expected F32",
            )
        if tuple(got_shape) != tuple(shape):
            raise RecordRejected(
                RejectReason.MODEL_SHAPE_MISMATCH,
                f"tensor {name!r} has shape {tuple(got_shape)}, expected {tuple(shape)}",
            )
        if end - begin != 4 * int(np.prod(shape, dtype=np.int64)):
            raise _malformed(f"tensor {name!r}: {end - begin} data bytes for shape {tuple(shape)}")
        if end > buffer_size:
            raise _malformed(
                f"truncated: tensor {name!r} ends at byte {end} of {buffer_size} data bytes"
            )
        ranges.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(ranges):
        if begin != position:
            raise _malformed(f"tensor {name!r} starts at byte {begin}, not at {position}")
        position = end
    if position != buffer_size:
        raise _malformed(f"{buffer_size - position} bytes after the last tensor")

    payload = view[data_start:]
    slices = layer_slices(shapes).values()
    in_order = all(r[0] == 4 * s.start for r, s in zip(ranges, slices, strict=True))
    if in_order:
        flat = np.frombuffer(payload, dtype=F32LE).astype(np.float32)
    else:
        flat = np.empty(weight_count(shapes), dtype=np.float32)
        for (begin, end, _), chunk in zip(ranges, layer_slices(shapes).values(), strict=True):
            flat[chunk] = np.frombuffer(payload[begin:end], dtype=F32LE)
    _reject_non_finite(flat, shapes)
    return flat
