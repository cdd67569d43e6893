"""One node's CPU as the DFL paper's Table 6 lays it out, beside the paper's figures, and all of
the process's CPU accounted for.

Table 6 splits each of DFL's four tasks into the paper's columns (gather confirmation, blockchain
overhead, measure accuracy, ...), and each column is one of the profiler's categories: the paper
counts gathering confirmations and broadcasting as network, accuracy computations as ML, and the
rest of a task as blockchain overhead. Our cell is the profiler's (task, category) seconds; a
(task, category) the paper has no column for is shown beside the task's columns rather than
dropped, so the table adds up to the protocol's CPU.

The shares that judge the protocol are over the protocol tasks only: the paper's Table 6 has no
testbed work (the orchestrator fetching models and metrics, the idle event loop: task "observe")
nor housekeeping ("other"), so counting them would compare a different whole. The account of all
the CPU says where the rest went: start-up, the testbed, what no task claimed, and in Docker what
the container spent outside the node's process.

Profiles from before start-up and apportioning were recorded still render: the figures they lack
are None, and the start-up falls back to `process_cpu_seconds_at_start` (process CPU when the
profiler started, which was after the imports).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.report.cells import num, pct, seconds, table
from orchestrator.report.cpu_table import (
    TABLE6_TASKS,
    TASK_LABELS,
    category_columns,
    is_protocol_task,
    task_rows,
)
from orchestrator.report.schema import CpuProfile

Key = tuple[str, str]  # (task, category)

# The shares the testbed aims for (protocol tasks only) and the attributed share it needs for
# the figures to be trusted: the entries explain nearly all of the process's CPU.
BLOCKCHAIN_SHARE_TARGET = 0.04
NETWORK_SHARE_TARGET = 0.15
ATTRIBUTED_SHARE_TARGET = 0.95

SHARE_CATEGORIES = ("blockchain", "network", "ml")
STARTUP_FIELD = "startup_cpu_seconds"
STARTUP_FALLBACK_FIELD = "process_cpu_seconds_at_start"  # older profiles


@dataclass(frozen=True)
class Part:
    """One column of the paper's Table 6: the category it counts, and the paper's name for it."""

    category: str
    label: str


# Table 6's columns per task, in the paper's order.
TABLE6_PARTS: Mapping[str, tuple[Part, ...]] = {
    "generate_block": (
        Part("network", "gather confirmation"),
        Part("blockchain", "blockchain overhead"),
    ),
    "generate_transaction": (
        Part("network", "broadcast transaction"),
        Part("ml", "measure accuracy"),
        Part("blockchain", "blockchain overhead"),
    ),
    "update_model": (
        Part("ml", "calculate self-accuracy"),
        Part("blockchain", "blockchain overhead"),
    ),
    "receive_transaction": (
        Part("network", "broadcast generated transaction"),
        Part("ml", "calculate accuracy"),
        Part("blockchain", "blockchain overhead"),
    ),
}

# Tian, Guo, Zhang, Al-Ars, "DFL: High-Performance Blockchain-Based Federated Learning",
# Distributed Ledger Technologies: Research and Practice 2(3), 2023, doi:10.1145/3600225,
# section 5.1.2 (the four-node net), Table 6 "Four Node Performance Result, Unit: CPU Second".
# node-1 sums to 2777.90 s: blockchain 35.52 (1.3 %), network 342.83 (12.3 %), ML 2399.55 (86.4 %).
PAPER_TABLE6: Mapping[str, Mapping[Key, float]] = {
    "node-1": {
        ("generate_block", "network"): 56.63,
        ("generate_block", "blockchain"): 3.17,
        ("generate_transaction", "network"): 71.72,
        ("generate_transaction", "ml"): 364.72,
        ("generate_transaction", "blockchain"): 8.28,
        ("update_model", "ml"): 90.34,
        ("update_model", "blockchain"): 0.74,
        ("receive_transaction", "network"): 214.48,
        ("receive_transaction", "ml"): 1944.49,
        ("receive_transaction", "blockchain"): 23.33,
    },
    "node-2": {
        ("generate_block", "network"): 105.66,
        ("generate_block", "blockchain"): 4.00,
        ("generate_transaction", "network"): 88.89,
        ("generate_transaction", "ml"): 399.76,
        ("generate_transaction", "blockchain"): 8.86,
        ("update_model", "ml"): 99.67,
        ("update_model", "blockchain"): 3.45,
        ("receive_transaction", "network"): 299.28,
        ("receive_transaction", "ml"): 1438.01,
        ("receive_transaction", "blockchain"): 20.07,
    },
}
PAPER_NODES = tuple(PAPER_TABLE6)


# --- the profile's accounting fields -------------------------------------------------------------


@dataclass(frozen=True)
class AccountedProfile(CpuProfile):
    """A profile.json's figures beyond the (task, category) entries: what the CPU account needs.

    All optional: a profile from before a field existed leaves it None (or empty), and the
    account says "n/a" for it rather than guessing.
    """

    startup_cpu_seconds: float | None = None  # process CPU until the node served
    startup_source: str | None = None  # the profile.json field it came from
    # The part of the entries charged from gRPC's own C threads, by the bytes each task moved.
    apportioned: Mapping[Key, float] = field(default_factory=dict)
    reported_remainder_seconds: float | None = None  # the node's own remainder_seconds
    reported_attributed_share: float | None = None  # the node's own attributed_share
    cgroup_cpu_seconds: float | None = None  # the container's CPU at the snapshot (or null)


def accounted(profile: CpuProfile) -> AccountedProfile:
    """`profile` with its accounting fields, all unknown for a plain CpuProfile (one rebuilt
    from metrics.csv has no start-up or process figures)."""
    if isinstance(profile, AccountedProfile):
        return profile
    return AccountedProfile(
        seconds=profile.seconds,
        process_cpu_seconds=profile.process_cpu_seconds,
        profiled_seconds=profile.profiled_seconds,
        source=profile.source,
    )


def startup_from(raw: Mapping[str, object]) -> tuple[float | None, str | None]:
    """The start-up CPU of a profile.json and the field it came from: `startup_cpu_seconds`,
    else (older nodes) `process_cpu_seconds_at_start`, the process's CPU when the profiler
    started: either way start-up + process_cpu_seconds is the process's CPU at the snapshot."""
    for name in (STARTUP_FIELD, STARTUP_FALLBACK_FIELD):
        value = raw.get(name)
        if value is not None:
            return float(value), name  # type: ignore[arg-type]
    return None, None


