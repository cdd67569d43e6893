"""A transaction's weights kept out of protobuf on the hot path, with the wire format unchanged.

A LeNet transaction is 1.7 MB of weights around a few hundred bytes of record. Parsing it with
protobuf copies the weights into the message, and every read of `Transaction.model` copies them
again into a new bytes object: on this machine each fresh 1.7 MB copy costs more (allocation and
page faults) than hashing the weights. A receiver needs the weights only to hash them, check
them and hand them to its ML: a view into the bytes gRPC delivered does all three.

Senders put the `model` field last (`join_model`: the record serialized without its weights,
then the field), and protobuf's own serialization of a transaction without receipts ends with
it too. So a receiver that knows the genesis model's size looks for exactly that field at the
end of the payload: if it is there, protobuf parses the bytes before it (a valid message
followed by a valid field is a valid message, and of a field given twice the last one wins, so
the meaning is protobuf's), and the weights are a view of the rest. Anything else (another
layout, another size) is parsed by protobuf whole, as before: slower, never different. No byte
is walked in Python, so a hostile payload costs what protobuf's C parser makes of it.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from proto.dfl.v1 import records_pb2 as pb

_MODEL_FIELD = pb.Transaction.DESCRIPTOR.fields_by_name["model"].number
_LENGTH_DELIMITED = 2
_MODEL_TAG = (_MODEL_FIELD << 3) | _LENGTH_DELIMITED


def split_model(payload: bytes, model_size: int) -> tuple[pb.Transaction, memoryview]:
    """The transaction without its weights, and the weights (as a view of `payload` when they
    are its last field and `model_size` long; empty if it carried none). Raises protobuf's
    DecodeError for bytes that are not a Transaction."""
    view = memoryview(payload)
    header = field_header(model_size)
    start = len(view) - model_size
    record = pb.Transaction()
    if model_size and start >= len(header) and view[start - len(header) : start] == header:
        try:
            record.ParseFromString(bytes(view[: start - len(header)]))
        except DecodeError:
            pass  # the bytes only looked like the field (inside another one): parse them whole
        else:
            record.ClearField("model")  # an earlier copy, which the last one overrides
            return record, view[start:]
    record.ParseFromString(payload)
    model = record.model
    record.ClearField("model")
    return record, memoryview(model)


def join_model(record: pb.Transaction, model: bytes | memoryview) -> bytes:
    """The wire bytes of `record` (which carries no weights) with `model` as its weights."""
    if record.model:
        raise ValueError("join_model() takes a record without weights")
    head = record.SerializeToString()
    if not len(model):
        return head
    return b"".join((head, field_header(len(model)), model))


def field_header(size: int) -> bytes:
    """The tag and length that precede `size` bytes of weights on the wire."""
    return encode_varint(_MODEL_TAG) + encode_varint(size)


def encode_varint(value: int) -> bytes:
    """The protobuf varint of a non-negative `value`."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
