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
from orchestrator.load.steps import STEPS_FILE, StepPlan, describe, judged_name
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
STEP_SECONDS = 20.0
STEP_SETTLE = 5.0
STEP_MAX_USERS = 100
P99_LIMIT_MS = 1000.0
FAILURE_LIMIT = 0.05
STEP_USER_RATE = 2.0


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
        "--user-rate",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="each user's tasks per second, at most (Locust's constant_throughput): the offered "
        "rate is then users x this, however fast the node answers; instead of --wait. A valid "
        "transaction is answered before it is evaluated, so users at --wait 0 fill a node's ML "
        f"queue at once (default: --wait; with --step, {STEP_USER_RATE:g})",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        metavar="N",
        help="added to the Locust process's niceness (default 10): on a machine the nodes share "
        "with the load generator, the nodes' CPU comes first; 0 for none",
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
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="with --node: serve this command's /metrics (test accuracy, the load's requests "
        "as dfl_load_*) on PORT, as `dfl orchestrate` does (the docker runtime always does)",
    )
    step = parser.add_argument_group(
        "step mode",
        textwrap.fill(
            "--step raises the users stage by stage, from --users by --step-users every "
            "--step-seconds, measuring each stage after --step-settle, until the judged request's "
            "p99 passes --p99-limit or its failures pass --failure-limit (or --max-users is "
            "reached); the run then ends. The judged request is transaction:SubmitTransaction when "
            "the transaction task runs, else every request. Writes DIR/load_steps.jsonl and the "
            "capacity curve (plots/load_capacity.png, with the knee marked) in the Load section.",
            78,
        ),
    )
    step.add_argument("--step", action="store_true", help="the step mode (see above)")
    step.add_argument(
        "--step-users",
        type=int,
        default=None,
        metavar="N",
        help="users added per stage (default: --users)",
    )
    step.add_argument(
        "--step-seconds",
        type=float,
        metavar="SECONDS",
        default=STEP_SECONDS,
        help=f"each stage's length (default {STEP_SECONDS:g})",
    )
    step.add_argument(
        "--step-settle",
        type=float,
        metavar="SECONDS",
        default=STEP_SETTLE,
        help=f"seconds into a stage before it is measured (default {STEP_SETTLE:g})",
    )
    step.add_argument(
        "--max-users",
        type=int,
        metavar="N",
        default=STEP_MAX_USERS,
        help=f"no stage beyond this many users (default {STEP_MAX_USERS})",
    )
    step.add_argument(
        "--p99-limit",
        type=float,
        default=P99_LIMIT_MS,
        metavar="MS",
        help=f"stop after the first stage whose p99 is above this (default {P99_LIMIT_MS:g})",
    )
    step.add_argument(
        "--failure-limit",
        type=float,
        default=FAILURE_LIMIT,
        metavar="RATIO",
        help="stop after the first stage with more failed requests than this share "
        f"(default {FAILURE_LIMIT:g})",
    )
    parser.set_defaults(handler=load_command)


def step_from_args(
    args: argparse.Namespace, weights: dict[str, int], steps_file: Path
) -> StepPlan | str | None:
    """The step mode's plan; None without --step; a message naming the flag when one is
    out of range."""
    if not args.step:
        return None
    add = args.users if args.step_users is None else args.step_users
    problems = [
        f"--step-users {add}: at least 1" if add < 1 else "",
        f"--step-seconds {args.step_seconds:g}: at least 2" if args.step_seconds < 2 else "",
        f"--step-settle {args.step_settle:g}: at least 0 and below --step-seconds "
        f"({args.step_seconds:g}), so that each stage has a part to measure"
        if not 0 <= args.step_settle < args.step_seconds
        else "",
        f"--max-users {args.max_users}: at least --users ({args.users})"
        if args.max_users < args.users
        else "",
        f"--p99-limit {args.p99_limit:g}: above 0" if args.p99_limit <= 0 else "",
        f"--failure-limit {args.failure_limit:g}: between 0 and 1"
        if not 0 <= args.failure_limit <= 1
        else "",
    ]
    problem = "; ".join(text for text in problems if text)
    if problem:
        return problem
    return StepPlan(
        start_users=args.users,
        add_users=add,
        stage_seconds=args.step_seconds,
        settle_seconds=args.step_settle,
        max_users=args.max_users,
        p99_limit_ms=args.p99_limit,
        failure_limit=args.failure_limit,
        judged=judged_name(weights),
        steps_file=str(steps_file.resolve()),
    )


def load_command(args: argparse.Namespace) -> int:
    from orchestrator.load.runner import LOCUST_NICENESS, LoadTest

    try:
        weights = parse_weights(args.task)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.users < 1:
        print(f"error: --users {args.users}: at least 1", file=sys.stderr)
        return 2
    spawn_rate = args.users if args.spawn_rate is None else args.spawn_rate
    if args.nice is not None and not 0 <= args.nice <= 19:
        print(f"error: --nice {args.nice}: between 0 and 19", file=sys.stderr)
        return 2
    if spawn_rate <= 0 or args.wait < 0:
        print("error: --spawn-rate must be above 0 and --wait at least 0", file=sys.stderr)
        return 2
    user_rate = args.user_rate
    if user_rate is None:
        user_rate = STEP_USER_RATE if args.step else 0.0
    elif user_rate <= 0 or args.wait:
        print(
            f"error: --user-rate {user_rate:g}: above 0, and not with --wait (one or the other)",
            file=sys.stderr,
        )
        return 2
    step = step_from_args(args, weights, args.out / STEPS_FILE)
    if isinstance(step, str):
        print(f"error: {step}", file=sys.stderr)
        return 2
    if args.metrics_port is not None and not args.node:
        print(
            "error: --metrics-port is for --node; the docker runtime serves its own /metrics and "
            "the local one none",
            file=sys.stderr,
        )
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
        user_rate=user_rate,
        niceness=LOCUST_NICENESS if args.nice is None else args.nice,
        control_key=args.control_key,
        step=step,
        show_progress=not args.quiet,
    )
    if step is not None and not args.quiet:
        print(describe(step), flush=True)
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
    from orchestrator.exporter import OrchestratorMetrics
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
    exporter = OrchestratorMetrics() if args.metrics_port is not None else None
    if exporter is not None:
        exporter.serve(args.metrics_port)
        print(f"metrics on :{args.metrics_port}/metrics", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        with signals_set(stop):
            await drive(
                fleet,
                Progress(spec.duration_seconds, not args.quiet),
                stop,
                metrics_csv=out / METRICS_FILE,
                exporter=exporter,
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
        if exporter is not None:
            exporter.close()
    print(f"report: {render_report(out)}")
    return 0
