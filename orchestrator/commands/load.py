"""`dfl load SPEC --runtime local|docker --out DIR`: an experiment under Locust's load.

The experiment runs exactly as `dfl run` runs it (the same command code, the same driver); the
load test is handed to the driver as work beside it (orchestrator/load/runner.py), so the nodes
learn, gossip and chain while Locust calls their gRPC. With `--node NAME=HOST:PORT ...` and
`--control-key` it drives nodes started elsewhere instead, as `dfl orchestrate` does, for the
spec's duration.

What a load test does not do is change the nodes: their admission limits (requests per second,
evaluations per minute per connection, the ML queue; node/service/admission.py) stay what they
are, because how a node sheds load it cannot take is part of what a load test measures. The
refusals show in the figures, by status and reason.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.commands.common import control_from_args, spec_from_args
from orchestrator.commands.run import add_run_arguments, run_command
from orchestrator.load.tasks import TASK_HELP, TASKS, parse_weights
from orchestrator.report.schema import (
    LOAD_FAILURES_FILE,
    LOAD_HISTORY_FILE,
    LOAD_STATS_FILE,
    REPORT_FILE,
)

if TYPE_CHECKING:
    from orchestrator.load.runner import LoadTest

DEFAULT_USERS = 5


def register(commands: argparse._SubParsersAction) -> None:
    tasks = "\n".join(
        textwrap.fill(
            f"{name}: {TASK_HELP[name]}", 78, initial_indent="  ", subsequent_indent="    "
        )
        for name in TASKS
    )
    about = [
        "Starts the spec's experiment as `dfl run` does (or, with --node, drives nodes already "
        "running) and, once every node answers, runs Locust headless in a process of its own "
        "against the nodes' gRPC for the spec's duration: --users users spread over the nodes, "
        "each running the tasks in the proportions --task gives.",
        "Writes DIR/load_stats.csv, DIR/load_stats_history.csv and DIR/load_failures.csv "
        "(Locust's CSV files; requests named <task>:<rpc>), DIR/load.json (every node's "
        "counters before and after the load) and a Load section in DIR/report.md: per request "
        "name requests/s, p50/p95/p99 and failures by status, beside the nodes' refusals by "
        "reason, receipts, gossip latency, injection delivered against offered, CPU by "
        "category and accuracy.",
        "A forged record or an unsigned control call counts as a success when the node refuses "
        "it with the status its reason names, and as a failure otherwise (a record the node "
        "took is ACCEPTED). The nodes keep their admission limits: load they shed "
        "(RESOURCE_EXHAUSTED queue_full, evaluation_budget, rate_limited) is counted as "
        "failures under that status. Locust comes with the dev extra: pip install -e '.[dev]'.",
    ]
    parser = commands.add_parser(
        "load",
        help="run an experiment under Locust's load on the nodes' gRPC and report both",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="\n\n".join(
            [
                textwrap.fill(about[0], 78),
                textwrap.fill(about[1], 78),
                f"Tasks:\n{tasks}",
                textwrap.fill(about[2], 78),
            ]
        ),
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--users", type=int, default=DEFAULT_USERS, help=f"Locust users (default {DEFAULT_USERS})"
    )
    parser.add_argument(
        "--spawn-rate",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="users started per second (default: all in the first second)",
    )
    parser.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="NAME=WEIGHT",
        help=f"a task and its weight, once per task (tasks not named are off; none given: "
        f"every task, weight 1). Tasks: {', '.join(TASKS)}",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="each user's pause between two tasks (default 0: as fast as the node answers)",
    )
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="drive nodes already running instead of starting them (--runtime is then not "
        "used), once per node in the spec's order; needs --control-key",
    )
    parser.add_argument(
        "--node-metrics-port",
        type=int,
        default=9100,
        help="with --node: port of each node's /metrics on its host (default 9100)",
    )
    parser.set_defaults(handler=load_command)


def load_command(args: argparse.Namespace) -> int:
    from orchestrator.load.runner import LoadTest

    try:
        weights = parse_weights(args.task)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.users < 1:
        print(f"error: --users {args.users}: at least 1", file=sys.stderr)
        return 2
    spawn_rate = args.users if args.spawn_rate is None else args.spawn_rate
    if spawn_rate <= 0 or args.wait < 0:
        print("error: --spawn-rate must be above 0 and --wait at least 0", file=sys.stderr)
        return 2
    if importlib.util.find_spec("locust") is None:
        print(
            "error: Locust is not installed here; it comes with the dev extra: "
            "pip install -e '.[dev]'",
            file=sys.stderr,
        )
        return 2
    load = LoadTest(
        out=args.out,
        users=args.users,
        spawn_rate=spawn_rate,
        weights=weights,
        wait_seconds=args.wait,
        control_key=args.control_key,
    )
    if args.node:
        code = _against_running_nodes(args, load)
    else:
        code = run_command(args, alongside=load.alongside)
    if code != 0:
        return code
    if load.problem is not None or not (args.out / LOAD_STATS_FILE).is_file():
        print(f"error: {load.problem or 'Locust left no ' + LOAD_STATS_FILE}", file=sys.stderr)
        return 1
    files = ", ".join(str(args.out / name) for name in (LOAD_STATS_FILE, LOAD_HISTORY_FILE))
    print(f"load: {files}, {args.out / LOAD_FAILURES_FILE}; Load section in {REPORT_FILE}")
    return 0


def _against_running_nodes(args: argparse.Namespace, load: LoadTest) -> int:
    """As `dfl orchestrate` drives a compose stack's nodes, for the spec's duration, with the
    load beside it; then run.json and the report, as after `dfl run`."""
    from orchestrator.commands.orchestrate import RemoteFleet, nodes_from_args
    from orchestrator.datasets import DatasetMissing, load_dataset
    from orchestrator.driver import (
        METRICS_FILE,
        Progress,
        RunFailed,
        drive,
        signals_set,
        write_run_info,
    )
    from orchestrator.report import render_report

    spec = spec_from_args(args)
    ok, control = control_from_args(args, required=True)
    if spec is None or not ok or control is None:
        return 2
    nodes = nodes_from_args(args, spec)
    if nodes is None:
        return 2
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} is not empty; choose a new --out", file=sys.stderr)
        return 2
    try:
        load_dataset(spec.dataset)
    except DatasetMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(spec.to_yaml())
    fleet = RemoteFleet(spec, nodes, control)

    async def main() -> None:
        stop = asyncio.Event()
        with signals_set(stop):
            await drive(
                fleet,
                Progress(spec.duration_seconds, not args.quiet),
                stop,
                metrics_csv=out / METRICS_FILE,
                duration=spec.duration_seconds,
                alongside=load.alongside,
            )

    try:
        asyncio.run(main())
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        write_run_info(fleet, out, "remote", {}, {})
    print(f"report: {render_report(out)}")
    return 0
