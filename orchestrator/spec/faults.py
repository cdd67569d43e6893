"""Faults: the timed events a run injects (crashes, partitions, latency, loss, pauses).

A fault schedule is part of the experiment, not of a runtime: two runs with different faults
are different experiments (the canonical JSON and the digest include the schedule), and a
schedule that cannot be carried out (a node that does not exist, a window past the end of the
run, two latency rules on one link at once) is refused before anything starts, with the field
path and the fix, like every other field; a runtime that found out halfway through a run would
have measured something nobody asked for.

Written as a list under `faults:`, one mapping per event, told apart by `kind`:

    faults:
      - {at: 60s, kind: crash, nodes: [2], restart_after: 30s}   # no restart_after: stays down
      - {at: 90s, kind: partition, groups: [[0, 1, 2], [3, 4, 5]], duration: 45s}
      - {at: 30s, kind: latency, nodes: [1], delay: 200ms, jitter: 50ms, duration: 60s}
      - {at: 30s, kind: loss, nodes: [3], probability: 0.2, duration: 60s}
      - {at: 100s, kind: pause, nodes: [4], duration: 20s}

Each fault checks what it can on its own; `schedule_problems` checks what needs the rest of the
spec (nodes.count, duration) and the other faults. The runtimes only carry out the schedule:
each fault's `start`, `end`, `nodes` and `kind`, and `timeline`, which orders every begin and
end so that they can be applied one after the other.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from orchestrator.spec.errors import FieldProblems, Location
from orchestrator.spec.values import Float, Int, Model, Seconds

FAULT_KINDS = ("crash", "partition", "latency", "loss", "pause")
# Kinds that cannot share a node at the same time. Two of one kind would fight over one setting
# (a netem rule, a process's state); a crashed node cannot be paused, nor a paused one crash.
_EXCLUSIVE = {"crash": {"crash", "pause"}, "pause": {"crash", "pause"}}


def _nodes(nodes: Sequence[int]) -> str:
    """`node 2` or `nodes 2, 3`, for messages."""
    return f"node{'s' * (len(nodes) != 1)} {', '.join(map(str, nodes))}"


def _seconds(value: float) -> str:
    """A time as the spec could be written: `30s`, `0.2s`."""
    return f"{value:g}s"


class FaultSpec(Model):
    """What every fault has: when it begins (`at`, seconds after the run starts) and its kind.

    The runtimes read `start`, `end`, `nodes` and `kind` and never the kind-specific fields for
    timing, so that a new kind needs no change to how a schedule is carried out.
    """

    at: Seconds
    kind: str

    @field_validator("at")
    @classmethod
    def _not_before_the_run(cls, at: float) -> float:
        if at < 0:
            raise ValueError("must be >= 0: seconds after the run starts (0 for at once)")
        return at

    @field_validator("duration", check_fields=False)
    @classmethod
    def _lasts(cls, duration: float) -> float:
        if duration <= 0:
            raise ValueError("must be > 0: how long the fault lasts, e.g. 30s")
        return duration

    @property
    def start(self) -> float:
        """Seconds after the run starts at which the fault begins (`at`)."""
        return self.at

    @property
    def end(self) -> float | None:
        """Seconds after the run starts at which the fault is lifted; None: never (a crash
        without restart_after stays down to the end of the run)."""
        raise NotImplementedError  # each kind says

    def overlaps(self, other: FaultSpec) -> bool:
        """Whether the two faults are in effect at some common moment.

        Windows are half-open, [start, end): a fault may begin the moment another ends.
        """
        end, other_end = self.end, other.end
        return self.start < (math.inf if other_end is None else other_end) and other.start < (
            math.inf if end is None else end
        )


class _NodeFault(FaultSpec):
    """A fault of some nodes, each on its own (its process or its links to every peer)."""

    nodes: tuple[Int, ...]

    @field_validator("nodes")
    @classmethod
    def _listed_once(cls, nodes: tuple[int, ...]) -> tuple[int, ...]:
        if not nodes:
            raise ValueError("must list at least one node, e.g. [0]")
        twice = sorted({node for node in nodes if nodes.count(node) > 1})
        if twice:
            raise ValueError(f"{_nodes(twice)} listed more than once: list each node once")
        return nodes


class CrashFault(_NodeFault):
    """The nodes' processes are killed at `at`; restarted `restart_after` later, if given.

    A restarted node starts from what it had persisted, as after a real crash.
    """

    kind: Literal["crash"] = "crash"
    restart_after: Seconds | None = None

    @field_validator("restart_after")
    @classmethod
    def _restarts_later(cls, restart_after: float | None) -> float | None:
        if restart_after is not None and restart_after <= 0:
            raise ValueError("must be > 0 (leave restart_after out to stay down to the end)")
        return restart_after

    @property
    def end(self) -> float | None:
        """When the nodes restart; None: they stay down to the end of the run."""
        return None if self.restart_after is None else self.at + self.restart_after


class PartitionFault(FaultSpec):
    """For `duration`, the links between nodes of different groups are cut.

    Nodes in no group keep every link, so a partition can split off part of the network while
    the rest still reaches both sides.
    """

    kind: Literal["partition"] = "partition"
    groups: tuple[tuple[Int, ...], ...]
    duration: Seconds
    _group_of: dict[int, int] = PrivateAttr()

    @property
    def end(self) -> float:
        """`at` + `duration`."""
        return self.at + self.duration

    @field_validator("groups")
    @classmethod
    def _distinct_groups(cls, groups: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, ...], ...]:
        problems: list[str] = []
        if len(groups) < 2:
            problems.append(
                "needs at least two groups, e.g. [[0, 1], [2, 3]] (nodes in no group keep "
                "every link)"
            )
        seen: dict[int, int] = {}
        for group, members in enumerate(groups):
            if not members:
                problems.append(f"group {group} is empty: give it a node or remove it")
            for node in members:
                if node in seen:
                    problems.append(
                        f"node {node} is in group {seen[node]} and in group {group}: "
                        "put each node in one group"
                    )
                else:
                    seen[node] = group
        if problems:
            raise ValueError("; ".join(problems))
        return groups

    @model_validator(mode="after")
    def _index_groups(self) -> PartitionFault:
        self._group_of = {node: g for g, members in enumerate(self.groups) for node in members}
        return self

    @property
    def nodes(self) -> tuple[int, ...]:
        """Every node in a group, sorted: the nodes whose links the partition may cut."""
        return tuple(sorted(self._group_of))

    def group_of(self, node: int) -> int | None:
        """The index of the node's group; None for a node in no group (it keeps every link)."""
        return self._group_of.get(node)

    def cut(self, i: int, j: int) -> bool:
        """Whether the link between nodes i and j is cut while the partition lasts.

        Cut exactly when both are in groups and the groups differ; a runtime asks this per
        link rather than reimplementing the rule for nodes in no group.
        """
        gi, gj = self._group_of.get(i), self._group_of.get(j)
        return gi is not None and gj is not None and gi != gj