def entries_by_key(entries: Iterable[Mapping[str, object]]) -> dict[Key, float]:
    """A profile.json list of {task, category, seconds} summed by (task, category)."""
    out: dict[Key, float] = {}
    for entry in entries:
        key = (str(entry["task"]), str(entry["category"]))
        out[key] = out.get(key, 0.0) + float(entry["seconds"])  # type: ignore[arg-type]
    return out


# --- the figures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shares:
    """The protocol tasks' CPU and each category's share of it (None without protocol CPU)."""

    total: float
    blockchain: float | None
    network: float | None
    ml: float | None

    def of(self, category: str) -> float | None:
        return {"blockchain": self.blockchain, "network": self.network, "ml": self.ml}.get(category)


def protocol_seconds(cpu: Mapping[Key, float]) -> dict[Key, float]:
    """The entries of the protocol tasks: observe and other left out (see the module's doc)."""
    return {key: s for key, s in cpu.items() if is_protocol_task(key[0])}


def protocol_shares(cpu: Mapping[Key, float]) -> Shares:
    """Each category's share of the protocol tasks' CPU; the paper's Table 6 total is the same
    whole, since it has no other tasks."""
    protocol = protocol_seconds(cpu)
    total = sum(protocol.values())

    def share(category: str) -> float | None:
        part = sum(s for (_, c), s in protocol.items() if c == category)
        return part / total if total > 0 else None

    return Shares(total, share("blockchain"), share("network"), share("ml"))


PAPER_SHARES: Mapping[str, Shares] = {
    node: protocol_shares(cells) for node, cells in PAPER_TABLE6.items()
}


def attributed_share(profile: CpuProfile) -> float | None:
    """The entries over the process's CPU since start-up: how much of the CPU the tables explain
    (the same figure as CpuProfile.coverage; above 1 the entries double-count)."""
    return profile.coverage


def remainder_seconds(profile: CpuProfile) -> float | None:
    """The process's CPU since start-up that no entry claims (slightly negative when scopes that
    were open at the snapshot had already been charged)."""
    if profile.process_cpu_seconds is None:
        return None
    return profile.process_cpu_seconds - profile.total


