"""`dfl compare`: finished runs side by side, or one spec run under each of several protocols.

    dfl compare RUN_A RUN_B ...                                  (run directories, as before)
    dfl compare SPEC --protocols dfl,blade-fl,fedavg --runtime sim|local|docker

The second form is the fair comparison: the first cannot know whether its runs were on equal
terms (it says when they were not), the second makes them so (orchestrator/spec/equal_terms.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator.compare import DEFAULT_OUT, TooFewRuns, compare_runs
from orchestrator.compare_figures import DEFAULT_TARGET
from orchestrator.report import NotARunDirectory

RUN_DIRECTORY = (
    "a run directory is what `dfl run --out DIR` writes: run.json, metrics.csv, spec.yaml and "
    "nodes/<name>/{profile.json,chain.sqlite}"
)
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
SPEC_RUNTIMES = ("sim", "local", "docker")
SPEC_OPTIONS = ("protocols", "runtime", "set", "target", "force", "data_dir")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare",
        help="compare finished runs side by side, or run one spec under several protocols "
        "on equal terms and compare them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""\
Two forms.

  dfl compare RUN_A RUN_B ... [--out DIR]
Compares two or more finished run directories, e.g. a DFL and a BLADE-FL run of one
experiment. Per run:
  - test-set accuracy against wall-clock time: mean over nodes, with a min..max band
  - final test-set accuracy (mean and min over nodes), nodes, duration, protocol
  - CPU seconds by category (ml, blockchain, network), summed over nodes and per node
  - blockchain share of the profiled CPU: mean over nodes and min..max
  - bytes sent per node (metric bytes_sent; "not recorded" for runs without it)
  - any protocol-specific figures of the run summary (BLADE-FL's, for instance)
Writes OUT/compare.md, OUT/compare.json, OUT/accuracy.png and OUT/cpu.png (OUT is
{DEFAULT_OUT} unless --out says otherwise); the run directories are only read.

  dfl compare SPEC --protocols dfl,blade-fl[,fedavg] --runtime sim|local|docker [--out DIR]
Runs one experiment spec under each protocol with everything else equal (model, dataset,
partition and seed, nodes, behaviours, duration, evaluation, resources, faults), into
OUT/<protocol>/, then compares them. A protocol section the spec lacks is derived by one rule:
the same local training per node (DFL's batch size and the same number of local SGD steps,
as K rounds x tau local epochs over a dataset collected early; t_sum = K (tau alpha + beta)
fits the duration). The topology differs by necessity: BLADE-FL full mesh, FedAvg a star
around node 0, DFL the spec's own. sim runs in the simulator (accuracy against virtual time),
local and docker as `dfl run` does. Writes OUT/compare.md (one table, the protocols side by
side: final accuracy, time and CPU to --target, protocol CPU by category, blockchain share,
bytes sent, SGD steps), OUT/compare.json, OUT/accuracy_time.png, OUT/accuracy_cpu.png and
OUT/costs.png. OUT defaults to runs/compare-<spec name>-<runtime>.

Exit 2 on bad input (fewer than two runs, an argument that is not a run directory, an
unknown protocol, a spec that cannot run under a protocol, options of the other form).""",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="RUN_OR_SPEC",
        help="two or more run directories, or one experiment spec (YAML) with --protocols",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"directory for the comparison, created if missing (default: {DEFAULT_OUT} for "
        "run directories, runs/compare-<spec name>-<runtime> for a spec)",
    )
    parser.add_argument(
        "--protocols",
        metavar="LIST",
        help="with a SPEC: the protocols to run it under, comma-separated, e.g. dfl,blade-fl",
    )
    parser.add_argument(
        "--runtime",
        choices=SPEC_RUNTIMES,
        default=None,
        help="with a SPEC: where to run it (default: sim, the simulator)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="with a SPEC: override a spec field before deriving, e.g. --set duration=60",
    )
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        metavar="ACCURACY",
        help=f"with a SPEC: the accuracy that 'time to target' is about (default {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--force", action="store_true", help="with a SPEC, sim: replace finished runs in OUT"
    )
    parser.add_argument("--quiet", action="store_true", help="with a SPEC: no progress bars")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="with a SPEC, sim: where datasets live (default ./data)"
    )
    parser.set_defaults(handler=run_compare)


def _is_spec(path: Path) -> bool:
    return path.is_file() or (not path.exists() and path.suffix in SPEC_SUFFIXES)


def run_compare(args: argparse.Namespace) -> int:
    specs = [path for path in args.inputs if _is_spec(path)]
    if specs:
        if len(args.inputs) != 1:
            print(
                f"error: give either one spec file or run directories, not both "
                f"({', '.join(map(str, specs))} is a file); to compare a spec's protocols: "
                f"dfl compare SPEC --protocols dfl,blade-fl --runtime sim",
                file=sys.stderr,
            )
            return 2
        return _compare_spec(args)
    given = [f"--{name.replace('_', '-')}" for name in SPEC_OPTIONS if _given(args, name)]
    if given:
        print(
            f"error: {', '.join(given)} belong(s) with one SPEC file, not run directories; "
            "finished runs are compared as they are (drop the option), or run a spec under "
            "each protocol: dfl compare SPEC --protocols dfl,blade-fl --runtime sim",
            file=sys.stderr,
        )
        return 2
    out = args.out or DEFAULT_OUT
    try:
        path = compare_runs(args.inputs, out)
    except TooFewRuns as error:
        print(f"error: {error}, got {len(args.inputs)}", file=sys.stderr)
        return 2
    except NotARunDirectory as error:
        print(f"error: {error}\n({RUN_DIRECTORY})", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def _given(args: argparse.Namespace, name: str) -> bool:
    value = getattr(args, name)
    return bool(value) if isinstance(value, list | bool) else value is not None


def _compare_spec(args: argparse.Namespace) -> int:
    from orchestrator.commands.common import spec_from_args
    from orchestrator.compare_protocols import CompareError, parse_protocols, plan, run_planned
    from orchestrator.compare_report import write_comparison
    from orchestrator.datasets import DatasetMissing, load_dataset
    from orchestrator.driver import RunFailed
    from orchestrator.runtimes.docker import DockerUnavailable
    from orchestrator.sim.run import RunExists
    from orchestrator.spec import SpecError
    from orchestrator.spec.equal_terms import UnknownProtocol, known_protocols

    if not args.protocols:
        print(
            f"error: a spec is compared under protocols: add --protocols, e.g. --protocols "
            f"{','.join(known_protocols())} (known: {', '.join(known_protocols())})",
            file=sys.stderr,
        )
        return 2
    target = DEFAULT_TARGET if args.target is None else args.target
    if not 0 < target <= 1:
        print(f"error: --target is an accuracy in (0, 1], not {target:g}", file=sys.stderr)
        return 2
    runtime = args.runtime or "sim"
    args.spec = args.inputs[0]
    spec = spec_from_args(args)
    if spec is None:
        return 2
    out = args.out or Path("runs") / f"compare-{spec.name}-{runtime}"
    try:
        protocols = parse_protocols(args.protocols)
        planned = plan(spec, protocols, runtime, out)
        load_dataset(spec.dataset, args.data_dir)  # before the first run, not after it
        print(f"comparing {spec.name} under {', '.join(protocols)} ({runtime}) into {out}")
        results = run_planned(
            planned, runtime, progress=not args.quiet, data_dir=args.data_dir, replace=args.force
        )
        path = write_comparison(spec, planned, results, out, target)
    except (
        UnknownProtocol,
        CompareError,
        SpecError,
        DatasetMissing,
        RunExists,
        DockerUnavailable,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
