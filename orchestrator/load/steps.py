"""The step mode's rules: stages of more and more users, what each stage measured, where to stop
and where the knee is.

`dfl load --step` raises Locust's users stage by stage (orchestrator/load/stepshape.py carries
it out inside Locust) until the judged request's p99 or its failure ratio passes a limit. Each
stage is measured over its settled part only (after `settle_seconds`, once the new users run),
from Locust's cumulative counts at two moments; the figures go to DIR/load_steps.jsonl as each
stage ends, and the report draws the capacity curve from them.

The knee is the stage of highest *power*, throughput over mean latency (Kleinrock's operating
point): below it more users buy throughput almost for free, above it they mostly buy queueing.
Stages past a limit are drawn but never the knee.

Pure: the shape (in Locust's process), the command line and the report import it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STEPS_FILE = "load_steps.jsonl"  # in the run directory
ALL_REQUESTS = "all"  # judge every request together, when the transaction task is off
JUDGED_TRANSACTION = "transaction:SubmitTransaction"


@dataclass(frozen=True)
class StepPlan:
    """How the stages grow and when they stop (all from `dfl load --step ...`)."""

    start_users: int
    add_users: int
    stage_seconds: float
    settle_seconds: float
    max_users: int
    p99_limit_ms: float
    failure_limit: float  # failed / all requests of the judged name, in a stage
    judged: str  # a Locust request name, or ALL_REQUESTS
    steps_file: str  # where each stage's line goes (STEPS_FILE in the run directory)

    def users_of(self, stage: int) -> int:
        return self.start_users + stage * self.add_users

    @property
    def stages(self) -> int:
        """How many stages fit under max_users."""
        return (self.max_users - self.start_users) // self.add_users + 1


@dataclass(frozen=True)
class Counts:
    """One request name's cumulative counts in Locust at a moment."""

    requests: int
    failures: int
    total_ms: float
    response_times: Mapping[int, int]  # rounded ms -> count, as Locust keeps them


@dataclass(frozen=True)
class StageFigures:
    """What one stage measured on the judged request, over its settled part."""

    stage: int
    users: int
    seconds: float
    requests: int
    failures: int
    throughput: float  # requests per second (all, failed included)
    served: float  # successful requests per second
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    over: str  # which limit this stage passed ("" for none)

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def power(self) -> float:
        return self.served / self.mean_ms if self.mean_ms else 0.0

    def line(self) -> str:
        return json.dumps(asdict(self))


def percentile(response_times: Mapping[int, int], fraction: float) -> float | None:
    """The smallest recorded time with at least `fraction` of the requests at or below it."""
    count = sum(response_times.values())
    if count == 0:
        return None
    needed, running = fraction * count, 0
    for milliseconds in sorted(response_times):
        running += response_times[milliseconds]
        if running >= needed:
            return float(milliseconds)
    return float(max(response_times))


def between(before: Counts, after: Counts) -> Counts:
    """What happened from `before` to `after` (Locust's counts only rise)."""
    times = {
        ms: after.response_times[ms] - before.response_times.get(ms, 0)
        for ms in after.response_times
        if after.response_times[ms] > before.response_times.get(ms, 0)
    }
    return Counts(
        requests=after.requests - before.requests,
        failures=after.failures - before.failures,
        total_ms=after.total_ms - before.total_ms,
        response_times=times,
    )


def stage_figures(
    plan: StepPlan, stage: int, before: Counts, after: Counts, seconds: float
) -> StageFigures:
    """The stage's figures from the judged name's counts at the start and end of its settled
    part, and which limit (if any) it passed."""
    counts = between(before, after)
    p99 = percentile(counts.response_times, 0.99)
    ratio = counts.failures / counts.requests if counts.requests else 0.0
    over = []
    if p99 is not None and p99 > plan.p99_limit_ms:
        over.append(f"p99 {p99:.0f} ms > {plan.p99_limit_ms:g} ms")
    if ratio > plan.failure_limit:
        over.append(f"failures {ratio:.1%} > {plan.failure_limit:.0%}")
    if counts.requests == 0:
        over.append("no request answered")
    return StageFigures(
        stage=stage,
        users=plan.users_of(stage),
        seconds=seconds,
        requests=counts.requests,
        failures=counts.failures,
        throughput=counts.requests / seconds if seconds > 0 else 0.0,
        served=(counts.requests - counts.failures) / seconds if seconds > 0 else 0.0,
        mean_ms=counts.total_ms / counts.requests if counts.requests else None,
        p50_ms=percentile(counts.response_times, 0.50),
        p95_ms=percentile(counts.response_times, 0.95),
        p99_ms=p99,
        over="; ".join(over),
    )


def knee(stages: Sequence[StageFigures]) -> StageFigures | None:
    """The stage of highest power among those within the limits."""
    within = [stage for stage in stages if not stage.over and stage.mean_ms]
    return max(within, key=lambda stage: stage.power, default=None)


def read_stages(path: Path) -> list[StageFigures]:
    """DIR/load_steps.jsonl's stages (a line cut off by a crash is left out)."""
    if not path.is_file():
        return []
    stages = []
    for line in path.read_text().splitlines():
        try:
            stages.append(StageFigures(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return stages


def judged_name(weights: Mapping[str, int]) -> str:
    """The transaction task's SubmitTransaction when that task runs: the capacity that matters
    is how many models a node evaluates; otherwise every request together."""
    return JUDGED_TRANSACTION if weights.get("transaction", 0) > 0 else ALL_REQUESTS


def plan_from(data: Mapping[str, Any] | None) -> StepPlan | None:
    return StepPlan(**data) if data else None


def describe(plan: StepPlan) -> str:
    """One line for the progress output."""
    return (
        f"step mode: {plan.start_users} users, +{plan.add_users} every {plan.stage_seconds:g} s "
        f"(measured after {plan.settle_seconds:g} s), up to {plan.max_users}; stops once "
        f"{plan.judged}'s p99 passes {plan.p99_limit_ms:g} ms or its failures pass "
        f"{plan.failure_limit:.0%}"
    )
