"""contributions.csv, lazy_rounds.csv and the printed ranking: one writer for each protocol.

Both protocols write contributions.csv with one row per node, ranked (rank 1 first), so a
script can read either run's ranking the same way; the columns after `score` are each
protocol's own figures. BLADE-FL's score is the node's share of the chain's models that were
not flagged lazy: a noisy copy of a peer's model brings the aggregate nothing that the peer's
own model did not, so only a client's own work counts.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestrator.contributions import DflContributions
from orchestrator.lazy_verdict import ClientRound, ClientVerdict, RoundTable

CONTRIBUTIONS_FILE = "contributions.csv"
LAZY_ROUNDS_FILE = "lazy_rounds.csv"


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _write(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([_cell(v) for v in row] for row in rows)
    return path


def write_dfl(result: DflContributions, directory: Path) -> Path:
    bins = len(result.bin_edges_s) - 1
    header = [
        "rank",
        "node",
        "score",
        "raw_score",
        "transactions",
        "receipts",
        "mean_accuracy",
        "accuracy_slope_per_min",
        *(f"accuracy_bin{i + 1}" for i in range(bins)),
        "confirmations_given",
    ]
    rows = [
        [
            rank,
            n.node,
            n.score,
            n.raw_score,
            n.transactions,
            n.receipts,
            n.mean_accuracy,
            n.slope_per_minute,
            *n.bin_means,
            n.confirmations,
        ]
        for rank, n in enumerate(result.nodes, start=1)
    ]
    return _write(directory / CONTRIBUTIONS_FILE, header, rows)


@dataclass(frozen=True)
class BladeRow:
    node: str
    score: float
    models: int  # in the chain's blocks
    blocks_mined: int
    verdict: ClientVerdict


def blade_rows(
    verdicts: Sequence[ClientVerdict], models: dict[str, int], mined: dict[str, int]
) -> list[BladeRow]:
    """Ranked rows: score = the node's share of the models not flagged lazy."""
    own = {v.client: models.get(v.client, 0) - v.flagged for v in verdicts}
    total = sum(own.values())
    rows = [
        BladeRow(
            v.client,
            own[v.client] / total if total > 0 else 0.0,
            models.get(v.client, 0),
            mined.get(v.client, 0),
            v,
        )
        for v in verdicts
    ]
    rows.sort(key=lambda r: (r.verdict.lazy, -r.score, r.node))
    return rows


def write_blade(
    rows: Sequence[BladeRow],
    rounds: Sequence[ClientRound],
    tables: Sequence[RoundTable],
    directory: Path,
) -> tuple[Path, Path]:
    header = [
        "rank",
        "node",
        "score",
        "lazy",
        "rounds_judged",
        "rounds_flagged",
        "models",
        "blocks_mined",
        "mean_copy_coefficient",
        "median_copy_z",
        "mean_spread_ratio",
    ]
    contributions = _write(
        directory / CONTRIBUTIONS_FILE,
        header,
        [
            [
                rank,
                r.node,
                r.score,
                int(r.verdict.lazy),
                r.verdict.rounds,
                r.verdict.flagged,
                r.models,
                r.blocks_mined,
                r.verdict.mean_copy_coefficient,
                r.verdict.median_copy_z,
                r.verdict.mean_spread_ratio,
            ]
            for rank, r in enumerate(rows, start=1)
        ],
    )
    by_round = {t.round: t for t in tables}
    per_round = [
        [
            r.round,
            by_round[r.round].block_hash,
            by_round[r.round].source,
            r.client,
            r.nearest,
            r.copy_coefficient,
            r.copy_z,
            r.difference_std,
            r.spread_ratio,
            int(r.lazy),
        ]
        for r in rounds
    ]
    per_round += [
        [t.round, t.block_hash, "", "", "", None, None, None, None, f"no figures: {t.missing}"]
        for t in tables
        if not t.entries
    ]
    per_round.sort(key=lambda row: (int(str(row[0])), str(row[3])))
    lazy_rounds = _write(
        directory / LAZY_ROUNDS_FILE,
        [
            "round",
            "block_hash",
            "source",
            "client",
            "nearest",
            "copy_coefficient",
            "copy_z",
            "difference_std",
            "spread_ratio",
            "lazy",
        ],
        per_round,
    )
    return contributions, lazy_rounds


def _format(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def dfl_table(result: DflContributions) -> str:
    lines = [
        f"{'rank':>4}  {'node':<10} {'score':>6} {'txs':>5} {'receipts':>8} {'mean acc':>8} "
        f"{'slope/min':>9} {'confirms':>8}"
    ]
    for rank, n in enumerate(result.nodes, start=1):
        lines.append(
            f"{rank:>4}  {n.node:<10} {n.score:>6.3f} {n.transactions:>5} {n.receipts:>8} "
            f"{_format(n.mean_accuracy):>8} {_format(n.slope_per_minute, '+.4f'):>9} "
            f"{n.confirmations:>8}"
        )
    return "\n".join(lines)


def blade_table(rows: Sequence[BladeRow]) -> str:
    lines = [
        f"{'rank':>4}  {'node':<10} {'score':>6} {'verdict':<7} {'flagged':>9} {'models':>6} "
        f"{'median z':>9} {'spread x':>9}"
    ]
    for rank, r in enumerate(rows, start=1):
        v = r.verdict
        lines.append(
            f"{rank:>4}  {r.node:<10} {r.score:>6.3f} {'LAZY' if v.lazy else 'honest':<7} "
            f"{f'{v.flagged}/{v.rounds}':>9} {r.models:>6} {_format(v.median_copy_z, '.1f'):>9} "
            f"{_format(v.mean_spread_ratio, '.1f'):>9}"
        )
    return "\n".join(lines)
