"""`dfl chain contributions RUN_DIR`: what each node contributed, from the run's chains alone.

DFL: per node, the transactions it created, the receipts its peers signed on them, the
accuracy they measured (mean, least-squares trend per minute, mean per time bin), the
confirmations it gave, and an accuracy-weighted contribution score (orchestrator/
contributions.py states and argues the rule). BLADE-FL: per round and client, the lazy-client
verdict from the resemblance of the block's models (orchestrator/lazy_verdict.py), and per
client over the run. Everything is computed from verified chain stores; the command lives in
its own module and is added to `dfl chain` by orchestrator/commands/chain.py.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from node.ledger.records import parameter_count
from orchestrator import contributions as dfl
from orchestrator.contributions_run import NoChains, NotARunDirectory, RunChains, open_chains

if TYPE_CHECKING:
    from orchestrator import lazy_verdict as lazy

# The BLADE-FL verdict rebuilds models through the ML host (torch), and every `dfl` command
# imports this module to register it: so those imports happen when this command runs.


def add_contributions(actions: argparse._SubParsersAction) -> None:
    """Adds `contributions` to the `dfl chain` actions."""
    parser = actions.add_parser(
        "contributions",
        help="rank a run's nodes by what they contributed, from the chains alone",
        description=(
            "Reads RUN_DIR/nodes/<name>/chain.sqlite of every node (each re-verified; one that "
            "does not verify is left out and named) and writes contributions.csv, one row per "
            "node ranked by score, and contributions.png. DFL: transactions created (each "
            "counted once across chains), receipts received on them, the accuracy peers "
            "measured (mean, trend per minute, mean per time bin), confirmations given, and "
            "the score: the sum over a node's transactions of their mean receipt accuracy "
            "above chance, as shares that sum to 1. BLADE-FL: per round, each model's "
            "resemblance to its nearest peer and a lazy flag (a difference from that peer "
            "that is noise: several times the others' spread, and independent of the peer's "
            "update), in lazy_rounds.csv; a client is lazy when flagged in at least half of "
            "its rounds. Blocks hold models' digests, not weights: a simulated run is "
            "re-simulated from the chain's own spec and its models matched by digest; a "
            "process run's clients' rounds.jsonl tables are used where they match the chain. "
            "Exit 0 when written; 1 when a BLADE-FL chain's models cannot be recovered; 2 "
            "when RUN_DIR is not a run directory or holds no chain (a fedavg run has none)."
        ),
    )
    parser.add_argument("directory", type=Path, metavar="RUN_DIR", help="a run directory")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help="where to write the CSV and PNG (default: RUN_DIR)"
    )
    parser.add_argument(
        "--bins",
        type=int,
        default=dfl.DEFAULT_BINS,
        metavar="N",
        help=f"DFL: time bins for the accuracy and score over time (default {dfl.DEFAULT_BINS})",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="BLADE-FL: where datasets live, to re-simulate the run (default: ./data)",
    )
    parser.set_defaults(handler=run_contributions)


def run_contributions(args: argparse.Namespace) -> int:
    if args.bins < 1:
        print("error: --bins must be at least 1", file=sys.stderr)
        return 2
    try:
        with open_chains(args.directory) as chains:
            for warning in chains.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            out = args.out or chains.directory
            out.mkdir(parents=True, exist_ok=True)
            if chains.protocol == "dfl":
                return _dfl(chains, out, args.bins)
            return _blade(chains, out, args.data_dir)
    except (NotARunDirectory, NoChains) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _dfl(chains: RunChains, out: Path, bins: int) -> int:
    from orchestrator import contributions_output as output
    from orchestrator.contributions_plots import PLOT_FILE, plot_dfl

    result = dfl.compute(chains, bins=bins)
    csv_path = output.write_dfl(result, out)
    nodes = [n.node for n in result.nodes]
    order = [name for name in chains.nodes if name in nodes] + [
        name for name in nodes if name not in chains.nodes
    ]
    plot = plot_dfl(result, order, out / PLOT_FILE)
    print(
        f"{chains.directory.name}: DFL, {len(result.transactions)} transactions "
        f"({result.duplicates} copies in other chains counted once), chance {result.chance:.2f}"
    )
    print(output.dfl_table(result))
    print(f"wrote {csv_path} and {plot}")
    return 0


def _blade(chains: RunChains, out: Path, data_dir: str | None) -> int:
    from orchestrator import contributions_output as output
    from orchestrator import lazy_verdict as lazy
    from orchestrator.contributions_plots import PLOT_FILE, plot_blade

    blocks, fork_warnings = lazy.chain_blocks(chains)
    for warning in fork_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    tables, problems = _tables(chains, blocks, data_dir)
    if tables is None:
        print(
            "error: the blocks name their models by digest only and the models could not be "
            f"recovered: {'; '.join(problems)}",
            file=sys.stderr,
        )
        return 1
    names = {address.hex(): name for address, name in chains.names.items()}
    parameters = parameter_count(chains.genesis)
    rounds = [r for table in tables for r in lazy.judge_round(table, names, parameters)]
    models = Counter(chains.name_of(client) for b in blocks for client, _ in b.models)
    mined = Counter(chains.name_of(b.miner) for b in blocks)
    clients = list(chains.nodes) + sorted(set(models) - set(chains.nodes))
    rows = output.blade_rows(lazy.verdicts(rounds, clients), dict(models), dict(mined))
    csv_path, rounds_path = output.write_blade(rows, rounds, tables, out)
    plot = plot_blade(rounds, clients, out / PLOT_FILE)
    sources = sorted({t.source for t in tables if t.source})
    print(
        f"{chains.directory.name}: BLADE-FL, {len(blocks)} rounds, figures from "
        f"{', '.join(sources) or 'nowhere'}" + (f" ({'; '.join(problems)})" if problems else "")
    )
    for table in tables:
        who = [r.client for r in rounds if r.round == table.round and r.lazy]
        state = ", ".join(who) if who else "-" if table.entries else f"no figures ({table.missing})"
        print(f"  round {table.round}: lazy {state}")
    print(output.blade_table(rows))
    print(f"wrote {csv_path}, {rounds_path} and {plot}")
    return 0


def _tables(
    chains: RunChains, blocks: list[lazy.BlockModels], data_dir: str | None
) -> tuple[list[lazy.RoundTable] | None, list[str]]:
    """The rounds' tables from re-simulated weights, else (or where those lack rounds) from the
    clients' rounds.jsonl: whichever covers more rounds; None when neither covers any."""
    from orchestrator import lazy_verdict as lazy
    from orchestrator.contributions_replay import NotReplayable, replay_models
    from orchestrator.report.readers import load_run

    problems = []
    candidates = []
    try:
        weights = replay_models(chains.genesis, data_dir)
        replayed = lazy.tables_from_weights(chains.genesis, blocks, weights)
        if all(t.entries for t in replayed):
            return replayed, problems
        problems.append("the re-simulated run's models differ from the chain's in some rounds")
        candidates.append(replayed)
    except NotReplayable as error:
        problems.append(f"not re-simulated: {error}")
    except ValueError as error:  # the genesis's initial model cannot be rebuilt
        problems.append(str(error))
    try:
        log = load_run(chains.directory).rounds
    except NotARunDirectory:
        log = None
    if log is None:
        problems.append("no rounds.jsonl")
    else:
        candidates.append(lazy.tables_from_rounds_log(log, blocks))
    best = max(candidates, key=lambda tables: sum(bool(t.entries) for t in tables), default=None)
    if best is None or not any(t.entries for t in best):
        return None, problems
    return best, problems
