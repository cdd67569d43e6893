from proto.dfl.v1 import records_pb2 as _records_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Ack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Sample(_message.Message):
    __slots__ = ("pixels", "label")
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    pixels: bytes
    label: int
    def __init__(self, pixels: _Optional[bytes] = ..., label: _Optional[int] = ...) -> None: ...

class SampleBatch(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[Sample]
    def __init__(self, samples: _Optional[_Iterable[_Union[Sample, _Mapping]]] = ...) -> None: ...

class InjectSummary(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("address", "genesis_digest", "chain_height", "local_accuracy", "samples_collected", "transactions_sent", "transactions_received", "peers")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    GENESIS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    LOCAL_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_COLLECTED_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_SENT_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    genesis_digest: bytes
    chain_height: int
    local_accuracy: float
    samples_collected: int
    transactions_sent: int
    transactions_received: int
    peers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, address: _Optional[bytes] = ..., genesis_digest: _Optional[bytes] = ..., chain_height: _Optional[int] = ..., local_accuracy: _Optional[float] = ..., samples_collected: _Optional[int] = ..., transactions_sent: _Optional[int] = ..., transactions_received: _Optional[int] = ..., peers: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ("known_version",)
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    known_version: bytes
    def __init__(self, known_version: _Optional[bytes] = ...) -> None: ...

class ModelWeights(_message.Message):
    __slots__ = ("genesis_digest", "ref", "weights", "version", "unchanged")
    GENESIS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    genesis_digest: bytes
    ref: _records_pb2.ModelRef
    weights: bytes
    version: bytes
    unchanged: bool
    def __init__(self, genesis_digest: _Optional[bytes] = ..., ref: _Optional[_Union[_records_pb2.ModelRef, _Mapping]] = ..., weights: _Optional[bytes] = ..., version: _Optional[bytes] = ..., unchanged: _Optional[bool] = ...) -> None: ...

class ChainRequest(_message.Message):
    __slots__ = ("from_height",)
    FROM_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    from_height: int
    def __init__(self, from_height: _Optional[int] = ...) -> None: ...

class RoundRequest(_message.Message):
    __slots__ = ("round",)
    ROUND_FIELD_NUMBER: _ClassVar[int]
    round: int
    def __init__(self, round: _Optional[int] = ...) -> None: ...

class PeerRequest(_message.Message):
    __slots__ = ("peer",)
    PEER_FIELD_NUMBER: _ClassVar[int]
    peer: str
    def __init__(self, peer: _Optional[str] = ...) -> None: ...

class PeerList(_message.Message):
    __slots__ = ("peers",)
    PEERS_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, peers: _Optional[_Iterable[str]] = ...) -> None: ...

class NetworkFault(_message.Message):
    __slots__ = ("delay_ms", "jitter_ms", "loss", "cut")
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    CUT_FIELD_NUMBER: _ClassVar[int]
    delay_ms: int
    jitter_ms: int
    loss: float
    cut: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, delay_ms: _Optional[int] = ..., jitter_ms: _Optional[int] = ..., loss: _Optional[float] = ..., cut: _Optional[_Iterable[str]] = ...) -> None: ...
