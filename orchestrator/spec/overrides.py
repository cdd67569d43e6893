"""Changing a spec: values set by dotted path (`--set`, a sweep's cells and seeds, environment
variables), applied to the written-out spec and validated again like a file.

Going through validation is the point: a changed seed redraws the random graph and a changed
count re-checks every per-node entry, so an override can never produce a spec that a file could
not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from orchestrator.spec.errors import Problem, SpecError
from orchestrator.spec.experiment import ExperimentSpec
from orchestrator.spec.read import SpecLoader, parse_spec
from orchestrator.spec.write import spec_to_dict

# Setting one of these makes the others meaningless when they do not apply to the new kind.
_KIND_DEPENDENT = {"topology.degree": "random", "topology.edges": "edges"}


def with_overrides(
    spec: ExperimentSpec, overrides: Mapping[str, Any], source: str = "overrides"
) -> ExperimentSpec:
    """A copy of `spec` with values set by dotted path, validated like a file.

    `{"nodes.distribution": "labels:2", "duration": 30, "nodes.behaviours.3": "observer"}`.
    A value of None removes the key, so its default applies. Changing `topology.kind` drops a
    `degree` or `edges` that the new kind does not take, unless they are overridden too.
    """
    data = spec_to_dict(spec)
    problems: list[Problem] = []
    for path, value in overrides.items():
        parts = path.split(".")
        if not all(parts):
            problems.append(Problem(path or "<root>", "not a dotted field path"))
            continue
        target = data
        for depth, part in enumerate(parts[:-1]):
            key = _key(part)
            child = target.get(key)
            if child is None:
                child = target[key] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                problems.append(Problem(path, f"cannot set inside {prefix}: it is not a section"))
                break
            target = child
        else:
            if value is None:
                target.pop(_key(parts[-1]), None)
            else:
                target[_key(parts[-1])] = value
    if problems:
        raise SpecError(source, problems)
    if "topology.kind" in overrides or "topology" in overrides:
        section = data.get("topology")
        if isinstance(section, dict):
            for path, kind in _KIND_DEPENDENT.items():
                if path not in overrides and section.get("kind", "full") != kind:
                    section.pop(path.split(".")[1], None)
    return parse_spec(data, source)


def _key(part: str) -> str | int:
    return int(part) if part.isdigit() else part


def parse_override(text: str, source: str = "--set") -> tuple[str, Any]:
    """`key.path=value` (a `--set` argument) with the value read as YAML: `3`, `3m`, `[[0, 1]]`.

    `source` names where the text came from in errors (an environment variable, say).
    """
    path, sep, raw = text.partition("=")
    if not sep or not path.strip():
        raise SpecError(source, [Problem(text, "expected key.path=value")])
    try:
        value = yaml.load(raw, Loader=SpecLoader) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise SpecError(
            source, [Problem(path.strip(), f"value is not valid YAML: {exc}")]
        ) from None
    return path.strip(), value
