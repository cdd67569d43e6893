"""`dfl orchestrate SPEC --node NAME=HOST:PORT ...`: drive nodes someone else started.

This is the orchestrator service of the compose stack: the nodes are containers Compose started,
so this only injects each node's share of the dataset, measures every node's model on the common
test set and serves those figures on /metrics for Prometheus, until it is stopped.

The injection rate is the spec's, like every other value: `--set nodes.injection_rate=32`, or
$DFL_INJECTION_RATE (the compose file's knob), which is the same override applied before --set.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from node.service.control import ControlSigner
from orchestrator.commands.common import (
    add_control_key_argument,
    add_spec_arguments,
    control_from_args,
    spec_from_args,
)
from orchestrator.endpoint import NodeEndpoint
from orchestrator.spec import ExperimentSpec

# Environment variables this command reads, and the spec field each one overrides.
VARIABLES = {"DFL_INJECTION_RATE": "nodes.injection_rate"}


def parse_node(text: str, index: int, metrics_port: int) -> NodeEndpoint:
    """`node0=node0:50051` (or just `node0:50051`, named after the host)."""
    name, sep, target = text.partition("=")
    if not sep:
        name, target = text.split(":", 1)[0], text
    host, colon, port = target.rpartition(":")
    if not colon or not host or not port.isdigit() or not name:
        raise ValueError(f"--node {text!r}: expected NAME=HOST:PORT, e.g. node0=node0:50051")
    return NodeEndpoint(
        index=index, name=name, host=host, port=int(port), metrics_port=metrics_port
    )


def nodes_from_args(args: argparse.Namespace, spec: ExperimentSpec) -> list[NodeEndpoint] | None:
    """The --node endpoints, one per node of the spec; None (after saying why) otherwise."""
    try:
        nodes = [
            parse_node(text, index, args.node_metrics_port) for index, text in enumerate(args.node)
        ]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    if len(nodes) != spec.nodes.count:
        print(
            f"error: the spec has nodes.count {spec.nodes.count} but {len(nodes)} --node were "
            f"given; give one --node per node or --set nodes.count={len(nodes)}",
            file=sys.stderr,
        )
        return None
    return nodes


@dataclass
class RemoteFleet:
    """Nodes started elsewhere: their failures are the stack's business, not a reason to stop."""

    spec: ExperimentSpec
    nodes: list[NodeEndpoint]
    control: ControlSigner
    started_at: float = 0.0
    down: set[str] = field(default_factory=set)  # the stack's nodes: never faulted from here
    elapsed: float | None = None
    tolerate_exits: bool = True

    def failure_of(self, node: NodeEndpoint) -> str | None:
        return None


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "orchestrate",
        help="inject samples into running nodes and export their test-set accuracy",
        description="Drives nodes that are already running (a compose stack's): streams each "
        "node its partition of the spec's dataset at the spec's rate ($DFL_INJECTION_RATE "
        "sets nodes.injection_rate, then --set applies), measures every node's model on the "
        "common test set every evaluation interval, and serves dfl_test_accuracy{node} on "
        "--metrics-port for Prometheus. Runs until SIGTERM or Ctrl-C, or for --duration.",
    )
    add_spec_arguments(parser)
    parser.add_argument(
        "--node",
        action="append",
        default=[],
        required=True,
        metavar="NAME=HOST:PORT",
        help="a node's gRPC address, once per node, in the spec's node order",
    )
    parser.add_argument(
        "--node-metrics-port",
        type=int,
        default=9100,
        help="port of each node's /metrics on its host, scraped into metrics.csv (0: none)",
    )
    parser.add_argument("--metrics-port", type=int, default=9200, help="this command's /metrics")
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    parser.add_argument("--out", type=Path, default=None, help="write metrics.csv here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    add_control_key_argument(parser, required=True)
    parser.set_defaults(handler=orchestrate_command)


def orchestrate_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    spec = spec_from_args(args, VARIABLES)
    if spec is None:
        return 2
    nodes = nodes_from_args(args, spec)
    if nodes is None:
        return 2
    ok, control = control_from_args(args, required=True)
    if not ok:
        return 2

    from orchestrator.driver import METRICS_FILE, Progress, RunFailed, drive, signals_set
    from orchestrator.exporter import OrchestratorMetrics

    exporter = OrchestratorMetrics()
    exporter.serve(args.metrics_port)
    fleet = RemoteFleet(spec, nodes, control)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "spec.yaml").write_text(spec.to_yaml())
    print(
        f"driving {len(nodes)} nodes, {spec.nodes.injection_rate:g} samples/s each; metrics on "
        f":{args.metrics_port}/metrics",
        flush=True,
    )

    async def main() -> None:
        stop = asyncio.Event()
        with signals_set(stop):
            await drive(
                fleet,
                Progress(args.duration, not args.quiet),
                stop,
                metrics_csv=args.out / METRICS_FILE if args.out is not None else None,
                exporter=exporter,
                duration=args.duration,
            )

    try:
        asyncio.run(main())
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
