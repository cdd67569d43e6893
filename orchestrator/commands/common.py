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
from typing import TYPE_CHECKING

from orchestrator.spec import ExperimentSpec, SpecError, load_spec, parse_override, with_overrides

if TYPE_CHECKING:
    from node.service.control import ControlSigner


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


CONTROL_KEY_ENV = "DFL_CONTROL_KEY"


def add_control_key_argument(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """--control-key: the orchestrator key the nodes obey (node/service/control.py)."""
    when = "required" if required else "default: a fresh key for this run"
    parser.add_argument(
        "--control-key",
        type=Path,
        default=os.environ.get(CONTROL_KEY_ENV) or None,
        metavar="FILE",
        help=f"the orchestrator's private key (PEM), whose public key is in every node's "
        f"config as control_key; ${CONTROL_KEY_ENV} sets it too ({when}). Make one with "
        "`dfl control-key DIR`.",
    )


def control_from_args(
    args: argparse.Namespace, *, required: bool
) -> tuple[bool, ControlSigner | None]:
    """(True, the ControlSigner or None) or (False, None) after printing what is wrong."""
    from node.ledger.keys import KeyFileError
    from node.service.control import ControlSigner

    if args.control_key is None:
        if required:
            print(
                f"error: --control-key FILE (or ${CONTROL_KEY_ENV}) is required: the key whose "
                "public half the nodes were given as control_key; make one with "
                "`dfl control-key DIR`",
                file=sys.stderr,
            )
            return False, None
        return True, None
    try:
        return True, ControlSigner.load(args.control_key)
    except KeyFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return False, None
