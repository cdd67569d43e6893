"""What the commands that read an experiment spec share: SPEC, --set, and how both are applied.

Every value a command changes reaches the spec as an override that is validated like a file,
so a bad `--set` (or environment variable) is a SpecError that names the field, and no command
has a second way of setting a value beside the spec.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from orchestrator.spec import ExperimentSpec, SpecError, load_spec, parse_override, with_overrides


def add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    """SPEC and --set, shared by the commands that read an experiment spec."""
    parser.add_argument("spec", type=Path, metavar="SPEC", help="experiment YAML")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a spec field, e.g. --set duration=60 --set nodes.distribution=labels:2",
    )


def spec_from_args(
    args: argparse.Namespace, variables: Mapping[str, str] | None = None
) -> ExperimentSpec | None:
    """The spec with its overrides, or None after printing what is wrong with it.

    `variables` maps environment variables to the fields they set
    (`{"DFL_INJECTION_RATE": "nodes.injection_rate"}`); unset or empty ones are left out. They
    apply before --set, so the command line wins over the environment.
    """
    try:
        spec = load_spec(args.spec)
        for name, field in (variables or {}).items():
            raw = os.environ.get(name, "").strip()
            if raw:
                source = f"{args.spec} (${name})"
                spec = with_overrides(
                    spec, dict([parse_override(f"{field}={raw}", source)]), source
                )
        overrides = dict(parse_override(item) for item in args.set)
        return with_overrides(spec, overrides, f"{args.spec} (--set)") if overrides else spec
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return None
