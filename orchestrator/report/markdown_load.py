"""report.md's Load section, for a `dfl load` run: Locust's figures per request name, the
failures by status, beside them the nodes' own figures under the load, and for `--step` the
capacity curve.

The figures are the summary's (load.py reads and computes them and says how); this module only
lays them out.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.load.steps import StageFigures
from orchestrator.load.tasks import FORGED_KINDS, UNSIGNED
from orchestrator.report.capacity import CapacityFigures
from orchestrator.report.cells import big, num, table
from orchestrator.report.load import FailureFigures, LoadSummary, NodeLoadFigures, RequestFigures
from orchestrator.report.schema import (
    LOAD_CAPACITY_PLOT,
    LOAD_FAILURES_FILE,
    LOAD_FILE,
    LOAD_HISTORY_FILE,
    LOAD_STATS_FILE,
    METRICS_FILE,
    PLOTS_DIR,
)

CATEGORY_ORDER = ("ml", "blockchain", "network")


def load_section(load: LoadSummary | None) -> str:
    """The section, or "" for a run without load files; `load` is the summary's."""
    if load is None:
        return ""
    parts = ["## Load\n", _intro(load)]
    if load.problems:
        parts.append("\n".join(f"- **{problem}**" for problem in load.problems) + "\n")
    if load.requests:
        parts.append(_requests_table(load))
        parts.append(_failures(load))
    if load.capacity is not None:
        parts.append(_capacity(load.capacity, load.user_rate))
    if load.nodes:
        parts.append(_nodes(load))
        parts.append(_checks(load))
    return "\n".join(parts)


def _capacity(capacity: CapacityFigures, user_rate: float | None) -> str:
    """The step mode's stages, the knee, and the CPU bound beside it."""
    nodes = max(capacity.nodes, 1)
    pace = f", each user at {user_rate:g} tasks/s" if user_rate else ""
    lines = [
        "### Capacity (step mode)\n",
        f"Users rose stage by stage{pace}; each stage is measured on `{capacity.judged}` "
        f"after it settled, over {nodes} node(s) (per node: divided by {nodes}). The knee is "
        "the stage of highest power (served per second over mean latency), among the stages "
        "within the limits. From load_steps.jsonl.\n",
    ]
    if not capacity.stages:
        lines.append("- **no stage was completed** (a stage needs its settled part to end)\n")
        return "\n".join(lines)
    rows = [_stage_row(stage, nodes, stage == capacity.knee) for stage in capacity.stages]
    lines.append(
        table(
            (
                "stage",
                "users",
                "requests/s",
                "served/s",
                "served/s per node",
                "failed",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "stopped by",
            ),
            rows,
        )
    )
    lines.append(f"![capacity curve]({PLOTS_DIR}/{LOAD_CAPACITY_PLOT})\n")
    lines.extend(_capacity_notes(capacity))
    return "\n".join(lines)


def _stage_row(stage: StageFigures, nodes: int, is_knee: bool) -> tuple[str, ...]:
    cells = (
        str(stage.stage),
        str(stage.users),
        num(stage.throughput, 1),
        num(stage.served, 1),
        num(stage.served / nodes, 1),
        f"{stage.failure_ratio:.1%}",
        _ms(stage.p50_ms),
        _ms(stage.p95_ms),
        _ms(stage.p99_ms),
        stage.over or "",
    )
    return tuple(f"**{cell}**" if is_knee and cell else cell for cell in cells)


def _capacity_notes(capacity: CapacityFigures) -> list[str]:
    notes = []
    knee, per_node = capacity.knee, capacity.knee_per_node
    if knee is not None and per_node is not None:
        notes.append(
            f"- knee: stage {knee.stage}, {knee.users} users: {num(knee.served, 1)} served/s in "
            f"all, **{num(per_node, 1)} per node**, p50 {_ms(knee.p50_ms)} ms, p99 "
            f"{_ms(knee.p99_ms)} ms"
        )
    else:
        notes.append("- knee: none (no stage within the limits)")
    if capacity.receive_ms is not None:
        parts = ", ".join(
            f"{category} {num(ms, 1)}" for category, ms in capacity.receive_ms_by_category.items()
        )
        notes.append(
            f"- CPU per received transaction (the nodes' profilers, receive_transaction task): "
            f"{num(capacity.receive_ms, 1)} ms ({parts}); a core per node would bound a node at "
            f"{num(capacity.bound_one_core, 1)} transactions/s"
        )
    if capacity.bound_machine is not None:
        notes.append(
            f"- this machine's bound: {capacity.machine_cores} cores, less the nodes' other work "
            f"({num(capacity.other_cores)} cores), the orchestrator's "
            f"({num(capacity.orchestrator_cores)}) and Locust's, at "
            f"{num(capacity.receive_ms, 1)} ms per transaction plus Locust's "
            f"{num(capacity.locust_ms_per_request, 1)} ms per request: "
            f"**{num(capacity.bound_machine, 1)} transactions/s per node**"
            + (
                f"; the knee is {per_node / capacity.bound_machine:.0%} of it"
                if per_node is not None and capacity.bound_machine
                else ""
            )
        )
    return [*notes, ""]


