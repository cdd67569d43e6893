from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeInfo(_message.Message):
    __slots__ = ("address", "public_key")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    public_key: bytes
    def __init__(self, address: _Optional[bytes] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("digest", "size_bytes", "encoding")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    digest: bytes
    size_bytes: int
    encoding: str
    def __init__(self, digest: _Optional[bytes] = ..., size_bytes: _Optional[int] = ..., encoding: _Optional[str] = ...) -> None: ...

class TransactionBody(_message.Message):
    __slots__ = ("generator", "create_time_ms", "expire_time_ms", "ttl", "genesis_digest", "model", "round")
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    GENESIS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    generator: NodeInfo
    create_time_ms: int
    expire_time_ms: int
    ttl: int
    genesis_digest: bytes
    model: ModelRef
    round: int
    def __init__(self, generator: _Optional[_Union[NodeInfo, _Mapping]] = ..., create_time_ms: _Optional[int] = ..., expire_time_ms: _Optional[int] = ..., ttl: _Optional[int] = ..., genesis_digest: _Optional[bytes] = ..., model: _Optional[_Union[ModelRef, _Mapping]] = ..., round: _Optional[int] = ...) -> None: ...

class Transaction(_message.Message):
    __slots__ = ("body", "digest", "signature", "model", "receipts")
    BODY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    body: TransactionBody
    digest: bytes
    signature: bytes
    model: bytes
    receipts: _containers.RepeatedCompositeFieldContainer[Receipt]
    def __init__(self, body: _Optional[_Union[TransactionBody, _Mapping]] = ..., digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., model: _Optional[bytes] = ..., receipts: _Optional[_Iterable[_Union[Receipt, _Mapping]]] = ...) -> None: ...

class ReceiptBody(_message.Message):
    __slots__ = ("creator", "create_time_ms", "received_at_ttl", "accuracy", "transaction_digest")
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_TTL_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_DIGEST_FIELD_NUMBER: _ClassVar[int]
    creator: NodeInfo
    create_time_ms: int
    received_at_ttl: int
    accuracy: float
    transaction_digest: bytes
    def __init__(self, creator: _Optional[_Union[NodeInfo, _Mapping]] = ..., create_time_ms: _Optional[int] = ..., received_at_ttl: _Optional[int] = ..., accuracy: _Optional[float] = ..., transaction_digest: _Optional[bytes] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("body", "digest", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: ReceiptBody
    digest: bytes
    signature: bytes
    def __init__(self, body: _Optional[_Union[ReceiptBody, _Mapping]] = ..., digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class BlockConfirmationBody(_message.Message):
    __slots__ = ("creator", "transaction_digest", "receipt_digest", "block_digest")
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BLOCK_DIGEST_FIELD_NUMBER: _ClassVar[int]
    creator: NodeInfo
    transaction_digest: bytes
    receipt_digest: bytes
    block_digest: bytes
    def __init__(self, creator: _Optional[_Union[NodeInfo, _Mapping]] = ..., transaction_digest: _Optional[bytes] = ..., receipt_digest: _Optional[bytes] = ..., block_digest: _Optional[bytes] = ...) -> None: ...

class BlockConfirmation(_message.Message):
    __slots__ = ("body", "digest", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: BlockConfirmationBody
    digest: bytes
    signature: bytes
    def __init__(self, body: _Optional[_Union[BlockConfirmationBody, _Mapping]] = ..., digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class BlockBody(_message.Message):
    __slots__ = ("height", "previous_digest", "genesis_digest", "creator", "time_ms", "transactions")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    GENESIS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    height: int
    previous_digest: bytes
    genesis_digest: bytes
    creator: NodeInfo
    time_ms: int
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    def __init__(self, height: _Optional[int] = ..., previous_digest: _Optional[bytes] = ..., genesis_digest: _Optional[bytes] = ..., creator: _Optional[_Union[NodeInfo, _Mapping]] = ..., time_ms: _Optional[int] = ..., transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ...) -> None: ...

class BlockFinalization(_message.Message):
    __slots__ = ("block_digest", "confirmations", "finalized_time_ms", "quorum", "timed_out")
    BLOCK_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    FINALIZED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    block_digest: bytes
    confirmations: _containers.RepeatedCompositeFieldContainer[BlockConfirmation]
    finalized_time_ms: int
    quorum: float
    timed_out: bool
    def __init__(self, block_digest: _Optional[bytes] = ..., confirmations: _Optional[_Iterable[_Union[BlockConfirmation, _Mapping]]] = ..., finalized_time_ms: _Optional[int] = ..., quorum: _Optional[float] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class Block(_message.Message):
    __slots__ = ("body", "digest", "signature", "finalization", "final_digest", "final_signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    FINALIZATION_FIELD_NUMBER: _ClassVar[int]
    FINAL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    FINAL_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: BlockBody
    digest: bytes
    signature: bytes
    finalization: BlockFinalization
    final_digest: bytes
    final_signature: bytes
    def __init__(self, body: _Optional[_Union[BlockBody, _Mapping]] = ..., digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., finalization: _Optional[_Union[BlockFinalization, _Mapping]] = ..., final_digest: _Optional[bytes] = ..., final_signature: _Optional[bytes] = ...) -> None: ...

class ConfirmationBatch(_message.Message):
    __slots__ = ("confirmations",)
    CONFIRMATIONS_FIELD_NUMBER: _ClassVar[int]
    confirmations: _containers.RepeatedCompositeFieldContainer[BlockConfirmation]
    def __init__(self, confirmations: _Optional[_Iterable[_Union[BlockConfirmation, _Mapping]]] = ...) -> None: ...

class LayerShape(_message.Message):
    __slots__ = ("name", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Hyperparameter(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class GenesisBody(_message.Message):
    __slots__ = ("protocol", "model_architecture", "layers", "hyperparameters", "seed", "spec_digest", "spec", "initial_model_digest")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SPEC_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    INITIAL_MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    model_architecture: str
    layers: _containers.RepeatedCompositeFieldContainer[LayerShape]
    hyperparameters: _containers.RepeatedCompositeFieldContainer[Hyperparameter]
    seed: int
    spec_digest: bytes
    spec: str
    initial_model_digest: bytes
    def __init__(self, protocol: _Optional[str] = ..., model_architecture: _Optional[str] = ..., layers: _Optional[_Iterable[_Union[LayerShape, _Mapping]]] = ..., hyperparameters: _Optional[_Iterable[_Union[Hyperparameter, _Mapping]]] = ..., seed: _Optional[int] = ..., spec_digest: _Optional[bytes] = ..., spec: _Optional[str] = ..., initial_model_digest: _Optional[bytes] = ...) -> None: ...

class Genesis(_message.Message):
    __slots__ = ("body", "digest")
    BODY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    body: GenesisBody
    digest: bytes
    def __init__(self, body: _Optional[_Union[GenesisBody, _Mapping]] = ..., digest: _Optional[bytes] = ...) -> None: ...

class PowHeader(_message.Message):
    __slots__ = ("height", "previous_hash", "models_digest", "miner", "time_ms", "nonce")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HASH_FIELD_NUMBER: _ClassVar[int]
    MODELS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    MINER_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    height: int
    previous_hash: bytes
    models_digest: bytes
    miner: bytes
    time_ms: int
    nonce: int
    def __init__(self, height: _Optional[int] = ..., previous_hash: _Optional[bytes] = ..., models_digest: _Optional[bytes] = ..., miner: _Optional[bytes] = ..., time_ms: _Optional[int] = ..., nonce: _Optional[int] = ...) -> None: ...

class PowBlock(_message.Message):
    __slots__ = ("header", "miner", "transactions", "hash", "signature")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MINER_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    header: PowHeader
    miner: NodeInfo
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    hash: bytes
    signature: bytes
    def __init__(self, header: _Optional[_Union[PowHeader, _Mapping]] = ..., miner: _Optional[_Union[NodeInfo, _Mapping]] = ..., transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ..., hash: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class BlockVoteBody(_message.Message):
    __slots__ = ("voter", "height", "block_hash", "genesis_digest")
    VOTER_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BLOCK_HASH_FIELD_NUMBER: _ClassVar[int]
    GENESIS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    voter: NodeInfo
    height: int
    block_hash: bytes
    genesis_digest: bytes
    def __init__(self, voter: _Optional[_Union[NodeInfo, _Mapping]] = ..., height: _Optional[int] = ..., block_hash: _Optional[bytes] = ..., genesis_digest: _Optional[bytes] = ...) -> None: ...

class BlockVote(_message.Message):
    __slots__ = ("body", "digest", "signature")
    BODY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    body: BlockVoteBody
    digest: bytes
    signature: bytes
    def __init__(self, body: _Optional[_Union[BlockVoteBody, _Mapping]] = ..., digest: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TransactionBatch(_message.Message):
    __slots__ = ("transactions",)
    TRANSACTIONS_FIELD_NUMBER: _ClassVar[int]
    transactions: _containers.RepeatedCompositeFieldContainer[Transaction]
    def __init__(self, transactions: _Optional[_Iterable[_Union[Transaction, _Mapping]]] = ...) -> None: ...
