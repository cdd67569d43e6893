"""Writing a spec out: every value, defaults included, as YAML for people and as canonical JSON.

The YAML is what a run directory records, so that it says exactly what ran. The canonical JSON
is the spec's identity: equal specs give equal text however their files were written (key order,
defaults left out, `3m` or `180`), and its SHA-256 is the digest a genesis block carries, so
nodes of two different experiments refuse each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from node.ledger import records

if TYPE_CHECKING:  # experiment.py imports this module for ExperimentSpec.to_yaml
    from orchestrator.spec.experiment import ExperimentSpec


def _plain(value: Any) -> Any:
    """Dumped model data as plain YAML-safe containers (tuples become lists)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def spec_to_dict(spec: ExperimentSpec) -> dict[str, Any]:
    """Every value of the spec, defaults included, in the shape `parse_spec` reads back."""
    return _plain(spec.model_dump(exclude_none=True))


class _Dumper(yaml.SafeDumper):
    """Block style, except that a list of scalars (an edge) stays on one line: `[0, 1]`."""

    def represent_list(self, data: list[Any]) -> yaml.Node:
        flat = all(not isinstance(item, list | dict) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _Dumper.represent_list)


def spec_to_yaml(spec: ExperimentSpec) -> str:
    """The spec as YAML that loads back to an equal spec (durations as seconds)."""
    return yaml.dump(spec_to_dict(spec), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _string_keys(value: Any) -> Any:
    """Map keys as strings (node indices are ints), so that JSON sorts them as text, once."""
    if isinstance(value, dict):
        return {str(key): _string_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_string_keys(item) for item in value]
    return value


def canonical_json(data: dict[str, Any]) -> str:
    """A spec's values (as `spec_to_dict` gives them) as compact JSON with sorted keys: the text
    whose digest the genesis records, so the one rule for anything that recomputes that digest."""
    return json.dumps(_string_keys(data), sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_spec_json(spec: ExperimentSpec) -> str:
    """Every value of the spec as compact JSON with sorted keys: the same text for equal specs.

    It is also YAML, so `parse_yaml` reads it back to an equal spec.
    """
    return canonical_json(spec_to_dict(spec))


def spec_digest(spec: ExperimentSpec) -> bytes:
    """SHA-256 of the canonical JSON: which experiment a chain or a node belongs to."""
    return records.spec_digest(canonical_spec_json(spec))