@dataclass(frozen=True)
class Table6Row:
    """One cell of our Table 6: a task's seconds in one category, with the paper's beside it."""

    task: str
    category: str
    label: str  # the paper's column name, or the category with "no paper column"
    ours: float
    paper: Mapping[str, float | None]  # by PAPER_NODES; None where the paper has no such cell

    @property
    def in_paper(self) -> bool:
        return any(v is not None for v in self.paper.values())


def table6_rows(cpu: Mapping[Key, float], *, all_paper_tasks: bool = True) -> list[Table6Row]:
    """Our Table 6, task by task: the paper's columns first (0.00 where we spent nothing), then
    every other category the task used, so no protocol CPU is dropped; then the protocol tasks
    the paper does not have (BLADE-FL's). `all_paper_tasks`: show DFL's four tasks even where
    the profile has none of them (a DFL run); a BLADE-FL run shows only those it has."""
    protocol = protocol_seconds(cpu)
    present = {task for task, _ in protocol}
    rows: list[Table6Row] = []
    for task in task_rows(present | set(TABLE6_TASKS)):
        if task not in present and not (all_paper_tasks and task in TABLE6_TASKS):
            continue
        parts = TABLE6_PARTS.get(task, ())
        for part in parts:
            rows.append(
                Table6Row(
                    task,
                    part.category,
                    part.label,
                    protocol.get((task, part.category), 0.0),
                    {node: PAPER_TABLE6[node][(task, part.category)] for node in PAPER_NODES},
                )
            )
        named = {part.category for part in parts}
        for category in category_columns(c for t, c in protocol if t == task):
            seconds_ = protocol.get((task, category), 0.0)
            if category not in named and seconds_ != 0:
                label = f"{category} (no paper column)" if parts else category
                rows.append(Table6Row(task, category, label, seconds_, dict.fromkeys(PAPER_NODES)))
    return rows


@dataclass(frozen=True)
class AccountLine:
    """One line of the account of all the CPU: seconds by category where a task's, else a sum."""

    label: str
    by_category: Mapping[str, float] | None  # None: a figure with no category (start-up, ...)
    seconds: float | None
    kind: str = "part"  # "part" (adds up to the total), "total", or "beyond" (the container's)


@dataclass(frozen=True)
class CpuAccount:
    """All of a node process's CPU: start-up + every task + what no task claimed = the process's
    CPU at the snapshot; in Docker the container's CPU and what it spent outside the process."""

    lines: tuple[AccountLine, ...]
    categories: tuple[str, ...]
    process_total: float | None  # start-up + CPU since; without a start-up, the CPU since
    startup_source: str | None
    apportioned: Mapping[Key, float]
    reported_remainder_seconds: float | None
    reported_attributed_share: float | None


def cpu_account(profile: CpuProfile, *, own_cgroup: bool) -> CpuAccount:
    """The account of all of the process's CPU. `own_cgroup`: whether the profile's cgroup
    figure can be the node's (a container); a local node's cgroup is the machine's."""
    full = accounted(profile)
    categories = tuple(category_columns(c for _, c in full.seconds))
    remainder = remainder_seconds(full)
    startup = full.startup_cpu_seconds
    process = full.process_cpu_seconds
    lines = []
    if startup is not None:
        lines.append(AccountLine("start-up (until serving)", None, startup))
    for task in task_rows(t for t, _ in full.seconds):
        by_category = {c: full.seconds.get((task, c), 0.0) for c in categories}
        lines.append(
            AccountLine(TASK_LABELS.get(task, task), by_category, sum(by_category.values()))
        )
    lines.append(AccountLine("remainder (no task claimed it)", None, remainder))
    if startup is not None and process is not None:
        total: float | None = startup + process
        lines.append(AccountLine("process total", None, total, "total"))
    else:
        # Without the start-up the whole is the process's CPU since start-up (None when the
        # profile was rebuilt from metrics.csv, which has no process figure).
        total = process
        lines.append(AccountLine("process CPU since start-up", None, total, "total"))
    cgroup = full.cgroup_cpu_seconds if own_cgroup else None
    if cgroup is not None and startup is not None:
        lines.append(AccountLine("container (cgroup) total", None, cgroup, "beyond"))
        outside = cgroup - total if total is not None else None
        lines.append(
            AccountLine(
                "outside the node process (health checks, `docker exec`, init)",
                None,
                outside,
                "beyond",
            )
        )
    return CpuAccount(
        lines=tuple(lines),
        categories=categories,
        process_total=total,
        startup_source=full.startup_source,
        apportioned=full.apportioned,
        reported_remainder_seconds=full.reported_remainder_seconds,
        reported_attributed_share=full.reported_attributed_share,
    )


