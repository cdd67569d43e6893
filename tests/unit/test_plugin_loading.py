"""A spec may name an aggregator by dotted path; validating it must not call arbitrary code.

The loader used to call whatever a dotted path named, with the spec's options, and only then
check for `update_model`: `subprocess:Popen` with `{args: [touch, FILE]}` created FILE during
validation. These tests pin the rule that replaced it (node/learning/aggregation.py): a dotted path
must name an aggregator class, checked before anything is called. Each refusal is checked by its
side effect (a file that must not appear), not only by the error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.learning.aggregation import (
    ENTRY_POINT_GROUP,
    AggregatorError,
    CheckedAggregator,
    ReceivedModel,
    load_aggregator,
)
from node.learning.aggregators import BUILTIN
from orchestrator.spec import SpecError, load_spec

HERE = __name__  # "tests.unit.test_plugin_loading": dotted paths below name this module
INTERFACE = "a class with an update_model(current, self_accuracy, received, reputation) method"

SPEC = """\
name: tiny
protocol: dfl
seed: 3
duration: 30
model: mlp
dataset: fashion-mnist
nodes:
  count: 5
dfl:
  aggregator:
    name: {name}
    options: {options}
"""

# --- plugins for the dotted paths; `built` records every construction or call -----------------

built: list[str] = []


class Halfway:
    """A genuine plugin: moves `step` of the way to the mean of what it received."""

    reads_self_accuracy = False

    def __init__(self, step: float = 0.5) -> None:
        built.append("Halfway")
        self.step = step

    def update_model(
        self,
        current: np.ndarray,
        self_accuracy: float,
        received: list[ReceivedModel],
        reputation: dict[Any, float],
    ) -> np.ndarray:
        if not received:
            return current.copy()
        mean = np.mean([r.model for r in received], axis=0)
        return (current + self.step * (mean - current)).astype(np.float32)


class Rules:
    """Holds a plugin class one level down, for the `module:Outer.Inner` spelling."""

    class Keep:
        @staticmethod
        def update_model(
            current: np.ndarray, self_accuracy: float, received: list[Any], reputation: Any
        ) -> np.ndarray:
            return current.copy()


class WrongArity:
    """Has an update_model, but not one the node can call; must be refused unbuilt."""

    def __init__(self) -> None:
        built.append("WrongArity")

    def update_model(self, current: np.ndarray) -> np.ndarray:
        return current


class AttributeNotMethod:
    update_model = 3


def make_halfway(step: float = 0.5) -> Halfway:
    """A factory: fine as an entry point, refused as a dotted path (it would be called)."""
    built.append("make_halfway")
    return Halfway(step)


HALFWAY = Halfway()  # an instance: fine as an entry point, refused as a dotted path


@pytest.fixture(autouse=True)
def _nothing_built() -> None:
    built.clear()


def never_appears(path: Path, within: float = 0.3) -> bool:
    """True if `path` stays absent for `within` seconds (Popen's child would run concurrently)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            return False
        time.sleep(0.02)
    return not path.exists()


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


# --- dotted paths that would run code are refused, and the code does not run ------------------


# Callables a hostile spec could name, each with options that would create the file it is given.
PAYLOADS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "subprocess:Popen": lambda target: {"args": ["touch", str(target)]},
    "subprocess:run": lambda target: {"args": ["touch", str(target)]},
    "subprocess.check_call": lambda target: {"args": ["touch", str(target)]},
    "builtins:open": lambda target: {"file": str(target), "mode": "w"},
    "shutil:copyfile": lambda target: {"src": __file__, "dst": str(target)},
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_dotted_path_to_a_callable_is_refused_before_it_is_called(
    tmp_path: Path, name: str
) -> None:
    target = tmp_path / "pwned"
    with pytest.raises(AggregatorError) as caught:
        load_aggregator(name, **PAYLOADS[name](target))
    assert caught.value.plugin == name
    assert f"'{name}'" in str(caught.value) and INTERFACE in str(caught.value)
    assert never_appears(target)


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_a_spec_naming_a_callable_is_invalid_and_validating_it_runs_nothing(
    tmp_path: Path, name: str
) -> None:
    target = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(SPEC.format(name=name, options=PAYLOADS[name](target)))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    problems = {p.path: p.message for p in caught.value.problems}
    assert list(problems) == ["dfl.aggregator"], str(caught.value)
    assert name in problems["dfl.aggregator"] and INTERFACE in problems["dfl.aggregator"]
    assert never_appears(target)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("os:system", {"command": "true"}, "is of type builtin_function_or_method, not a class"),
        ("os.system", {}, "is of type builtin_function_or_method, not a class"),
        ("os:path", {}, "is a module, not a class"),
        (f"{HERE}:make_halfway", {"step": 1.0}, "is of type function, not a class"),
        (f"{HERE}:HALFWAY", {}, "is of type Halfway, not a class"),
        (f"{HERE}:WrongArity", {}, "cannot be called as update_model(current, self_accuracy"),
        (f"{HERE}:AttributeNotMethod", {}, "update_model is not callable (int)"),
        ("subprocess:Popen", {}, "class Popen has no update_model method"),
        ("collections:OrderedDict", {}, "class OrderedDict has no update_model method"),
        (f"{HERE}:Halfway.update_model", {}, "is of type function, not a class"),
        (".relative:Name", {}, "not a dotted path"),
        ("os:system()", {}, "not a dotted path"),
    ],
)
def test_what_a_dotted_path_may_not_name(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(AggregatorError) as caught:
        load_aggregator(name, **options)
    assert caught.value.plugin == name
    assert message in str(caught.value)
    assert built == []  # neither the factory nor any constructor ran


# --- what still loads ----------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [f"{HERE}:Halfway", f"{HERE}.Halfway"])
def test_a_plugin_class_in_a_module_loads_by_dotted_path_and_aggregates(spelling: str) -> None:
    aggregator = load_aggregator(spelling, step=0.25)
    assert isinstance(aggregator, CheckedAggregator) and isinstance(aggregator.plugin, Halfway)
    assert built == ["Halfway"] and aggregator.reads_self_accuracy is False
    received = [ReceivedModel(vec(8, 0), 0.9, "a"), ReceivedModel(vec(0, 8), 0.9, "b")]
    assert aggregator.update_model(vec(0, 0), 0.0, received, {}).tolist() == [1.0, 1.0]


def test_a_nested_plugin_class_with_a_staticmethod_loads() -> None:
    aggregator = load_aggregator(f"{HERE}:Rules.Keep")
    assert aggregator.update_model(vec(3), 0.0, [], {}).tolist() == [3.0]


def test_a_spec_naming_a_plugin_class_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(SPEC.format(name=f"{HERE}:Halfway", options={"step": 0.1}))
    spec = load_spec(path)
    assert spec.dfl.aggregator.name == f"{HERE}:Halfway"
    assert spec.dfl.aggregator.options == {"step": 0.1}


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_still_loads_by_short_name(name: str) -> None:
    aggregator = load_aggregator(name)
    assert aggregator.update_model(vec(1, 2), 0.9, [], {}).tolist() == [1.0, 2.0]


def test_the_builtins_also_load_by_dotted_path_to_their_class() -> None:
    for name in ("FedAvg", "HalfFedAvg", "Reputation", "CoordinateMedian", "TrimmedMean", "Krum"):
        load_aggregator(f"node.learning.aggregators:{name}")


def test_entry_points_keep_the_lenient_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed code the user chose: a class, a factory or an instance may be registered."""
    dist = tmp_path / "lab_rules-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-rules\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        f"lab-class = {HERE}:Halfway\n"
        f"lab-factory = {HERE}:make_halfway\n"
        f"lab-instance = {HERE}:HALFWAY\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    received = [ReceivedModel(vec(4), 0.5, "a")]
    by_class = load_aggregator("lab-class", step=1.0)
    assert by_class.update_model(vec(0), 0.0, received, {}).tolist() == [4.0]
    by_factory = load_aggregator("lab-factory", step=0.5)
    assert by_factory.update_model(vec(0), 0.0, received, {}).tolist() == [2.0]
    assert built == ["Halfway", "make_halfway", "Halfway"]
    assert load_aggregator("lab-instance").plugin is HALFWAY
