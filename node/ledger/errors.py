"""The one error every rejected record raises, and the reasons it can carry.

Each reason names the gRPC status the service layer answers with, so the mapping lives beside the
reasons rather than in the service (which would otherwise have to know every reason).
"""

from __future__ import annotations

import enum


class RejectReason(enum.Enum):
    """Why a record (or a request) was refused: `label` names it in metrics, `grpc_status`
    answers the sender."""

    MALFORMED = ("malformed", "INVALID_ARGUMENT")
    MESSAGE_TOO_LARGE = ("message_too_large", "RESOURCE_EXHAUSTED")
    DIGEST_MISMATCH = ("digest_mismatch", "INVALID_ARGUMENT")
    ADDRESS_MISMATCH = ("address_mismatch", "INVALID_ARGUMENT")
    BAD_SIGNATURE = ("bad_signature", "UNAUTHENTICATED")
    EXPIRED = ("expired", "FAILED_PRECONDITION")
    FROM_FUTURE = ("from_future", "FAILED_PRECONDITION")
    DUPLICATE = ("duplicate", "ALREADY_EXISTS")
    TTL_ABOVE_MAXIMUM = ("ttl_above_maximum", "INVALID_ARGUMENT")
    TTL_MISMATCH = ("ttl_mismatch", "INVALID_ARGUMENT")
    GENESIS_MISMATCH = ("genesis_mismatch", "FAILED_PRECONDITION")
    MODEL_SHAPE_MISMATCH = ("model_shape_mismatch", "INVALID_ARGUMENT")
    NON_FINITE_WEIGHTS = ("non_finite_weights", "INVALID_ARGUMENT")
    BAD_LINK = ("bad_link", "FAILED_PRECONDITION")
    WRONG_CREATOR = ("wrong_creator", "PERMISSION_DENIED")
    UNKNOWN_RECEIPT = ("unknown_receipt", "NOT_FOUND")
    BELOW_QUORUM = ("below_quorum", "FAILED_PRECONDITION")
    INSUFFICIENT_WORK = ("insufficient_work", "INVALID_ARGUMENT")
    UNKNOWN_MODEL = ("unknown_model", "FAILED_PRECONDITION")
    WRONG_ROUND = ("wrong_round", "FAILED_PRECONDITION")
    REFUSED_GENERATOR = ("refused_generator", "PERMISSION_DENIED")
    # Requests refused before any record is looked at (node/service/admission.py, control.py)
    UNAUTHENTICATED = ("unauthenticated", "UNAUTHENTICATED")
    BANNED = ("banned", "PERMISSION_DENIED")
    RATE_LIMITED = ("rate_limited", "RESOURCE_EXHAUSTED")
    QUEUE_FULL = ("queue_full", "RESOURCE_EXHAUSTED")
    EVALUATION_BUDGET = ("evaluation_budget", "RESOURCE_EXHAUSTED")
    BAD_PEER_ADDRESS = ("bad_peer_address", "INVALID_ARGUMENT")

    def __init__(self, label: str, grpc_status: str) -> None:
        self.label = label
        self.grpc_status = grpc_status


class RecordRejected(Exception):
    """A record failed validation. Raised before anything changes, so callers need only count it.

    `signer` is the address whose valid signature the record carried, when the failure is in
    content that address signed: the generator, not just whoever relayed it, is to blame.
    """

    def __init__(self, reason: RejectReason, detail: str, signer: bytes | None = None) -> None:
        super().__init__(f"{reason.label}: {detail}")
        self.reason = reason
        self.detail = detail
        self.signer = signer
