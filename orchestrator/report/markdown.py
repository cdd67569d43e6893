"""report.md: the run's figures as Markdown, section by section.

Every number comes from the summary (summary.py), so report.md and summary.json cannot disagree;
this module only words and lays them out. The blockchain sections, which differ between DFL and
BLADE-FL, are in markdown_chain.py; the Faults section, for runs with a faults.jsonl, in
markdown_faults.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.datadir import CATEGORIES, PROFILE_FILE
from orchestrator.report.cells import (
    big,
    duration,
    mib,
    num,
    pct,
    seconds,
    short_seconds,
    table,
)
from orchestrator.report.cpu_table import TASK_LABELS, category_columns, task_rows
from orchestrator.report.markdown_chain import chain_section, plagiarism_section, pow_chain_section
from orchestrator.report.markdown_faults import faults_section
from orchestrator.report.markdown_load import load_section
from orchestrator.report.schema import (
    ACCURACY_PLOT,
    BLADE_PROTOCOL,
    COUNTER_METRICS,
    CPU_METRIC_PREFIX,
    CPU_PLOT,
    KNOWN_METRICS,
    METRICS_FILE,
    PLOTS_DIR,
    SPEC_FILE,
    RunData,
)
from orchestrator.report.summary import (
    COVERAGE_TOLERANCE,
    FINAL_WINDOW_FRACTION,
    FINAL_WINDOW_S,
    RunSummary,
    mean,
    reference_chain,
)


def report_markdown(data: RunData, summary: RunSummary) -> str:
    """report.md's text; a section with nothing to show (no warnings, no containers) is left out."""
    sections = [
        _header(data, summary),
        _notes(data, summary),
        _accuracy_section(summary),
        faults_section(data, summary.faults),
        load_section(summary.load),
        _cpu_section(data, summary),
        pow_chain_section(data, summary)
        if summary.protocol == BLADE_PROTOCOL
        else chain_section(summary),
        plagiarism_section(data, summary),
        _containers_section(data, summary),
        _counters_section(data, summary),
        _appendix(data),
    ]
    return "\n".join(s for s in sections if s).rstrip() + "\n"


def _header(data: RunData, summary: RunSummary) -> str:
    info = data.info
    lines = [
        f"# Run report: {info.name}\n",
        f"- runtime: {info.runtime}",
        f"- protocol: {info.protocol}",
        f"- started at: {info.started_at}",
        f"- duration: {duration(info.duration_s)}",
        f"- nodes: {len(info.nodes)}",
        f"- mean final test-set accuracy over nodes: {num(summary.mean_final_test_accuracy, 3)}",
        f"- mean blockchain share of profiled CPU: {pct(summary.mean_blockchain_share)}",
        "- re-render: `dfl report DIR`, DIR being the directory this report is in "
        "(`dfl report .` from inside it)\n",
    ]
    rows = [
        (
            n.name,
            f"`{n.address[:16]}…`" if len(n.address) > 16 else f"`{n.address}`",
            ", ".join(n.peers) or "none",
            n.behaviour,
        )
        for n in info.nodes
    ]
    return "\n".join(lines) + "\n" + table(("node", "address", "peers", "behaviour"), rows, "----")


