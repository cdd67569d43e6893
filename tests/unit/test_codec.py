"""Weights on the wire: exact round trips, and every malformed input refused with its reason."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from node.learning.codec import (
    decode_f32le,
    decode_safetensors,
    encode_f32le,
    encode_safetensors,
    flatten,
    layer_shapes,
    unflatten,
)
from node.learning.models import build_model
from node.ledger.errors import RecordRejected, RejectReason

SHAPES = [("a.weight", (2, 3)), ("a.bias", (3,)), ("b.weight", (1, 2))]  # 11 weights


def weights(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(11).astype(np.float32)


def rejected(reason: RejectReason, fragment: str, action) -> RecordRejected:
    with pytest.raises(RecordRejected) as caught:
        action()
    assert caught.value.reason is reason, caught.value
    assert fragment in caught.value.detail, caught.value.detail
    return caught.value


def raw_safetensors(header: dict, data: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def test_lenet_round_trips_bit_for_bit_in_both_encodings() -> None:
    model = build_model("lenet", seed=4)
    shapes = layer_shapes(model)
    flat = flatten(model)
    flat[:4] = [-0.0, 1e-45, np.finfo(np.float32).max, -np.finfo(np.float32).tiny]
    for decoded in (
        decode_f32le(encode_f32le(flat), shapes),
        decode_safetensors(encode_safetensors(flat, shapes), shapes),
    ):
        assert decoded.dtype == np.float32
        assert decoded.tobytes() == flat.tobytes()
        assert decoded.flags.writeable


def test_f32le_is_little_endian_float32_in_genesis_order() -> None:
    flat = np.arange(11, dtype=np.float32)
    assert encode_f32le(flat) == struct.pack("<11f", *range(11))
    layers = unflatten(decode_f32le(encode_f32le(flat), SHAPES), SHAPES)
    assert layers["a.bias"].tolist() == [6.0, 7.0, 8.0]
    assert layers["b.weight"].tolist() == [[9.0, 10.0]]


def test_a_model_encodes_the_same_as_its_flat_weights() -> None:
    model = build_model("mlp", seed=1)
    assert encode_f32le(model) == encode_f32le(flatten(model))
    assert encode_safetensors(model) == encode_safetensors(flatten(model), layer_shapes(model))


def test_safetensors_output_is_read_by_the_safetensors_library_and_vice_versa() -> None:
    flat = weights()
    ours = safetensors.numpy.load(encode_safetensors(flat, SHAPES, metadata={"round": "3"}))
    assert set(ours) == {"a.weight", "a.bias", "b.weight"}
    assert np.array_equal(ours["a.bias"], flat[6:9])
    theirs = safetensors.numpy.save(
        {name: array.copy() for name, array in unflatten(flat, SHAPES).items()}
    )
    assert np.array_equal(decode_safetensors(theirs, SHAPES), flat)


# --- f32le rejections ------------------------------------------------------------------------


def test_f32le_rejects_truncated_odd_sized_and_oversized_data() -> None:
    good = encode_f32le(weights())
    rejected(RejectReason.MALFORMED, "truncated: 40 bytes", lambda: decode_f32le(good[:-4], SHAPES))
    rejected(RejectReason.MALFORMED, "whole number", lambda: decode_f32le(good[:-1], SHAPES))
    rejected(
        RejectReason.MODEL_SHAPE_MISMATCH,
        "12 weights, the genesis layers hold 11",
        lambda: decode_f32le(good + good[:4], SHAPES),
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_f32le_rejects_non_finite_weights_naming_the_layer(bad: float) -> None:
    flat = weights()
    flat[7] = bad
    error = rejected(
        RejectReason.NON_FINITE_WEIGHTS,
        "'a.bias'",
        lambda: decode_f32le(encode_f32le(flat), SHAPES),
    )
    assert "element 1" in error.detail


# --- safetensors rejections ------------------------------------------------------------------


def good_header() -> dict:
    return {
        "a.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "a.bias": {"dtype": "F32", "shape": [3], "data_offsets": [24, 36]},
        "b.weight": {"dtype": "F32", "shape": [1, 2], "data_offsets": [36, 44]},
    }


def test_a_hand_written_safetensors_file_decodes() -> None:
    flat = weights()
    assert np.array_equal(
        decode_safetensors(raw_safetensors(good_header(), flat.tobytes()), SHAPES), flat
    )


def test_tensors_stored_out_of_genesis_order_come_back_in_genesis_order() -> None:
    flat = weights()
    header = good_header()
    header["a.weight"]["data_offsets"] = [20, 44]
    header["a.bias"]["data_offsets"] = [8, 20]
    header["b.weight"]["data_offsets"] = [0, 8]
    data = flat[9:11].tobytes() + flat[6:9].tobytes() + flat[0:6].tobytes()
    assert np.array_equal(decode_safetensors(raw_safetensors(header, data), SHAPES), flat)


def test_safetensors_rejects_truncation_anywhere() -> None:
    good = encode_safetensors(weights(), SHAPES)
    rejected(RejectReason.MALFORMED, "too short", lambda: decode_safetensors(good[:5], SHAPES))
    rejected(RejectReason.MALFORMED, "header needs", lambda: decode_safetensors(good[:30], SHAPES))
    rejected(
        RejectReason.MALFORMED, "truncated: tensor", lambda: decode_safetensors(good[:-4], SHAPES)
    )


def test_safetensors_rejects_a_header_that_is_not_json_or_absurdly_long() -> None:
    rejected(
        RejectReason.MALFORMED,
        "not valid JSON",
        lambda: decode_safetensors(struct.pack("<Q", 4) + b"{oops" + bytes(44), SHAPES),
    )
    rejected(
        RejectReason.MALFORMED,
        "exceeds",
        lambda: decode_safetensors(struct.pack("<Q", 1 << 40) + b"{}", SHAPES),
    )
    duplicated = b'{"a.bias": 1, "a.bias": 2}'
    rejected(
        RejectReason.MALFORMED,
        "duplicate key",
        lambda: decode_safetensors(struct.pack("<Q", len(duplicated)) + duplicated, SHAPES),
    )


def test_safetensors_rejects_wrong_names() -> None:
    data = weights().tobytes()
    header = good_header()
    header["c.weight"] = header.pop("b.weight")
    rejected(
        RejectReason.MODEL_SHAPE_MISMATCH,
        "unexpected tensor 'c.weight'",
        lambda: decode_safetensors(raw_safetensors(header, data), SHAPES),
    )
    header = good_header()
    del header["b.weight"]
    rejected(
        RejectReason.MODEL_SHAPE_MISMATCH,
        "missing tensor 'b.weight'",
        lambda: decode_safetensors(raw_safetensors(header, data[:36]), SHAPES),
    )


def test_safetensors_rejects_wrong_dtype_and_wrong_shape() -> None:
    as_f64 = safetensors.numpy.save(
        {k: v.astype(np.float64) for k, v in unflatten(weights(), SHAPES).items()}
    )
    rejected(
        RejectReason.MODEL_SHAPE_MISMATCH,
        "has dtype F64, expected F32",
        lambda: decode_safetensors(as_f64, SHAPES),
    )
    header = good_header()
    header["a.weight"]["shape"] = [3, 2]
    rejected(
        RejectReason.MODEL_SHAPE_MISMATCH,
        "'a.weight' has shape (3, 2), expected (2, 3)",
        lambda: decode_safetensors(raw_safetensors(header, weights().tobytes()), SHAPES),
    )


def test_safetensors_rejects_byte_ranges_that_do_not_tile_the_data() -> None:
    data = weights().tobytes()
    overlapping = good_header()
    overlapping["a.bias"]["data_offsets"] = [20, 32]
    rejected(
        RejectReason.MALFORMED,
        "starts at byte 20, not at 24",
        lambda: decode_safetensors(raw_safetensors(overlapping, data), SHAPES),
    )
    wrong_size = good_header()
    wrong_size["a.bias"]["data_offsets"] = [24, 40]
    rejected(
        RejectReason.MALFORMED,
        "16 data bytes for shape (3,)",
        lambda: decode_safetensors(raw_safetensors(wrong_size, data), SHAPES),
    )
    rejected(
        RejectReason.MALFORMED,
        "4 bytes after the last tensor",
        lambda: decode_safetensors(raw_safetensors(good_header(), data + bytes(4)), SHAPES),
    )
    negative = good_header()
    negative["a.weight"]["data_offsets"] = [-1, 24]
    rejected(
        RejectReason.MALFORMED,
        "data_offsets",
        lambda: decode_safetensors(raw_safetensors(negative, data), SHAPES),
    )


def test_safetensors_rejects_non_finite_weights_naming_the_tensor() -> None:
    flat = weights()
    flat[10] = np.nan
    rejected(
        RejectReason.NON_FINITE_WEIGHTS,
        "'b.weight'",
        lambda: decode_safetensors(encode_safetensors(flat, SHAPES), SHAPES),
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_either_a_model_or_a_named_rejection(data: bytes) -> None:
    for decode in (decode_f32le, decode_safetensors):
        try:
            result = decode(data, SHAPES)
        except RecordRejected:
            continue
        assert result.shape == (11,) and np.isfinite(result).all()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255), st.integers(0, 200))
def test_corrupting_one_byte_of_a_good_file_never_escapes_as_another_error(
    position: int, value: int, cut: int
) -> None:
    good = bytearray(encode_safetensors(weights(), SHAPES))
    good[position % len(good)] = value
    try:
        result = decode_safetensors(bytes(good[: len(good) - cut]), SHAPES)
    except RecordRejected:
        return
    assert result.shape == (11,) and np.isfinite(result).all()
