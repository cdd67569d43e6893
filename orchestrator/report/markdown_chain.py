"""report.md's blockchain sections: DFL's Table 7, BLADE-FL's mining table and its lazy clients.

BLADE-FL runs hold proof-of-work blocks mined by any client, so their blockchain section shows
models per block, blocks mined, forks, mining time and hash rate instead of DFL's receipts and
confirmations, and a section on lazy clients reads the resemblance tables of rounds.jsonl.
"""

from __future__ import annotations

from node.datadir import ROUNDS_FILE
from orchestrator.report.cells import big, num, pct, sci, seconds, table
from orchestrator.report.schema import (
    BLADE_PROTOCOL,
    CHAIN_PLOT,
    PLAGIARISM_PLOT,
    PLOTS_DIR,
    RunData,
)
from orchestrator.report.summary import LAZY_FACTOR, NodeSummary, RunSummary, mean, reference_chain


def chain_section(summary: RunSummary) -> str:
    """DFL's blocks (paper Table 7): how full they are and how much of them is confirmed."""
    rows = []
    for name, n in summary.nodes.items():
        verifies = _verifies(n)
        rows.append(
            (
                name,
                num(n.tx_per_block_mean),
                "n/a" if n.tx_per_block_min is None else str(n.tx_per_block_min),
                num(n.confirmations_per_block_mean),
                "n/a"
                if n.confirmations_per_block_min is None
                else str(n.confirmations_per_block_min),
                pct(n.confirmed_fraction_mean),
                str(n.peers),
                "n/a" if n.blocks is None else str(n.blocks),
                verifies,
            )
        )
    return (
        "## Blockchain (paper Table 7 layout)\n\n"
        "From each node's chain store. Confirmed = share of the confirmable receipts (those the "
        "block creator's neighbours wrote) that the block's confirmations cover.\n\n"
        + table(
            (
                "node",
                "tx/block mean",
                "tx/block min",
                "confirmations/block mean",
                "confirmations/block min",
                "confirmed",
                "peers",
                "blocks",
                "chain verifies",
            ),
            rows,
            "-nnnnnnn-",
        )
        + f"\n![chain height over time]({PLOTS_DIR}/{CHAIN_PLOT})\n"
    )


def _verifies(node: NodeSummary) -> str:
    if node.chain_verifies is None:
        return f"no store ({node.chain_problem})"
    return "yes" if node.chain_verifies else f"no ({node.chain_problem})"


def no_chain_section(summary: RunSummary) -> str:
    """FedAvg's: there is no chain to show, and its blockchain CPU is 0 by construction."""
    return (
        "## Blockchain\n\n"
        f"None: {summary.protocol} keeps no chain (no records, signatures, blocks or mining), so "
        "no node has a chain store and its blockchain CPU is 0 by construction; it is the "
        "baseline the chain's cost is measured against.\n"
    )