def _notes(data: RunData, summary: RunSummary) -> str:
    notes = list(data.warnings)
    for name, node in data.nodes.items():
        figures = summary.nodes[name]
        if node.chain_problem:
            notes.append(f"{name}: {node.chain_problem}")
        elif figures.chain_verifies is False:
            notes.append(f"{name}: chain does NOT verify ({figures.chain_problem})")
        if node.profile_problem:
            notes.append(f"{name}: {node.profile_problem}")
        if figures.coverage_flagged:
            notes.append(
                f"{name}: profiler total is {pct(figures.coverage)} of the process's CPU "
                f"(more than {pct(COVERAGE_TOLERANCE, 0)} off): the CPU tables miss or "
                "double-count work"
            )
        if figures.final_test_accuracy is None:
            notes.append(
                f"{name}: no accuracy_test samples in the last {short_seconds(summary.window_s)}"
            )
    notes += _chain_disagreements(data, reference_chain(data))
    if not notes:
        return ""
    return "## Warnings\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def _chain_disagreements(data: RunData, reference: str | None) -> list[str]:
    """Nodes whose blocks differ from the reference chain's at a height both hold."""
    if reference is None:
        return []
    ref = data.nodes[reference].chain
    assert ref is not None
    notes = []
    for name, node in data.nodes.items():
        chain = node.chain
        if name == reference or chain is None or chain.protocol != BLADE_PROTOCOL:
            continue
        pairs = zip(chain.block_hashes, ref.block_hashes, strict=False)  # common heights only
        for height, (a, b) in enumerate(pairs, start=1):
            if a != b:
                notes.append(
                    f"{name}: its chain differs from {reference}'s from height {height} on "
                    f"(blocks mined are counted on {reference}'s)"
                )
                break
    return notes


def _accuracy_section(summary: RunSummary) -> str:
    rows = [
        (
            name,
            num(n.final_test_accuracy, 3),
            str(n.test_samples_in_window),
            num(n.max_test_accuracy, 3),
            num(n.final_local_accuracy, 3),
        )
        for name, n in summary.nodes.items()
    ]
    shortened = (
        f": {pct(FINAL_WINDOW_FRACTION, 0)} of the run's {summary.window_end_s:.1f} s, as that "
        f"is less than {FINAL_WINDOW_S:.0f} s "
        if summary.window_s < FINAL_WINDOW_S
        else " "
    )
    return (
        "## Accuracy\n\n"
        f"Final = mean over the last {short_seconds(summary.window_s)} of the run{shortened}"
        f"(samples with time ≥ {summary.window_start_s:.1f} s). Test-set accuracy is the "
        "orchestrator's evaluation of each node's current model on the common test set; local "
        "accuracy is the node's own evaluation on its recent samples. Chance is "
        f"{summary.chance_accuracy:.2f}.\n\n"
        + table(
            (
                "node",
                "final test-set accuracy",
                "samples in window",
                "max test-set accuracy",
                "final local accuracy",
            ),
            rows,
        )
        + f"\n![accuracy over time]({PLOTS_DIR}/{ACCURACY_PLOT})\n"
    )


