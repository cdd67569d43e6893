"""The aggregation and reputation SDK: the one seam where researchers plug in their own rule.

It keeps the shape of the DFL original's plugin call, `update_model(current, self_accuracy,
received[(model, accuracy, generator)], reputation)`, with flat float32 vectors in place of Caffe
nets and a mutable mapping in place of the reputation database. A plugin is any object with that
method; it may update `reputation` in place, and it returns the node's next model.

`self_accuracy` is the node's current model measured on a fresh test draw of its own, which
costs one evaluation per aggregation. A rule that never reads it says so with a class attribute
`reads_self_accuracy = False` (every built-in does), and is handed NaN instead; a plugin that says
nothing is always handed the measured value.

Plugins are named in an experiment by a short name (the built-ins, or an entry point in the
`dfl_testbed.aggregators` group, which is how an installed package adds one) or by a dotted path
(`package.module:Name` or `package.module.Name`). Whatever is loaded is wrapped so that a plugin
that returns the wrong thing fails loudly with its own name in the message, instead of poisoning
the node's model several steps later.

Trust. The name and options come from a spec or a node config, which may have been written by
someone else, and merely validating a spec loads its aggregator. The rules:

- Built-ins and entry points are installed code that the user chose to install; the spec can only
  pick one of them by name. They keep the lenient rule: a class or a factory is called with the
  options, an object that already has `update_model` is used as it is.
- A dotted path can name anything importable, so it is held to a strict rule, checked before
  anything is called: it must name a class that defines a callable `update_model(current,
  self_accuracy, received, reputation)` (the `Aggregator` protocol). Only then is the class
  instantiated with the options. Functions, factories, instances, modules and classes without
  that method (`subprocess:Popen`, `os:system`, ...) are refused, so that a spec cannot call an
  arbitrary callable with arguments of its choosing.
- Naming a module by dotted path still imports it, and importing runs the module's top-level
  code; no check can come before that. So a spec from someone else deserves exactly the trust
  that the plugin modules it names do: read which modules it names before validating or running
  it, and prefer entry points, which only what is installed can provide.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

ENTRY_POINT_GROUP = "dfl_testbed.aggregators"
INITIAL_REPUTATION = 1.0  # what the original stores for a generator it has not seen yet

GeneratorId = str | bytes


@dataclass(frozen=True)
class ReceivedModel:
    """A peer's model as the aggregator sees it: weights, our accuracy for them, who made them."""

    model: np.ndarray
    accuracy: float
    generator: GeneratorId


@runtime_checkable
class Aggregator(Protocol):
    """What a plugin implements. `current` is this node's model; the result replaces it.

    The received models are read-only views of the bytes they arrived in (no copy of 1.7 MB
    per model): a plugin reads them and builds its result in arrays of its own.
    """

    def update_model(
        self,
        current: np.ndarray,
        self_accuracy: float,
        received: Sequence[ReceivedModel],
        reputation: MutableMapping[GeneratorId, float],
    ) -> np.ndarray: ...


class AggregatorError(Exception):
    """A plugin could not be loaded, or returned something that is not a model."""

    def __init__(self, plugin: str, detail: str) -> None:
        super().__init__(f"aggregator {plugin!r}: {detail}")
        self.plugin = plugin
        self.detail = detail


class CheckedAggregator:
    """A loaded plugin plus the checks on what goes in and what comes out.

    Inputs are checked too, so that a shape error is blamed on the caller rather than on the
    plugin. The result must be a finite float vector of the current model's shape; it comes back
    as float32, the type every other component expects.
    """

    def __init__(self, name: str, plugin: Aggregator) -> None:
        self.name = name
        self.plugin = plugin
        self.reads_self_accuracy = bool(getattr(plugin, "reads_self_accuracy", True))

    def update_model(
        self,
        current: np.ndarray,
        self_accuracy: float,
        received: Sequence[ReceivedModel],
        reputation: MutableMapping[GeneratorId, float],
    ) -> np.ndarray:
        if current.ndim != 1:
            raise ValueError(f"current model must be a flat vector, got shape {current.shape}")
        for item in received:
            if item.model.shape != current.shape:
                raise ValueError(
                    f"model from {item.generator!r} has shape {item.model.shape}, "
                    f"the current model {current.shape}"
                )
        result = self.plugin.update_model(current, self_accuracy, received, reputation)
        return self._check(result, current.shape)

    def _check(self, result: Any, shape: tuple[int, ...]) -> np.ndarray:
        if hasattr(result, "detach") and hasattr(result, "numpy"):  # a torch tensor
            result = result.detach().cpu().numpy()
        if not isinstance(result, np.ndarray):
            raise AggregatorError(
                self.name, f"returned {type(result).__name__}, expected a numpy array"
            )
        if result.shape != shape:
            raise AggregatorError(self.name, f"returned shape {result.shape}, expected {shape}")
        if not np.issubdtype(result.dtype, np.floating):
            raise AggregatorError(self.name, f"returned dtype {result.dtype}, expected float32")
        result = result.astype(np.float32, copy=False)
        if not np.isfinite(result).all():
            raise AggregatorError(self.name, "returned non-finite weights")
        return result

    def __repr__(self) -> str:
        return f"CheckedAggregator({self.name!r}, {self.plugin!r})"


