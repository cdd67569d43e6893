"""What a load test asks of a node: its tasks, their weights, and the answer each request must get.

Locust counts a request as failed or not; here that means "did the node answer as it must". A
valid request must succeed. A forged record or an unsigned control call must be refused, with
the gRPC status and the reason label (dfl_rejected_total's, node/ledger/errors.py) its forgery
names: for those the refusal is the success, and a node that *accepts* one fails the request.
A refusal for another reason (a full ML queue, a spent evaluation budget, a rate limit) is a
failure whose text is the status and the node's label, so Locust's failures table groups them
by what the node said.

Pure: the command line, the locustfile and the report's reader all import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from node.ledger.errors import RejectReason

INJECT, STATUS, MODEL, TRANSACTION, FORGED, UNAUTHENTICATED = (
    "inject",
    "status",
    "model",
    "transaction",
    "forged",
    "unauthenticated",
)
TASKS = (INJECT, STATUS, MODEL, TRANSACTION, FORGED, UNAUTHENTICATED)
TASK_HELP = {
    INJECT: "sample batches on InjectSamples (signed control call)",
    STATUS: "GetStatus",
    MODEL: "GetModel (signed control call)",
    TRANSACTION: "validly signed transactions from virtual peers, carrying the node's model "
    "perturbed: the node verifies, evaluates and answers each with a receipt",
    FORGED: "transactions with a bad signature, a wrong genesis, a wrong shape, or garbage bytes",
    UNAUTHENTICATED: "control calls without the orchestrator's signature",
}
OK = "OK"


@dataclass(frozen=True)
class Expected:
    """The answer a request must get: `status` a gRPC status name, `reason` the refusal's label
    (the node's details before ": "; empty for OK)."""

    status: str
    reason: str = ""

    @classmethod
    def refused(cls, reason: RejectReason) -> Expected:
        return cls(reason.grpc_status, reason.label)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}".strip()


SUCCEEDS = Expected(OK)

# Each forged kind, and the refusal the node must answer it with.
FORGED_KINDS: Mapping[str, Expected] = {
    "bad_signature": Expected.refused(RejectReason.BAD_SIGNATURE),
    "wrong_genesis": Expected.refused(RejectReason.GENESIS_MISMATCH),
    "wrong_shape": Expected.refused(RejectReason.MODEL_SHAPE_MISMATCH),
    "garbage": Expected.refused(RejectReason.MALFORMED),
}
# The control calls an unsigned request is tried on; none changes anything even if it went
# through (a peer that is not there, a healthy network, a model read), so a node that fails to
# refuse one shows in the figures without breaking the experiment.
UNSIGNED_METHODS = ("GetModel", "RemovePeer", "SetNetworkFault", "InjectSamples")
UNSIGNED = Expected.refused(RejectReason.UNAUTHENTICATED)

# The Locust name (`<task>:<rpc>`) of every request a task makes, and the answer it must get.
REQUESTS: Mapping[str, Mapping[str, Expected]] = {
    INJECT: {"InjectSamples": SUCCEEDS},
    STATUS: {"GetStatus": SUCCEEDS},
    MODEL: {"GetModel": SUCCEEDS},
    TRANSACTION: {"SubmitTransaction": SUCCEEDS, "GetModel": SUCCEEDS},  # GetModel: its model
    FORGED: FORGED_KINDS,
    UNAUTHENTICATED: dict.fromkeys(UNSIGNED_METHODS, UNSIGNED),
}


def request_name(task: str, rpc: str) -> str:
    """What Locust reports a request under: `forged:bad_signature`, `status:GetStatus`."""
    return f"{task}:{rpc}"


def split_name(name: str) -> tuple[str, str]:
    """(task, rpc) of a Locust request name; ("", name) for a name of no task (Aggregated)."""
    task, colon, rpc = name.partition(":")
    return (task, rpc) if colon and task in TASKS else ("", name)


def expected_of(name: str) -> Expected | None:
    """The answer the request named `name` must get; None for a name no task makes."""
    task, rpc = split_name(name)
    return REQUESTS.get(task, {}).get(rpc)


def reason_of(details: str) -> str:
    """The node's refusal label (`queue_full: 16 ML jobs are queued` -> queue_full), or "" for
    details without one (gRPC's own refusals, a connection that failed)."""
    label, colon, _ = details.partition(": ")
    return label if colon and label.replace("_", "").isalpha() and label.islower() else ""


def verdict(expected: Expected, status: str, details: str) -> str | None:
    """None when the node answered as it must; otherwise the failure Locust records.

    The text is what Locust's failures table groups by, so it holds no numbers that vary
    between requests: the status and the node's reason label, and what was expected.
    """
    reason = reason_of(details) if status != OK else ""
    answered = f"{status} {reason}".strip()
    if expected.status == OK:
        return None if status == OK else answered
    if status == OK:
        return f"ACCEPTED: the node took a request it must refuse with {expected}"
    if status == expected.status and reason == expected.reason:
        return None
    return f"{answered} (expected {expected})"


def parse_weights(items: Iterable[str]) -> dict[str, int]:
    """`--task NAME=WEIGHT` options as {task: weight}; none given: every task with weight 1.

    Tasks not named are off when any is named. ValueError names the valid tasks.
    """
    items = list(items)
    if not items:
        return dict.fromkeys(TASKS, 1)
    weights: dict[str, int] = {}
    for item in items:
        name, equals, weight = item.partition("=")
        name = name.strip()
        if name not in TASKS:
            raise ValueError(f"--task {item!r}: no task {name!r}; the tasks are {', '.join(TASKS)}")
        if not equals:
            weights[name] = 1
            continue
        try:
            value = int(weight)
        except ValueError:
            value = -1
        if value < 0:
            raise ValueError(f"--task {item!r}: the weight is a whole number >= 0, e.g. {name}=5")
        weights[name] = value
    if not any(weights.values()):
        raise ValueError("--task: every weight is 0; give at least one task a weight above 0")
    return {name: weight for name, weight in weights.items() if weight > 0}
