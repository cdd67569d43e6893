"""`dfl simulate SPEC --out DIR` and `dfl sweep DIR`: the tick simulator, one run or a set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.commands.common import add_spec_arguments, spec_from_args
from orchestrator.datasets import DatasetMissing
from orchestrator.spec import SpecError

OUTPUTS = """\
Writes into DIR:
  accuracy.csv      DFL: every node's accuracy on fresh test samples, every sim.accuracy_interval
  weight_diff.csv   DFL: the paper's eq. 5 per layer, same ticks
  reputation.csv    DFL: after each aggregation, the node's reputation of each sender
  chain.csv         DFL: per node, height, transactions, receipts, confirmations, bytes sent
  rounds.csv        BLADE-FL: per block, the global model's test loss and accuracy, time units
  summary.json      final accuracy (or loss), ticks to 0.9, wall time, ticks/s, CPU by category
  run.png           the run's figure; spec.yaml, the spec as it ran; nodes/<name>/chain.sqlite

A DFL spec with `faults:` has them carried out in virtual time (a crashed node is rebuilt from
its chain store and checkpoint), and DIR also gets what a real run's report reads: run.json,
metrics.csv and faults.jsonl, with faults.md (the report's Faults section) and plots/faults.png."""


def register(commands: argparse._SubParsersAction) -> None:
    simulate = commands.add_parser(
        "simulate",
        help="run an experiment in the tick simulator (one process, virtual time, real ledger)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""\
Runs every node's protocol engine in this process with virtual time (one tick is one second)
and an in-memory transport: the paper-scale runtime. The ledger is real (signed transactions
and receipts, blocks confirmed by neighbours and stored in SQLite; BLADE-FL's proof of work)
unless --no-chain, which runs the papers' own chainless semantics for comparison.

DFL: each node trains every sim.training_interval ticks (8-12), sends to its neighbours, which
test the model on 100 samples of their own distribution, and aggregates a full buffer.
BLADE-FL: K rounds of tau local epochs (alpha time units each), then a block mined in about
beta time units; t_sum = K (tau alpha + beta).

{OUTPUTS}""",
    )
    add_spec_arguments(simulate)
    simulate.add_argument(
        "--out", type=Path, metavar="DIR", help="run directory (default: runs/<spec name>-sim)"
    )
    simulate.add_argument(
        "--no-chain",
        action="store_true",
        help="leave the ledger out (the papers' simulators); the difference is the chain's cost",
    )
    simulate.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads (default 1, as every sweep worker: more is faster, but results "
        "then differ in the last bits, and torch's extra threads escape the CPU profile)",
    )
    simulate.add_argument(
        "--force", action="store_true", help="replace a finished run already in DIR"
    )
    simulate.add_argument("--quiet", action="store_true", help="no progress bar")
    simulate.add_argument("--data-dir", metavar="DIR", help="where datasets live (default: ./data)")
    simulate.set_defaults(handler=run_simulate)

    sweep = commands.add_parser(
        "sweep",
        help="run a set of simulations (a paper figure) in parallel; grid figure and table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Runs every case of a set directory (set.yaml: a base spec, rows x columns of overrides and
repetitions; see experiments/dfl-fig9/set.yaml) in the simulator, one worker process per
core, each with one torch thread. Runs already finished (their summary.json exists) are
skipped, so an interrupted sweep resumes. Then writes OUT/summary.md, OUT/summary.csv and
OUT/figure.png (the set's grid, or its curve against x), and appends the sweep's timing to
OUT/sweep.json.""",
    )
    sweep.add_argument("directory", type=Path, metavar="DIR", help="a set directory with set.yaml")
    sweep.add_argument(
        "--out", type=Path, metavar="OUT", help="where the runs go (default: runs/<set directory>)"
    )
    sweep.add_argument(
        "--jobs", type=int, default=None, metavar="N", help="worker processes (default: cores)"
    )
    sweep.add_argument(
        "--repetitions",
        type=int,
        default=None,
        metavar="N",
        help="repetitions for the cases the set repeats (Fig. 9's Dirichlet cases: the paper's 10)",
    )
    sweep.add_argument("--no-chain", action="store_true", help="every run without the ledger")
    sweep.add_argument(
        "--report-only", action="store_true", help="run nothing; redraw the table and figure"
    )
    sweep.add_argument("--data-dir", metavar="DIR", help="where datasets live (default: ./data)")
    sweep.set_defaults(handler=run_sweep_command)


def run_simulate(args: argparse.Namespace) -> int:
    from node.learning.training import configure_torch
    from orchestrator.sim.run import RunExists, simulate

    spec = spec_from_args(args)
    if spec is None:
        return 2
    if args.threads < 1:
        print("error: --threads must be at least 1", file=sys.stderr)
        return 2
    configure_torch(args.threads)
    out = args.out or Path("runs") / f"{spec.name}-sim"
    try:
        summary = simulate(
            spec,
            out,
            chain=not args.no_chain,
            progress=not args.quiet,
            data_dir=args.data_dir,
            replace=args.force,
        )
    except (DatasetMissing, RunExists, SpecError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    headline = {
        key: summary[key]
        for key in ("final_accuracy", "ticks_to_0.9", "final_loss", "wall_seconds", "chain_share")
        if key in summary
    }
    print(f"wrote {out}: " + ", ".join(f"{k} {v}" for k, v in headline.items()))
    return 0


def run_sweep_command(args: argparse.Namespace) -> int:
    from orchestrator.sim.set_report import write_set_report
    from orchestrator.sim.sweep import load_set, run_sweep

    if args.repetitions is not None and args.repetitions < 1:
        print("error: --repetitions must be at least 1", file=sys.stderr)
        return 2
    try:
        plan = load_set(args.directory, args.out, repetitions=args.repetitions)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = 0
    if not args.report_only:
        record = run_sweep(plan, jobs=args.jobs, chain=not args.no_chain, data_dir=args.data_dir)
        failed = len(record["failed"])
        print(
            f"sweep took {record['elapsed_seconds'] / 60:.1f} min for {record['ran']} runs "
            f"({record['skipped']} were already done); {failed} failed"
        )
    paths = write_set_report(plan, chain=not args.no_chain)
    print(f"wrote {paths['md']}, {paths['csv']} and {paths['figure']}")
    return 1 if failed else 0