def _builtins() -> Mapping[str, Callable[..., Aggregator]]:
    from node.learning import aggregators  # the built-ins import this module, not the reverse

    return aggregators.BUILTIN


PLUGIN_INTERFACE = (
    "a class with an update_model(current, self_accuracy, received, reputation) method"
)


def _import_target(spec: str) -> Any:
    """The object a dotted path names, found without calling anything but the module's import.

    Attributes below the module are read with `inspect.getattr_static` once the path leaves
    modules, so that a class's descriptors or metaclass `__getattr__` do not run either; a module
    attribute is read normally, since a module's own `__getattr__` is no less trusted than its
    import.
    """
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
    else:
        module_name, _, attribute = spec.rpartition(".")
    parts = attribute.split(".")
    if not (
        module_name
        and attribute
        and all(part.isidentifier() for part in module_name.split(".") + parts)
    ):
        raise AggregatorError(spec, "not a dotted path (expected package.module:Name)")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise AggregatorError(spec, f"cannot import module {module_name!r}: {exc}") from exc
    for part in parts:
        try:
            if inspect.ismodule(target):
                target = getattr(target, part)
            else:
                target = inspect.getattr_static(target, part)
        except AttributeError:
            raise AggregatorError(
                spec, f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return target


def _interface_problem(target: Any) -> str | None:
    """Why `target` is not an aggregator class, or None if it is; calls nothing on it.

    The method is looked up statically on the class (its MRO, not an instance and not the
    metaclass), and its signature must accept the four arguments the node passes. A signature
    Python cannot read (a method written in C) is taken on trust, since the class does define it.
    """
    if not inspect.isclass(target):
        kind = "a module" if inspect.ismodule(target) else f"of type {type(target).__name__}"
        return f"is {kind}, not a class"
    try:
        method = inspect.getattr_static(target, "update_model")
    except AttributeError:
        return f"class {target.__name__} has no update_model method"
    wrapped = isinstance(method, (staticmethod, classmethod))
    function = method.__func__ if wrapped else method
    if not callable(function):
        return f"{target.__name__}.update_model is not callable ({type(function).__name__})"
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    # self or cls first, except for a staticmethod; then the protocol's four arguments.
    arguments = (None,) * (4 if isinstance(method, staticmethod) else 5)
    try:
        signature.bind(*arguments)
    except TypeError:
        return (
            f"{target.__name__}.update_model{signature} cannot be called as "
            "update_model(current, self_accuracy, received, reputation)"
        )
    return None


def _check_plugin_class(spec: str, target: Any) -> type[Aggregator]:
    """`target` if a dotted path may load it (see the module docstring), else AggregatorError."""
    problem = _interface_problem(target)
    if problem is not None:
        raise AggregatorError(spec, f"{problem}; a dotted path must name {PLUGIN_INTERFACE}")
    return target


def _entry_point(name: str) -> Any | None:
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            try:
                return entry.load()
            except Exception as exc:
                raise AggregatorError(
                    name, f"entry point {entry.value!r} failed to load: {exc}"
                ) from exc
    return None


def _instantiate(name: str, target: Any, options: Mapping[str, Any]) -> Aggregator:
    if inspect.isclass(target) or (callable(target) and not isinstance(target, Aggregator)):
        try:
            plugin = target(**options)
        except (TypeError, ValueError) as exc:
            raise AggregatorError(
                name, f"cannot be built with options {dict(options)}: {exc}"
            ) from exc
    else:
        if options:
            raise AggregatorError(name, "is an instance; it takes no options")
        plugin = target
    if not callable(getattr(plugin, "update_model", None)):
        raise AggregatorError(name, f"{type(plugin).__name__} has no update_model method")
    return plugin


def load_aggregator(spec: str, **options: Any) -> CheckedAggregator:
    """A plugin by short name, entry point or dotted path, built with `options`.

    Short names are looked up first among the built-ins, then in the entry point group; a
    built-in or entry point that is a class (or factory) is called with the options, and an
    object that already has `update_model` is used as it is. Anything else with a dot or colon is
    imported and must be an aggregator class (checked before it is called, see the module
    docstring), which is then built with the options.
    """
    builtins = _builtins()
    if spec in builtins:
        target: Any = builtins[spec]
    else:
        target = _entry_point(spec)
        if target is None:
            if "." not in spec and ":" not in spec:
                raise AggregatorError(
                    spec,
                    f"unknown name: not a built-in ({', '.join(sorted(builtins))}), "
                    f"not an entry point in {ENTRY_POINT_GROUP!r}, and not a dotted path",
                )
            target = _check_plugin_class(spec, _import_target(spec))
    return CheckedAggregator(spec, _instantiate(spec, target, options))