class LatencyFault(_NodeFault):
    """For `duration`, everything the nodes send is delayed by `delay` ± `jitter` (uniform)."""

    kind: Literal["latency"] = "latency"
    delay: Seconds
    jitter: Seconds = 0.0
    duration: Seconds

    @field_validator("delay")
    @classmethod
    def _delays(cls, delay: float) -> float:
        if delay <= 0:
            raise ValueError("must be > 0: the added delay, e.g. 200ms")
        return delay

    @field_validator("jitter")
    @classmethod
    def _within_delay(cls, jitter: float, info: ValidationInfo) -> float:
        if jitter < 0:
            raise ValueError("must be >= 0 (0, the default, for a fixed delay)")
        delay = info.data.get("delay")
        if delay is not None and jitter > delay:
            raise ValueError(
                f"must be at most delay ({_seconds(delay)}), so that delay - jitter is never "
                f"negative: write a jitter of {_seconds(delay)} or less, or raise delay"
            )
        return jitter

    @property
    def end(self) -> float:
        """`at` + `duration`."""
        return self.at + self.duration


class LossFault(_NodeFault):
    """For `duration`, each message the nodes send is dropped with `probability`."""

    kind: Literal["loss"] = "loss"
    probability: Float
    duration: Seconds

    @field_validator("probability")
    @classmethod
    def _probability(cls, probability: float) -> float:
        if not 0 < probability <= 1:
            raise ValueError(
                "must be > 0 and <= 1: the chance that each message is lost, e.g. 0.2 "
                "(1 drops everything)"
            )
        return probability

    @property
    def end(self) -> float:
        """`at` + `duration`."""
        return self.at + self.duration