def pow_chain_section(data: RunData, summary: RunSummary) -> str:
    """BLADE-FL's blocks: every client mines, so who mined what and at which cost."""
    rows = []
    for name, n in summary.nodes.items():
        verifies = _verifies(n)
        rows.append(
            (
                name,
                "n/a" if n.blocks is None else str(n.blocks),
                num(n.tx_per_block_mean),
                "n/a" if n.tx_per_block_min is None else str(n.tx_per_block_min),
                "n/a" if n.blocks_mined is None else str(n.blocks_mined),
                num(n.forks, 0),
                num(n.mining_searches, 0),
                seconds(n.mining_seconds_per_search),
                big(n.pow_hashes),
                big(n.hash_rate),
                verifies,
            )
        )
    reference = reference_chain(data)
    hashes = [n.pow_hashes for n in summary.nodes.values() if n.pow_hashes is not None]
    mining = mean(data.metrics.series(name, "mining_seconds").last for name in data.nodes)
    lines = [
        f"- difficulty (run.json `pow_difficulty`): {big(summary.pow_difficulty)} expected "
        "hashes per block",
        f"- network hash rate: {big(sum(hashes) if hashes else None)} hashes (all nodes) / "
        f"{seconds(mining)} (mean mining_seconds) = {big(summary.network_hash_rate)} hashes "
        "per wall second",
    ]
    if summary.pow_difficulty and summary.network_hash_rate:
        lines.append(
            "- expected time to a block at that rate: difficulty / network hash rate = "
            f"{seconds(summary.pow_difficulty / summary.network_hash_rate)}"
        )
    lines.append(
        f"- blocks mined are counted on {reference}'s chain (the longest that verifies)"
        if reference
        else "- blocks mined: no BLADE-FL chain store to count them on"
    )
    return (
        "## Blockchain (BLADE-FL)\n\n"
        "From each node's chain store and its counters in metrics.csv. Models/block = the "
        "models (transactions) a mined block holds; blocks mined = blocks whose header names "
        "the node as miner; forks = competing valid blocks the node saw. A mining search ends "
        "when the node finds a block or a peer's block wins; time/search = mining_seconds / "
        "mining_searches (wall time). Hashes/CPU s = pow_hashes / the node's CPU seconds in "
        "task `mine`.\n\n"
        + table(
            (
                "node",
                "blocks",
                "models/block mean",
                "models/block min",
                "blocks mined",
                "forks seen",
                "mining searches",
                "mining time/search",
                "hashes",
                "hashes/CPU s",
                "chain verifies",
            ),
            rows,
            "-nnnnnnnnn-",
        )
        + "\n"
        + "\n".join(lines)
        + f"\n\n![chain height over time]({PLOTS_DIR}/{CHAIN_PLOT})\n"
    )


def plagiarism_section(data: RunData, summary: RunSummary) -> str:
    """BLADE-FL's lazy clients from rounds.jsonl; nothing for a DFL run, which has no such file."""
    if summary.protocol != BLADE_PROTOCOL and data.rounds is None:
        return ""
    title = "## Lazy clients (plagiarism)\n\n"
    if data.rounds is None:
        return title + f"No node left a {ROUNDS_FILE}: no resemblance figures.\n"
    if not summary.plagiarism:
        return title + f"{data.rounds.source}'s {ROUNDS_FILE} holds no resemblance entries.\n"
    rows = [
        (
            name,
            v.behaviour or "unknown",
            str(v.rounds),
            num(v.model_cosine, 4),
            num(v.update_cosine, 3),
            num(v.copy_coefficient, 3),
            sci(v.difference_std),
            f"{v.nearest} ({v.nearest_rounds}/{v.rounds})",
            "**suspected**" if v.suspected else "honest-looking",
        )
        for name, v in summary.plagiarism.items()
    ]
    return (
        title
        + f"From {data.rounds.source}'s {ROUNDS_FILE} ({len(data.rounds.rounds)} blocks; every "
        "client computes the same table). For each model of a block, the nearest peer is the "
        "one whose update it holds most of; the figures are means over the blocks that held the "
        "model. How to read it: a noisy copy of a peer's model shows a difference std about the "
        "noise's sigma (0.1 for sigma² = 0.01), a copy coefficient near 1 and an update cosine "
        "near 0; honest clients differ from each other by far less (about 0.001) with a model "
        "cosine about 1. Suspected = mean difference std at least "
        f"{LAZY_FACTOR:.0f}x the median over all clients.\n\n"
        + table(
            (
                "node",
                "behaviour (run.json)",
                "blocks",
                "model cosine",
                "update cosine",
                "copy coefficient",
                "difference std",
                "nearest (blocks)",
                "verdict",
            ),
            rows,
            "--nnnnn--",
        )
        + f"\n![difference to the nearest peer per round]({PLOTS_DIR}/{PLAGIARISM_PLOT})\n"
    )