def _intro(load: LoadSummary) -> str:
    weights = ", ".join(f"{task} {weight}" for task, weight in load.weights.items()) or "n/a"
    window = (
        f"from {load.started_s:.1f} s to {load.ended_s:.1f} s of the run"
        if load.started_s is not None and load.ended_s is not None
        else "during the run"
    )
    pace = (
        f"each user at most {load.user_rate:g} tasks a second"
        if load.user_rate
        else "each user's pause between tasks: "
        + (f"{load.wait_seconds:g} s" if load.wait_seconds is not None else "n/a")
    )
    cores = (
        f" Locust's own process used {num(load.locust_cores)} cores meanwhile."
        if load.locust_cores is not None
        else ""
    )
    return (
        f"Locust, {load.users if load.users is not None else 'n/a'} users"
        f"{' at first, more at each stage (the step mode)' if load.capacity else ''} spawned at "
        f"{num(load.spawn_rate, 1)} a second, spread over the nodes in turn, against their "
        f"gRPC {window}; task weights: {weights}; {pace}. "
        "A request is named `<task>:<rpc>`. It succeeds when the node answers as the *must "
        "get* column says: a forged record or an unsigned control call must be refused with "
        "that status and reason, a valid request must be served. Every other answer is a "
        "failure, named by the node's status and reason (`ACCEPTED` for a record the node "
        f"should have refused). From {LOAD_STATS_FILE}, {LOAD_FAILURES_FILE} "
        f"({LOAD_HISTORY_FILE} has them over time) and {LOAD_FILE}.{cores}\n"
    )


def _requests_table(load: LoadSummary) -> str:
    rows = [_request_row(row) for row in load.requests]
    if load.total is not None:
        rows.append(tuple(f"**{cell}**" if cell else cell for cell in _request_row(load.total)))
    return table(
        (
            "request",
            "must get",
            "requests",
            "requests/s",
            "failures",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
        ),
        rows,
        numeric="--nnnnnnn",
    )


def _request_row(row: RequestFigures) -> tuple[str, ...]:
    return (
        f"`{row.name}`" if row.task else row.name,
        row.expected,
        big(row.requests),
        num(row.requests_per_s, 1),
        big(row.failures),
        _ms(row.p50_ms),
        _ms(row.p95_ms),
        _ms(row.p99_ms),
        _ms(row.max_ms),
    )


def _failures(load: LoadSummary) -> str:
    if not load.failures:
        return "### Failures by status\n\nNo request failed.\n"
    rows = [(f"`{f.name}`", f.error, big(f.occurrences)) for f in load.failures]
    return "### Failures by status\n\n" + table(("request", "answer", "occurrences"), rows)


def _nodes(load: LoadSummary) -> str:
    rows = [_node_row(node) for node in load.nodes]
    legend = [
        "- refused: dfl_rejected_total's gain over the load, by reason",
        "- models received, receipts written, failed evaluations: new models the node took "
        "(its neighbours' and the virtual peers'), the receipts it wrote for them and "
        "evaluations that failed; ML queue empty: the end scrape saw an empty ML queue, so "
        "every model taken by then had been evaluated",
        "- gossip latency: mean from a model's creation to its arrival, over the models the "
        "node took (the virtual peers' travel one hop)",
        "- samples taken: by the node over the load, from the driver and the inject task; "
        "driver offered: at the spec's rate, between the node's two scrapes (or to the end of "
        "the run's injection, if that came first)",
        f"- process cores: the node's CPU seconds per second over the load; ml, blockchain, "
        f"network: the same per category, from {METRICS_FILE} (first to last sample)",
        f"- accuracy: test-set accuracy at the first and last sample in {METRICS_FILE}",
    ]
    return (
        "### The nodes under load\n\n"
        + table(
            (
                "node",
                "refused",
                "models received",
                "receipts written",
                "failed evaluations",
                "ML queue empty",
                "banned",
                "gossip latency",
                "samples taken",
                "driver offered",
                "process cores",
                *CATEGORY_ORDER,
                "accuracy",
            ),
            rows,
            numeric="--nnn-nnnnnnnnn",
        )
        + "\n"
        + "\n".join(legend)
        + "\n"
    )