class PauseFault(_NodeFault):
    """For `duration`, the nodes' processes are stopped (SIGSTOP) and then resumed.

    Unlike a crash, a paused node keeps its memory and sockets: peers see it hang, not leave.
    """

    kind: Literal["pause"] = "pause"
    duration: Seconds

    @property
    def end(self) -> float:
        """`at` + `duration`."""
        return self.at + self.duration


AnyFault = CrashFault | PartitionFault | LatencyFault | LossFault | PauseFault
_MODELS: dict[str, type[FaultSpec]] = {
    "crash": CrashFault,
    "partition": PartitionFault,
    "latency": LatencyFault,
    "loss": LossFault,
    "pause": PauseFault,
}


def _by_kind(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validates one fault as the model of its kind, with errors in the spec's own terms.

    Pydantic's tagged union names the kind in each error's path (`faults.1.latency.delay`) and,
    for an unknown key, the reader would list the keys of the first kind in the union; here the
    path is the file's (`faults.1.delay`) and the keys are those of the fault's own kind.
    """
    if isinstance(value, FaultSpec):
        return handler(value)
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping such as {at: 60s, kind: crash, nodes: [2]}")
    kind = value.get("kind")
    if kind is None:
        raise FieldProblems([(("kind",), f"required: one of {', '.join(FAULT_KINDS)}")])
    if not isinstance(kind, str) or kind not in _MODELS:
        raise FieldProblems(
            [(("kind",), f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")]
        )
    try:
        return handler(value)
    except ValidationError as exc:
        errors: list[InitErrorDetails] = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            loc = loc[1:] if loc[:1] == (kind,) else loc
            ctx = dict(error.get("ctx") or {})
            error_type = error["type"]
            if error_type == "extra_forbidden" and loc:
                error_type, ctx = "value_error", {"error": ValueError(_unknown_key(kind, loc))}
            errors.append(InitErrorDetails(type=error_type, loc=loc, input=error["input"], ctx=ctx))
        raise ValidationError.from_exception_data(exc.title, errors) from None


def _unknown_key(kind: str, loc: tuple[str | int, ...]) -> str:
    key = str(loc[-1])
    known = sorted(_MODELS[kind].model_fields)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    elsewhere = [other for other in FAULT_KINDS if key in _MODELS[other].model_fields]
    if elsewhere:
        hint += f"{key} is for {', '.join(elsewhere)} faults; "
    return f"unknown key for a {kind} fault ({hint}known: {', '.join(known)})"


# One fault as written: the model is chosen by `kind`.
Fault = Annotated[AnyFault, Field(discriminator="kind"), WrapValidator(_by_kind)]


def schedule_problems(
    faults: Sequence[AnyFault], count: int | None, duration: float | None
) -> list[tuple[Location, str]]:
    """What is wrong with the schedule given the run (nodes.count, duration) and each other.

    Paths are below `faults` (index, field). `count` or `duration` is None when that field is
    itself wrong; its checks are then left out rather than reported against a wrong value.
    """
    problems: list[tuple[Location, str]] = []
    for index, fault in enumerate(faults):
        field = "groups" if isinstance(fault, PartitionFault) else "nodes"
        missing = [] if count is None else [n for n in fault.nodes if not 0 <= n < count]
        if missing:
            verb = "does" if len(missing) == 1 else "do"
            problems.append(
                (
                    (index, field),
                    f"{_nodes(missing)} {verb} not exist: nodes.count is {count}, so write "
                    f"node indices 0..{count - 1}",
                )
            )
        problems += _time_problems(index, fault, duration)
        for earlier in range(index):
            clash = _clash(faults[earlier], fault, earlier)
            if clash:
                problems.append(((index, "at"), clash))
    return problems


def _time_problems(
    index: int, fault: AnyFault, duration: float | None
) -> list[tuple[Location, str]]:
    if duration is None:
        return []
    run = f"the run's duration ({_seconds(duration)})"
    if fault.start >= duration:
        return [
            (
                (index, "at"),
                f"is not before the end of the run: write an at below {_seconds(duration)}, "
                "or raise the run's duration",
            )
        ]
    end = fault.end
    if end is None or end <= duration:
        return []
    room = _seconds(duration - fault.start)
    if isinstance(fault, CrashFault):
        return [
            (
                (index, "restart_after"),
                f"restarts at {_seconds(end)}, after {run}: write a restart_after of {room} or "
                "less, or leave it out to stay down to the end",
            )
        ]
    return [
        (
            (index, "duration"),
            f"ends at {_seconds(end)}, after {run}: write a duration of {room} or less, or "
            "start it earlier",
        )
    ]


def _clash(first: AnyFault, second: AnyFault, first_index: int) -> str | None:
    """Why `second` cannot run beside `first` (listed earlier), or None if it can."""
    if second.kind not in _EXCLUSIVE.get(first.kind, {first.kind}):
        return None
    shared = sorted(set(first.nodes) & set(second.nodes))
    if not shared or not first.overlaps(second):
        return None
    until = "the end" if first.end is None else _seconds(first.end)
    window = f"{first.kind} from {_seconds(first.start)} to {until}"
    why = _WHY.get(first.kind, "") if first.kind == second.kind else _WHY["crash-pause"]
    if second.start < first.start:
        fix = f"end this one by {_seconds(first.start)}"
    elif first.end is None:  # a crash for good: only an earlier restart makes room
        fix = (
            f"give faults.{first_index} a restart_after of "
            f"{_seconds(second.start - first.start)} or less"
        )
    else:
        fix = f"start this one at {_seconds(first.end)} or later"
    return f"overlaps faults.{first_index} ({window}) on {_nodes(shared)}: {why}; {fix}"


_WHY = {
    "crash": "a node that is down cannot crash again",
    "pause": "one pause per node at a time",
    "latency": "one latency fault per node at a time (one delay rule per link)",
    "loss": "one loss fault per node at a time (one loss rule per link)",
    "partition": "one partition per node at a time (merge them into one with more groups)",
    "crash-pause": "a node cannot be paused while it is down, nor crash while paused",
}


class FaultStep(NamedTuple):
    """One thing a runtime does at `time` seconds: begin or end (lift) `fault`."""

    time: float
    phase: Literal["begin", "end"]
    fault: AnyFault


def timeline(faults: Sequence[AnyFault]) -> tuple[FaultStep, ...]:
    """Every fault's begin and (if it has one) end, in the order to carry them out.

    By time; at one moment every end comes before any begin, so that back-to-back windows on
    one node (latency 30..60 s, then 60..90 s) lift the old rule before applying the new one
    rather than removing the new one; then in spec order, so every runtime does the same.
    """
    keyed: list[tuple[float, int, int, FaultStep]] = []
    for index, fault in enumerate(faults):
        keyed.append((fault.start, 1, index, FaultStep(fault.start, "begin", fault)))
        end = fault.end
        if end is not None:
            keyed.append((end, 0, index, FaultStep(end, "end", fault)))
    keyed.sort(key=lambda item: item[:3])
    return tuple(step for *_, step in keyed)
