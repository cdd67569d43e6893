"""`dfl run SPEC --runtime local|docker|swarm --out DIR`: run an experiment and write its report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from orchestrator.commands.common import (
    add_control_key_argument,
    add_spec_arguments,
    control_from_args,
    spec_from_args,
)

RUNTIMES = ("local", "docker", "swarm")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run",
        help="run an experiment spec and write its report",
        description="Starts the spec's nodes on the chosen runtime, injects samples at the "
        "spec's rate, samples accuracy and CPU into DIR/metrics.csv, stops at the spec's "
        "duration (or Ctrl-C, which still writes the report), and writes DIR/report.md, "
        "DIR/plots/*.png and each node's data directory (keys, chain, log) under DIR/nodes/. "
        "Runtimes: local (one process per node on 127.0.0.1) and docker (one container per "
        "node on a network of the run's own, with Prometheus alongside; needs the "
        "dfl-testbed image, see README) and swarm (one Docker Swarm service per node on an "
        "overlay network of the run's own, TLS between nodes, the orchestrator in a container "
        "on that network; needs a swarm manager and the image on every host).",
    )
    add_run_arguments(parser)
    parser.set_defaults(handler=run_command)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What `dfl run` takes; `dfl load` starts its experiment the same way."""
    add_spec_arguments(parser)
    parser.add_argument("--runtime", choices=RUNTIMES, default="local")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="run directory")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="docker, swarm: leave the containers (services), network and volumes in place "
        "after the run",
    )
    parser.add_argument(
        "--swarm-init",
        action="store_true",
        help="swarm: make this engine a swarm manager first (docker swarm init) if it is not "
        "one; without it such a run stops and says how",
    )
    # The orchestrator container of a swarm run (orchestrator/runtimes/swarm_launch.py):
    # NETWORK:RUN_ID:OWN_NAME. Not for people.
    parser.add_argument("--inside", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--image",
        default=None,
        help="docker, swarm: the node image (default: $DFL_IMAGE, else dfl-testbed:latest)",
    )
    add_control_key_argument(parser, required=False)


def run_command(args: argparse.Namespace, **options: Any) -> int:
    """Runs the experiment of `args` and writes its report; `options` go to the runtime's
    driver (`alongside`: `dfl load`'s Locust process)."""
    from orchestrator.driver import RunFailed
    from orchestrator.report import render_report

    spec = spec_from_args(args)
    ok, control = control_from_args(args, required=False)
    if spec is None or not ok:
        return 2
    if args.runtime == "swarm":
        return _run_swarm(args, spec, control, **options)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; choose a new --out", file=sys.stderr)
        return 2
    from orchestrator.datasets import DatasetMissing, load_dataset

    try:
        load_dataset(spec.dataset)  # before anything starts: the driver needs it to inject
    except DatasetMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        if args.runtime == "docker":
            from orchestrator.runtimes.docker import DockerUnavailable, run_docker

            try:
                run_docker(
                    spec,
                    args.out,
                    progress=not args.quiet,
                    keep=args.keep,
                    image=args.image,
                    control=control,
                    **options,
                )
            except DockerUnavailable as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
        else:
            from orchestrator.runtimes.local import run_local

            run_local(spec, args.out, progress=not args.quiet, control=control, **options)
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        render_report(args.out)
        return 1
    report = render_report(args.out)
    print(f"report: {report}")
    return 0


def _run_swarm(args: argparse.Namespace, spec: Any, control: Any, **options: Any) -> int:
    """The host's side starts the orchestrator container, which runs this again `--inside`."""
    from orchestrator.driver import RunFailed
    from orchestrator.report import render_report
    from orchestrator.runtimes.docker import DockerUnavailable

    if args.inside is None:
        from orchestrator.runtimes.swarm_launch import run_swarm

        if args.out.exists() and any(args.out.iterdir()):
            print(f"error: {args.out} is not empty; choose a new --out", file=sys.stderr)
            return 2
        try:
            code = run_swarm(
                spec,
                args.out,
                progress=not args.quiet,
                keep=args.keep,
                image=args.image,
                swarm_init=args.swarm_init,
                control_file=getattr(args, "control_key", None),
            )
        except (DockerUnavailable, RunFailed) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2 if isinstance(error, DockerUnavailable) else 1
        if (args.out / "report.md").exists():
            print(f"report: {args.out / 'report.md'}")
        return code
    from orchestrator.runtimes.swarm import run_swarm_inside

    network, run_id, own_name = args.inside.split(":")
    try:
        run_swarm_inside(
            spec,
            args.out,
            network=network,
            run_id=run_id,
            orchestrator_host=own_name,
            image=args.image,
            keep=args.keep,
            progress=not args.quiet,
            control=control,
            **options,
        )
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        render_report(args.out)
        return 1
    render_report(args.out)
    return 0
