"""The step mode inside Locust: a LoadTestShape that raises the users stage by stage.

Loaded beside the locustfile only for `dfl load --step` (`locust -f locustfile.py,stepshape.py`):
Locust uses a shape class whenever one of its locustfiles defines one, so the plain mode must
not see it. Its rules (stage sizes, what is measured, when to stop) are orchestrator/load/steps.py;
this file only reads Locust's counts at the right moments and hands them over. It reads the plan
through the `--dfl-plan` option the locustfile registers, and imports nothing of the locustfile
(Locust loads that file under its own name; a second import would run its set-up twice).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from locust import LoadTestShape

from orchestrator.load.plan import LoadPlan
from orchestrator.load.steps import ALL_REQUESTS, Counts, StepPlan, plan_from, stage_figures

log = logging.getLogger(__name__)


class StepShape(LoadTestShape):
    """Stage k runs plan.users_of(k) users for plan.stage_seconds; measured from
    plan.settle_seconds into the stage to its end; the test stops after the first stage past a
    limit, or after the last stage under max_users."""

    use_common_options = True  # --spawn-rate is read here (and --run-time still caps the test)

    def __init__(self) -> None:
        super().__init__()
        self.plan: StepPlan | None = None
        self.stage = 0
        self.settled: tuple[float, Counts] | None = None

    def tick(self) -> tuple[int, float] | None:
        plan = self.plan or self._load_plan()
        now = self.get_run_time()
        stage_end = (self.stage + 1) * plan.stage_seconds
        if now >= stage_end:
            if not self._end_stage(plan):
                return None
            self.stage += 1
            self.settled = None
        elif self.settled is None and now >= self.stage * plan.stage_seconds + plan.settle_seconds:
            self.settled = (time.perf_counter(), self._counts(plan))
        return plan.users_of(self.stage), self._spawn_rate(plan)

    def _end_stage(self, plan: StepPlan) -> bool:
        """Writes the stage's line; False when the test is to stop here."""
        if self.settled is None:  # a tick came too late to see the settled moment: no figures
            return self.stage + 1 < plan.stages
        began, before = self.settled
        figures = stage_figures(
            plan, self.stage, before, self._counts(plan), time.perf_counter() - began
        )
        with Path(plan.steps_file).open("a") as steps:
            steps.write(figures.line() + "\n")
        p99 = "n/a" if figures.p99_ms is None else f"{figures.p99_ms:.0f} ms"
        log.warning(
            "stage %d: %d users, %s %.1f/s (failed %.1f%%), p99 %s%s",
            figures.stage,
            figures.users,
            plan.judged,
            figures.throughput,
            100 * figures.failure_ratio,
            p99,
            f": over ({figures.over})" if figures.over else "",
        )
        return not figures.over and self.stage + 1 < plan.stages

    def _counts(self, plan: StepPlan) -> Counts:
        assert self.runner is not None
        stats = self.runner.stats
        entry: Any = (
            stats.total if plan.judged == ALL_REQUESTS else stats.entries.get((plan.judged, "grpc"))
        )
        if entry is None:
            return Counts(0, 0, 0.0, {})
        return Counts(
            requests=entry.num_requests,
            failures=entry.num_failures,
            total_ms=entry.total_response_time,
            response_times=dict(entry.response_times),
        )

    def _spawn_rate(self, plan: StepPlan) -> float:
        assert self.runner is not None
        rate = getattr(self.runner.environment.parsed_options, "spawn_rate", None)
        return float(rate) if rate else float(plan.add_users)

    def _load_plan(self) -> StepPlan:
        assert self.runner is not None
        path = getattr(self.runner.environment.parsed_options, "dfl_plan", "")
        plan = plan_from(LoadPlan.read(Path(path)).step) if path else None
        if plan is None:
            raise SystemExit("stepshape.py needs --dfl-plan FILE with a step section")
        self.plan = plan
        return plan
