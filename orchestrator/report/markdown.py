"""report.md: the run's figures as Markdown, section by section.

Every number comes from the summary (summary.py), so report.md and summary.json cannot disagree;
this module only words and lays them out. The blockchain sections, which differ between DFL and
BLADE-FL, are in markdown_chain.py; the Faults section, for runs with a faults.jsonl, in
markdown_faults.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.datadir import PROFILE_FILE
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
from orchestrator.report.cpu_table import NON_PROTOCOL_TASKS
from orchestrator.report.hosts import hosts_section
from orchestrator.report.markdown_chain import (
    chain_section,
    no_chain_section,
    plagiarism_section,
    pow_chain_section,
)
from orchestrator.report.markdown_faults import faults_section
from orchestrator.report.markdown_load import load_section
from orchestrator.report.schema import (
    ACCURACY_PLOT,
    BLADE_PROTOCOL,
    CONTAINER_METRICS,
    COUNTER_METRICS,
    CPU_METRIC_PREFIX,
    CPU_PLOT,
    FEDAVG_PROTOCOL,
    KNOWN_METRICS,
    LOCAL_RUNTIME,
    METRICS_FILE,
    PLOTS_DIR,
    SPEC_FILE,
    RunData,
)
from orchestrator.report.summary import (
    COVERAGE_TOLERANCE,
    FINAL_WINDOW_FRACTION,
    FINAL_WINDOW_S,
    NodeSummary,
    RunSummary,
    cgroup_is_the_nodes,
    mean,
    reference_chain,
)
from orchestrator.report.table6 import (
    ATTRIBUTED_SHARE_TARGET,
    BLOCKCHAIN_SHARE_TARGET,
    NETWORK_SHARE_TARGET,
    account_markdown,
    account_notes,
    cpu_account,
    cpu_intro,
    paper_overview_rows,
    protocol_share_lines,
    share_text,
    table6_markdown,
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
        else no_chain_section(summary)
        if summary.protocol == FEDAVG_PROTOCOL
        else chain_section(summary),
        plagiarism_section(data, summary),
        _containers_section(data, summary),
        hosts_section(data, summary),
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
            num(n.protocol_cpu_seconds),
            share_text(n.protocol_blockchain_share, BLOCKCHAIN_SHARE_TARGET, at_most=True),
            share_text(n.protocol_network_share, NETWORK_SHARE_TARGET, at_most=True),
            pct(n.protocol_ml_share),
            *(
                num(n.cpu_seconds_by_task.get(t, 0.0) if n.cpu_source else None)
                for t in NON_PROTOCOL_TASKS
            ),
            num(n.startup_cpu_seconds),
            num(n.process_cpu_seconds),
            share_text(n.attributed_share, ATTRIBUTED_SHARE_TARGET, at_most=False)
            + (f" **off by >{pct(COVERAGE_TOLERANCE, 0)}**" if n.coverage_flagged else ""),
        )
        for name, n in summary.nodes.items()
    ]
    parts = [
        "## CPU time (paper Table 6 layout)\n",
        cpu_intro(summary.coverage_tolerance),
        table(
            (
                "node",
                "protocol CPU s",
                "blockchain share",
                "network share",
                "ml share",
                *(f"{t} s" for t in NON_PROTOCOL_TASKS),
                "start-up s",
                "process CPU since start-up s",
                "attributed share",
            ),
            [*overview, *paper_overview_rows(len(NON_PROTOCOL_TASKS) + 3)],
        ),
        f"![CPU seconds by category]({PLOTS_DIR}/{CPU_PLOT})\n",
    ]
    own_cgroup = cgroup_is_the_nodes(summary.runtime)
    for name, node in data.nodes.items():
        parts.append(f"### {name}\n")
        profile = node.profile
        if profile is None:
            parts.append(f"No CPU figures: {node.profile_problem}.\n")
            continue
        parts.append(
            table6_markdown(
                profile.seconds,
                all_paper_tasks=summary.protocol not in (BLADE_PROTOCOL, FEDAVG_PROTOCOL),
            )
        )
        parts.append(account_markdown(account := cpu_account(profile, own_cgroup=own_cgroup)))
        figures = summary.nodes[name]
        notes = [*account_notes(account), *protocol_share_lines(profile.seconds)]
        lines = [f"- {line}" for line in notes]
        lines.append(
            f"- profiler total vs process CPU: {seconds(profile.total)} vs "
            f"{seconds(profile.process_cpu_seconds)}, coverage {pct(figures.coverage)}: the "
            f"attributed share (target ≥ {pct(ATTRIBUTED_SHARE_TARGET, 0)})"
            + (
                f" — **off by more than {pct(COVERAGE_TOLERANCE, 0)}**"
                if figures.coverage_flagged
                else ""
            )
        )
        if profile.profiled_seconds is not None:
            lines.append(f"- profiled_seconds as reported: {seconds(profile.profiled_seconds)}")
        if profile.source != PROFILE_FILE:
            lines.append(f"- source: {profile.source} (no {PROFILE_FILE})")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _containers_section(data: RunData, summary: RunSummary) -> str:
    """Memory and CPU that are each node's own, titled by what a node is in this run.

    In containers (Docker: cgroup figures or health counts) the container's cgroup, its health,
    and the node's process inside it; where nodes are processes of the machine (the local
    runtime) the process's figures only, as its cgroup is shared with the machine's other
    processes and its figures are the machine's, not the node's.
    """
    nodes = summary.nodes.values()
    in_containers = bool(data.info.health) or any(
        n.memory_peak_bytes is not None or n.cgroup_cpu_seconds is not None for n in nodes
    )
    if in_containers:
        return _containers_text(data, summary)
    if any(_has_process_figures(n) for n in nodes):
        return _processes_text(data, summary)
    return ""


def _has_process_figures(node: NodeSummary) -> bool:
    return any(
        figure is not None
        for figure in (node.uss_peak_bytes, node.pss_peak_bytes, node.process_lifetime_cpu_seconds)
    )


def _containers_text(data: RunData, summary: RunSummary) -> str:
    nodes = summary.nodes
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
    text = (
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
    if any(_has_process_figures(n) for n in nodes.values()):
        text += (
            "\nThe node's process inside each container. "
            + _PROCESS_FIGURES
            + " The container's memory is not the process's: it adds the kernel's memory for the "
            "container and the page cache in use, and leaves out the shared pages another cgroup "
            "was charged for first (a library's, read before the container started).\n\n"
            + _process_table(summary)
        )
    return text


# What the process table's columns are, in both sections.
_PROCESS_FIGURES = (
    "Memory from the process's page accounting (/proc/PID/smaps_rollup), sampled with the other "
    "metrics: USS is the memory only the node's process maps, what stopping it frees; PSS adds "
    "its share of the pages it shares with other processes (torch's libraries, for one), so "
    "that the nodes' PSS adds up to what they take together. Process CPU is the process's user "
    "plus system seconds since it started, imports included (the CPU section's process CPU "
    "counts from the profiler's start)."
)


def _processes_text(data: RunData, summary: RunSummary) -> str:
    nodes = summary.nodes.values()
    uss = [n.uss_peak_bytes for n in nodes if n.uss_peak_bytes is not None]
    pss = [n.pss_peak_bytes for n in nodes if n.pss_peak_bytes is not None]
    lines = []
    if uss:
        lines.append(f"- USS per node: mean of peaks {mib(mean(uss))}, largest {mib(max(uss))}")
    if pss:
        lines.append(f"- all nodes together at their PSS peaks: {mib(sum(pss))}")
    if data.info.runtime == LOCAL_RUNTIME and data.metrics.names() & set(CONTAINER_METRICS):
        lines.append(
            f"- {METRICS_FILE} holds cgroup figures under the nodes' names, written by nodes "
            "that did not check whether the cgroup was theirs alone: they are the machine's, "
            "and not shown"
        )
    if data.info.runtime == LOCAL_RUNTIME:
        intro = "Each node is a process of this machine, and these figures are the process's own. "
        why = (
            " No cgroup figures: the nodes share their cgroup with the orchestrator and the "
            "machine's other processes, so its figures would be the machine's."
        )
    else:
        intro = "Each node's own process. "
        why = (
            " No cgroup figures: no node was alone in its cgroup (as it is in a container), so "
            "the cgroup's figures would not have been the node's."
        )
    return (
        "## Processes\n\n"
        + intro
        + _PROCESS_FIGURES
        + why
        + "\n\n"
        + _process_table(summary)
        + ("\n" + "\n".join(lines) + "\n" if lines else "")
    )


def _process_table(summary: RunSummary) -> str:
    rows = [
        (
            name,
            mib(n.uss_mean_bytes),
            mib(n.uss_peak_bytes),
            mib(n.pss_peak_bytes),
            num(n.process_lifetime_cpu_seconds),
        )
        for name, n in summary.nodes.items()
    ]
    return table(("node", "USS mean", "USS peak", "PSS peak", "process CPU s"), rows)


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