def _cpu_section(data: RunData, summary: RunSummary) -> str:
    overview = [
        (
            name,
            *(num(n.cpu_seconds_by_category.get(c)) for c in CATEGORIES),
            num(n.profiler_cpu_seconds),
            pct(n.blockchain_share),
            num(n.process_cpu_seconds),
            pct(n.coverage)
            + (f" **off by >{pct(COVERAGE_TOLERANCE, 0)}**" if n.coverage_flagged else ""),
        )
        for name, n in summary.nodes.items()
    ]
    parts = [
        "## CPU time (paper Table 6 layout)\n",
        "CPU seconds (thread CPU time, not wall time). Blockchain share = blockchain / profiler "
        "total. Coverage = profiler total / the process's own CPU seconds; a coverage more than "
        f"{pct(summary.coverage_tolerance, 0)} away from 100 % is flagged.\n",
        table(
            (
                "node",
                *CATEGORIES,
                "profiler total",
                "blockchain share",
                "process CPU",
                "coverage",
            ),
            overview,
        ),
        f"![CPU seconds by category]({PLOTS_DIR}/{CPU_PLOT})\n",
    ]
    for name, node in data.nodes.items():
        parts.append(f"### {name}\n")
        profile = node.profile
        if profile is None:
            parts.append(f"No CPU figures: {node.profile_problem}.\n")
            continue
        categories = category_columns(c for _, c in profile.seconds)
        rows = []
        for task in task_rows(t for t, _ in profile.seconds):
            cells = [profile.seconds.get((task, c), 0.0) for c in categories]
            rows.append((TASK_LABELS.get(task, task), *(num(v) for v in cells), num(sum(cells))))
        rows.append(
            (
                "**total**",
                *(f"**{num(profile.category(c))}**" for c in categories),
                f"**{num(profile.total)}**",
            )
        )
        parts.append(table(("task", *categories, "total"), rows))
        figures = summary.nodes[name]
        lines = [
            f"- blockchain share = {num(profile.category('blockchain'))} / "
            f"{num(profile.total)} = {pct(figures.blockchain_share)}",
            f"- profiler total vs process CPU: {seconds(profile.total)} vs "
            f"{seconds(profile.process_cpu_seconds)}, coverage {pct(figures.coverage)}"
            + (
                f" — **off by more than {pct(COVERAGE_TOLERANCE, 0)}**"
                if figures.coverage_flagged
                else ""
            ),
        ]
        if profile.profiled_seconds is not None:
            lines.append(f"- profiled_seconds as reported: {seconds(profile.profiled_seconds)}")
        if profile.source != PROFILE_FILE:
            lines.append(f"- source: {profile.source} (no {PROFILE_FILE})")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _containers_section(data: RunData, summary: RunSummary) -> str:
    """Memory and CPU per container from its cgroup, and how its health checks went."""
    nodes = summary.nodes
    if all(n.memory_peak_bytes is None for n in nodes.values()) and not data.info.health:
        return ""
    health = data.info.health
    rows = [
        (
            name,
            mib(n.memory_mean_bytes),
            mib(n.memory_peak_bytes),
            num(n.cgroup_cpu_seconds),
            _health_text(health.get(name, {})),
        )
        for name, n in nodes.items()
    ]
    peaks = [n.memory_peak_bytes for n in nodes.values() if n.memory_peak_bytes is not None]
    unhealthy = sorted(name for name, states in health.items() if states.get("unhealthy"))
    lines = []
    if peaks:
        lines.append(
            f"- memory per container: mean of peaks {mib(mean(peaks))}, largest "
            f"{mib(max(peaks))}, all containers together at their peaks {mib(sum(peaks))}"
        )
    if health:
        lines.append(
            "- health: "
            + (
                f"**unhealthy at some sample: {', '.join(unhealthy)}**"
                if unhealthy
                else "no container was seen unhealthy"
            )
        )
    return (
        "## Containers\n\n"
        "From each container's cgroup: memory less inactive page cache (what `docker stats` "
        "shows), sampled with the other metrics, and the container's CPU seconds since it "
        "started. Health: how often each Docker health state was seen when the orchestrator "
        "looked (while waiting for the nodes to answer, and twice per sample).\n\n"
        + table(
            ("node", "memory mean", "memory peak", "cgroup CPU s", "health at samples"),
            rows,
            numeric="-nnn-",
        )
        + ("\n" + "\n".join(lines) + "\n" if lines else "")
    )


def _health_text(states: Mapping[str, int]) -> str:
    return ", ".join(f"{state} {count}" for state, count in sorted(states.items())) or "n/a"


def _counters_section(data: RunData, summary: RunSummary) -> str:
    rows = [
        (
            name,
            *(
                big(n.counters[m]) if m == "bytes_sent" else num(n.counters[m], 0)
                for m in COUNTER_METRICS
            ),
        )
        for name, n in summary.nodes.items()
    ]
    text = f"## Counters (last value in {METRICS_FILE})\n\n" + table(
        ("node", *(m.replace("_", " ") for m in COUNTER_METRICS)), rows
    )
    other = sorted(
        m
        for m in data.metrics.names()
        if m not in KNOWN_METRICS and not m.startswith(CPU_METRIC_PREFIX)
    )
    if other:
        text += f"\nOther metrics present (not rendered): {', '.join(f'`{m}`' for m in other)}\n"
    return text


def _appendix(data: RunData) -> str:
    if data.spec_text is None:
        return f"## Appendix: experiment spec\n\n{SPEC_FILE} was not found.\n"
    fence = "````" if "```" in data.spec_text else "```"
    return (
        f"## Appendix: experiment spec ({SPEC_FILE})\n\n"
        f"{fence}yaml\n{data.spec_text.rstrip()}\n{fence}\n"
    )