# --- Markdown ------------------------------------------------------------------------------------


def table6_markdown(cpu: Mapping[Key, float], *, all_paper_tasks: bool = True) -> str:
    """Our Table 6 with the paper's node-1 and node-2 beside it, then the category totals, after
    a sentence saying so: the shares are each of its own protocol total, since the runs' lengths
    differ."""
    rows = table6_rows(cpu, all_paper_tasks=all_paper_tasks)
    ours = protocol_shares(cpu)
    totals = {node: sum(PAPER_TABLE6[node].values()) for node in PAPER_NODES}
    lines: list[Sequence[str]] = []
    previous = None
    for row in rows:
        label = TASK_LABELS.get(row.task, row.task) if row.task != previous else ""
        previous = row.task
        lines.append(
            (
                label,
                row.label,
                *_with_share(row.ours, ours.total),
                *(cell for n in PAPER_NODES for cell in _with_share(row.paper[n], totals[n])),
            )
        )
    for category in share_categories(protocol_seconds(cpu)):
        ours_seconds = sum(r.ours for r in rows if r.category == category)
        lines.append(
            (
                f"**{category}**",
                "all tasks",
                num(ours_seconds),
                pct(ours.of(category) if ours.total > 0 else None),
                *(
                    cell
                    for n in PAPER_NODES
                    for cell in (
                        num(_paper_category(n, category)),
                        pct(PAPER_SHARES[n].of(category)),
                    )
                ),
            )
        )
    lines.append(
        (
            "**protocol total**",
            "",
            f"**{num(ours.total)}**",
            f"**{pct(1.0 if ours.total > 0 else None)}**",
            *(cell for n in PAPER_NODES for cell in (f"**{num(totals[n])}**", f"**{pct(1.0)}**")),
        )
    )
    header = (
        "task",
        "part (paper's column)",
        "ours s",
        "share",
        *(h for n in PAPER_NODES for h in (f"paper {n} s", "share")),
    )
    return (
        "Table 6 layout: the protocol tasks' CPU seconds and each cell's share of the protocol "
        "total, ours and the paper's.\n\n" + table(header, lines, "--" + "n" * (len(header) - 2))
    )


def share_categories(cpu: Mapping[Key, float]) -> list[str]:
    """The categories whose shares are shown, in the paper's order (the overhead it argues about
    first: blockchain, network, then ML), then any other the profile has."""
    return [
        *SHARE_CATEGORIES,
        *(c for c in category_columns(c for _, c in cpu) if c not in SHARE_CATEGORIES),
    ]


def _paper_category(node: str, category: str) -> float | None:
    cells = [s for (_, c), s in PAPER_TABLE6[node].items() if c == category]
    return sum(cells) if cells else None


def _with_share(value: float | None, total: float) -> tuple[str, str]:
    if value is None:
        return "—", "—"
    return num(value), pct(value / total if total > 0 else None)


def account_markdown(account: CpuAccount) -> str:
    """The account as a table, after a sentence saying what it holds: tasks by category, the
    rest as sums; shares of the process total (of the CPU since start-up where the profile has
    no start-up)."""
    total = account.process_total
    rows = []
    for line in account.lines:
        cells = (
            [num(line.by_category.get(c, 0.0)) for c in account.categories]
            if line.by_category is not None
            else [""] * len(account.categories)
        )
        figure = num(line.seconds)
        share = pct(line.seconds / total) if line.seconds is not None and total else "n/a"
        if line.kind == "total":
            label, figure, share = f"**{line.label}**", f"**{figure}**", f"**{share}**"
        else:
            label = line.label
        rows.append((label, *cells, figure, share))
    container = any(line.kind == "beyond" for line in account.lines)
    return (
        "All the CPU: start-up, every task (observe and other included) and what no task "
        "claimed, adding up to the process's CPU"
        + (", then the container's" if container else "")
        + ".\n\n"
        + table(("part", *account.categories, "total", "share of process total"), rows)
    )


