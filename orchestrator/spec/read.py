"""Reading a spec: YAML text or parsed data in, a validated ExperimentSpec or one SpecError out.

Pydantic's errors are rewritten as the file's author needs them: a dotted field path, the line
of the YAML key, a message in the spec's own terms ("must be >= 1", "did you mean ..."), all of
them at once and in file order.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from orchestrator.spec.errors import FieldProblems, Location, Problem, SpecError, dotted
from orchestrator.spec.experiment import ExperimentSpec


class SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (PyYAML would silently keep the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # unhashable; the base class reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} given twice (first on line {seen[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, where `1e-05` (no dot) is a string; YAML 1.2 and JSON, and so the
# canonical form (write.py) and anyone writing 1e-5 by hand, mean a number.
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_yaml(text: str, source: str = "<spec>") -> ExperimentSpec:
    """A spec from YAML text (JSON is YAML too); `source` names it in errors."""
    loader = SpecLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(source, [Problem("<yaml>", f"not valid YAML: {problem}", line)]) from None
    finally:
        loader.dispose()
    if data is None:
        raise SpecError(source, [Problem("<root>", "the spec is empty", None)])
    return parse_spec(data, source, _root=root)


def load_spec(path: str | Path) -> ExperimentSpec:
    """The spec in a YAML file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [Problem("<file>", f"cannot read it: {exc}")]) from None
    return parse_yaml(text, str(path))


def parse_spec(
    mapping: Any, source: str = "<spec>", *, _root: yaml.Node | None = None
) -> ExperimentSpec:
    """A spec from already-parsed data (a mapping), with every problem in one SpecError."""
    if not isinstance(mapping, Mapping):
        raise SpecError(
            source,
            [Problem("<root>", f"must be a mapping of fields, not {type(mapping).__name__}")],
        )
    try:
        return ExperimentSpec.model_validate(mapping)
    except ValidationError as exc:
        problems = [
            Problem(dotted(loc), message, _line(_root, loc)) for loc, message in _problems(exc)
        ]
        problems.sort(key=lambda p: math.inf if p.line is None else p.line)  # read top-down
        raise SpecError(source, problems) from None


def _problems(exc: ValidationError) -> list[tuple[Location, str]]:
    out: list[tuple[Location, str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblems):
            out += [(loc + sub, message) for sub, message in cause.problems]
        elif loc and loc[-1] == "[key]":
            out.append((loc[:-1], f"key: {_message(error, loc)}; keys are node indices"))
        else:
            out.append((loc, _message(error, loc)))
    return out


_SIMPLE = {
    "missing": "required",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "string_type": "must be a string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "literal_error": "must be one of {expected}",
    "too_short": "must have {min_length} item(s), not {actual_length}",
    "too_long": "must have at most {max_length} item(s), not {actual_length}",
}


def _message(error: Any, loc: Location) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key ({hint}known: {', '.join(known)})"
    if kind in _SIMPLE:
        return _SIMPLE[kind].format(**ctx)
    return str(error["msg"])


def _known_keys(loc: Location) -> list[str]:
    """The field names of the model at `loc`, for "unknown key" messages."""
    model: type[BaseModel] | None = ExperimentSpec
    for part in loc:
        if model is not None and isinstance(part, str) and part in model.model_fields:
            model = _inner_model(model.model_fields[part].annotation)
        # anything else is a map key or list index: the model stays the value type
    return sorted(model.model_fields) if model is not None else []


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _inner_model(argument)
        if found is not None:
            return found
    return None


def _line(root: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """The 1-based line of the deepest part of `loc` present in the YAML tree (a key's line)."""
    if root is None:
        return None
    node, line = root, root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if str(kv[0].value) == str(part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