def _node_row(node: NodeLoadFigures) -> tuple[str, ...]:
    refused = ", ".join(f"{reason} {big(count)}" for reason, count in sorted(node.rejected.items()))
    return (
        node.node,
        refused or "none",
        big(node.transactions_received),
        big(node.receipts_written),
        big(node.evaluations_failed),
        "yes" if node.settled else "**no**",
        big(node.peers_banned),
        _ms(None if node.gossip_latency_mean_s is None else 1000 * node.gossip_latency_mean_s)
        + ("" if node.gossip_latency_mean_s is None else " ms"),
        big(node.samples_delivered),
        big(node.samples_offered),
        num(node.process_cores),
        *(num(node.cores_by_category.get(category)) for category in CATEGORY_ORDER),
        f"{num(node.accuracy_first, 3)} → {num(node.accuracy_last, 3)}",
    )


def refusal_check(load: LoadSummary) -> list[tuple[str, int, float]]:
    """(reason, requests Locust saw refused for it as they must be, the nodes' own count) for
    each reason a forged record or an unsigned call must be refused with."""
    expected = {str(e): e.reason for e in (*FORGED_KINDS.values(), UNSIGNED)}
    answered: dict[str, int] = {}
    for row in load.requests:
        reason = expected.get(row.expected)
        if reason is not None:
            answered[reason] = answered.get(reason, 0) + row.requests - row.failures
    return [
        (reason, answered[reason], sum(n.rejected.get(reason, 0.0) for n in load.nodes))
        for reason in sorted(answered)
    ]


def _checks(load: LoadSummary) -> str:
    lines = []
    accepted = sum(f.occurrences for f in load.failures if f.error.startswith("ACCEPTED"))
    if any(row.expected != "OK" and row.task for row in load.requests):
        lines.append(
            f"- records and calls the nodes should have refused and took: {big(accepted)}"
            + (" **(a node failed)**" if accepted else "")
        )
    restarted = ", ".join(node.node for node in load.nodes if node.restarted)
    differ = (
        f" ({restarted} restarted during the load: what a node counted before its restart is "
        "not in its counters)"
        if restarted
        else " **(they differ)**"
    )
    for reason, seen, counted in refusal_check(load):
        lines.append(
            f"- refused as `{reason}`: Locust saw {big(seen)}, the nodes counted {big(counted)}"
            + ("" if seen == counted else differ)
        )
    shed = _shed(load.failures)
    if shed:
        lines.append(
            "- refused for load before any check (the node's admission limits, "
            "node/service/admission.py): " + ", ".join(f"{r} {big(n)}" for r, n in shed)
        )
    lines += _samples(load)
    received = sum(n.transactions_received or 0.0 for n in load.nodes)
    answered = sum((n.receipts_written or 0.0) + (n.evaluations_failed or 0.0) for n in load.nodes)
    if all(n.settled for n in load.nodes):
        lines.append(
            f"- models taken and answered: {big(received)} taken, {big(answered)} evaluated "
            "(a receipt written or the evaluation failed)"
            + ("" if received == answered else " **(some were never answered)**")
        )
    return "\n".join(lines) + "\n" if lines else ""


def _samples(load: LoadSummary) -> list[str]:
    """Injection delivered against offered, over every node: the inject task's batches are
    spread over the nodes at random, so only the total says where every sample went."""
    taken = [n.samples_delivered for n in load.nodes]
    offered = [n.samples_offered for n in load.nodes]
    if None in taken or None in offered:
        return []
    inject = sum(
        row.requests - row.failures for row in load.requests if row.name == "inject:InjectSamples"
    )
    extra = inject * (load.batch_size or 0)
    by_driver = sum(n or 0.0 for n in offered)
    return [
        f"- samples: the nodes took {big(sum(n or 0.0 for n in taken))} of "
        f"{big(by_driver + extra)} offered "
        f"({big(by_driver)} by the driver at the spec's rate, {big(extra)} in the inject "
        f"task's {big(inject)} accepted batches)"
    ]


def _shed(failures: Sequence[FailureFigures]) -> list[tuple[str, int]]:
    """RESOURCE_EXHAUSTED failures by the node's reason: load shed by its limits."""
    counts: dict[str, int] = {}
    for failure in failures:
        status, _, rest = failure.error.partition(" ")
        reason = rest.split(" ", 1)[0] if rest else ""
        if status == "RESOURCE_EXHAUSTED" and reason:
            counts[reason] = counts.get(reason, 0) + failure.occurrences
    return sorted(counts.items())


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