def account_notes(account: CpuAccount) -> list[str]:
    """Where the account's figures came from: an older profile's start-up, the part of the
    tasks' seconds apportioned from gRPC's threads, and the node's own remainder and share."""
    notes = []
    if account.startup_source is None:
        if account.process_total is not None:
            notes.append(
                "start-up: not in this profile.json, so the shares are of the process's CPU "
                "since start-up rather than of all of it"
            )
    elif account.startup_source != STARTUP_FIELD:
        notes.append(
            f"start-up: from `{account.startup_source}` (this node predates "
            f"`{STARTUP_FIELD}`): the process's CPU when its profiler started"
        )
    if account.apportioned:
        parts = ", ".join(
            f"{TASK_LABELS.get(t, t)} {c} {num(s)}"
            for (t, c), s in sorted_keys(account.apportioned)
        )
        notes.append(
            f"of the tasks' seconds, {seconds(sum(account.apportioned.values()))} come from "
            f"gRPC's own C threads, charged in proportion to the bytes each task's RPCs moved: "
            f"{parts}"
        )
    if account.reported_attributed_share is not None:
        notes.append(
            f"as the node reported them: remainder {seconds(account.reported_remainder_seconds)}, "
            f"attributed share {pct(account.reported_attributed_share)}"
        )
    return notes


def sorted_keys(cpu: Mapping[Key, float]) -> list[tuple[Key, float]]:
    """(task, category) pairs in the report's task order, categories in theirs."""
    tasks = task_rows(t for t, _ in cpu)
    categories = category_columns(c for _, c in cpu)
    return sorted(
        cpu.items(), key=lambda item: (tasks.index(item[0][0]), categories.index(item[0][1]))
    )


def share_text(share: float | None, target: float, *, at_most: bool) -> str:
    """A share with a mark where it misses its target: "5.6 % (> 4 %)"."""
    if share is None:
        return pct(share)
    missed = share > target if at_most else share < target
    return pct(share) + (f" ({'>' if at_most else '<'} {pct(target, 0)})" if missed else "")


def paper_overview_rows(width: int) -> list[tuple[str, ...]]:
    """The paper's nodes as rows of the CPU overview: their protocol total and shares, then
    "—" for the `width` columns the paper has no figure for."""
    return [
        (
            f"paper {node}",
            num(PAPER_SHARES[node].total),
            pct(PAPER_SHARES[node].blockchain),
            pct(PAPER_SHARES[node].network),
            pct(PAPER_SHARES[node].ml),
            *("—" for _ in range(width)),
        )
        for node in PAPER_NODES
    ]


def protocol_share_lines(cpu: Mapping[Key, float]) -> list[str]:
    """Each category's protocol share worked out (seconds / protocol seconds), with its target
    and the paper's, as the per-node bullet points."""
    protocol = protocol_seconds(cpu)
    shares = protocol_shares(cpu)
    targets = {"blockchain": BLOCKCHAIN_SHARE_TARGET, "network": NETWORK_SHARE_TARGET}
    lines = []
    for category in share_categories(protocol):
        part = sum(s for (_, c), s in protocol.items() if c == category)
        target = targets.get(category)
        paper = ", ".join(f"{n} {pct(PAPER_SHARES[n].of(category))}" for n in PAPER_NODES)
        lines.append(
            f"protocol {category} share = {num(part)} / {num(shares.total)} = "
            f"{pct(shares.of(category))} ("
            + (f"target ≤ {pct(target, 0)}; " if target is not None else "")
            + f"paper {paper})"
        )
    return lines


def cpu_intro(tolerance: float) -> str:
    """The CPU section's opening: what the figures are, what whole each share is of, why the
    paper's seconds are not ours, and the targets."""
    return (
        "CPU seconds (thread CPU time, not wall time) by task and category, beside the paper's "
        "four-node net (section 5.1.2, Table 6: its node-1 and node-2). The protocol shares are "
        "each category's part of the protocol tasks' CPU: every task but observe (what a node "
        "does for the testbed: the orchestrator's model fetches, status, metrics, sample "
        "injection, the idle event loop) and other, as the paper's Table 6 has no such work; "
        "the paper's shares are of its Table 6 total. Compare shares, not seconds: the paper's "
        "seconds are of its own run's length and hardware (Caffe on CPU). Attributed share = "
        "CPU the profiler charged to a task / the process's CPU since start-up (start-up, "
        "before the node served, is apart). "
        f"Targets: blockchain ≤ {pct(BLOCKCHAIN_SHARE_TARGET, 0)}, network ≤ "
        f"{pct(NETWORK_SHARE_TARGET, 0)}, attributed ≥ {pct(ATTRIBUTED_SHARE_TARGET, 0)}; an "
        f"attributed share more than {pct(tolerance, 0)} away from 100 % is flagged.\n"
    )
