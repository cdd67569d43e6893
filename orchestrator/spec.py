"""The experiment spec: one YAML file that every runtime (sim, local, docker, swarm) reads.

An experiment is described once, here, and nowhere else: the runtimes take what they need from
an `ExperimentSpec` and never read the YAML themselves. The file is strict on purpose, because a
typo in a research run does not crash, it silently measures the default instead: every unknown
key and every bad value is an error, and all of them are reported at once, each with its field
path (and, for a file, its line), so that one edit fixes a file:

    experiments/x.yaml:14: dfl.ttl: must be >= 1
    experiments/x.yaml:9: nodes.behaviours.3: unknown behaviour 'evil'; known: duplication, ...

Names are checked against the components that will use them (behaviours, aggregators,
partitions, topologies) by asking those components, so the spec can never accept something a
node later refuses. Durations are seconds, written as a number or as `500ms`, `180s`, `3m`,
`1h30m`.

Sections that may be left out take the paper's values (`dfl`: DflConfig's defaults;
`topology`: full mesh; `evaluation`: 1000 test samples every 10 s); `spec_to_yaml` writes every
value out, so a run directory can record exactly what ran.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from node.learning.aggregation import load_aggregator
from node.learning.behaviours import ALIASES, Behaviour, make_behaviour
from node.protocol.dfl import DflConfig
from orchestrator import topology
from orchestrator.datasets import DATASETS
from orchestrator.partition import PartitionSpec, parse_partition

# node.learning.models imports torch (seconds); checking a spec must not. A unit test keeps this
# list equal to models.MODELS.
MODELS = ("lenet", "mlp")
PROTOCOLS = ("dfl", "blade-fl")
PROTOCOL_ALIASES = {"blade": "blade-fl", "bladefl": "blade-fl"}
TEST_SET_SIZE = 10_000  # MNIST and Fashion-MNIST alike
MAX_TTL = DflConfig.max_ttl  # the most a receiver accepts
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# --- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (dotted field path, file line if known) and what."""

    path: str
    message: str
    line: int | None = None

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self.path}: {self.message}"


class SpecError(ValueError):
    """A spec that cannot be used; `problems` lists every one found, the message shows them all."""

    def __init__(self, source: str, problems: Sequence[Problem] = ()) -> None:
        """`SpecError(source, problems)`; `SpecError(message)` alone for a problem with no field."""
        self.source = source
        self.problems = list(problems)
        count = len(self.problems)
        if not count:
            super().__init__(source)
            return
        lines = "\n".join("  " + p.render(source) for p in self.problems)
        super().__init__(
            f"invalid experiment spec {source} ({count} problem{'s' * (count != 1)}):\n{lines}"
        )

    @property
    def paths(self) -> list[str]:
        return [p.path for p in self.problems]


class _FieldProblems(ValueError):
    """Raised by a cross-field check to report problems at paths below the model that checks."""

    def __init__(self, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(f"{_dotted(loc)}: {message}" for loc, message in problems))
        self.problems = list(problems)


def _check(problems: list[tuple[tuple[str | int, ...], str]]) -> None:
    if problems:
        raise _FieldProblems(problems)


# --- value types ---------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)")


def parse_seconds(value: Any) -> float:
    """Seconds from a number or a string such as `180`, `180s`, `2.5m`, `1h30m`, `500ms`."""
    if isinstance(value, bool):
        raise ValueError("must be a duration: seconds or a string like 180s, 3m, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or _DURATION_PART.sub("", text).strip():
                raise ValueError(
                    f"{value!r} is not a duration (seconds, or like 180s, 3m, 1h30m, 500ms)"
                ) from None
            seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    else:
        raise ValueError("must be a duration: seconds or a string like 180s, 3m, 1h30m")
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    return seconds


Int = Annotated[int, Strict()]  # no "4" or true where a count belongs
Float = Annotated[float, Strict()]  # ints are fine, strings and booleans are not
Seconds = Annotated[float, BeforeValidator(parse_seconds)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _named(value: Any, what: str) -> Any:
    """Lets `x: name` stand for `x: {name: name}`."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        return value
    raise ValueError(f"must be {what} name or a mapping with name and options")


# --- sections ----------------------------------------------------------------------------------


class BehaviourSpec(_Model):
    """A node behaviour (node/learning/behaviours.py) and its numeric options.

    Written as a name (`random-model`) or as `{name: random-model, options: {high: 0.01}}`.
    Aliases (the DFL simulator's node types) are stored under their canonical names.
    """

    name: str
    options: dict[str, Float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _named(value, "a behaviour")

    @field_validator("name")
    @classmethod
    def _canonical(cls, name: str) -> str:
        return ALIASES.get(name, name)

    @model_validator(mode="after")
    def _exists(self) -> BehaviourSpec:
        self.build()  # its ValueError names the known behaviours or the bad option
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> Any:
        return handler(self) if self.options else self.name

    def build(self) -> Behaviour:
        return make_behaviour(self.name, **self.options)


class AggregatorSpec(_Model):
    """An aggregation rule: any name `load_aggregator` takes (built-in, entry point, dotted path).

    Written as a name (`reputation-0.05`) or with options,
    `{name: trimmed-mean, options: {trim_fraction: 0.2}}`. It is loaded once here, so that a
    typo or a plugin that does not import fails before a run.
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return _named(value, "an aggregator")

    @model_validator(mode="after")
    def _loads(self) -> AggregatorSpec:
        try:
            load_aggregator(self.name, **self.options)
        except Exception as exc:  # a plugin's import may raise anything
            raise ValueError(str(exc)) from None
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> Any:
        return handler(self) if self.options else self.name


class NodesSpec(_Model):
    """How many nodes, what data each gets, how fast, and how each behaves."""

    count: Int = Field(ge=1)
    distribution: str = "iid"
    injection_rate: Float = Field(64.0, gt=0)  # samples per second per node
    injection_rates: dict[int, Annotated[Float, Field(ge=0)]] = Field(default_factory=dict)
    behaviours: dict[int, BehaviourSpec] = Field(default_factory=dict)

    @field_validator("distribution")
    @classmethod
    def _partition(cls, text: str) -> str:
        parse_partition(text)  # its ValueError says what is expected
        return text.strip()

    # Field validators rather than one model validator, so that these are reported even when
    # another field of the section is wrong too (a model validator would not run).
    @field_validator("injection_rates", "behaviours")
    @classmethod
    def _nodes_exist(cls, per_node: dict[int, Any], info: ValidationInfo) -> dict[int, Any]:
        count = info.data.get("count")
        if count is not None:
            _check(
                [
                    ((node,), f"node {node} does not exist (nodes 0..{count - 1})")
                    for node in per_node
                    if not 0 <= node < count
                ]
            )
        return per_node


class TopologySpec(_Model):
    """The peer graph; see orchestrator/topology.py for each kind."""

    kind: Literal["full", "ring", "star", "line", "random", "edges"] = "full"
    degree: Int | None = Field(None, ge=1)  # random only
    edges: list[tuple[Int, Int]] | None = None  # edges only

    @model_validator(mode="after")
    def _fields_match_kind(self) -> TopologySpec:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.kind == "random" and self.degree is None:
            problems.append((("degree",), "required for the random topology"))
        if self.kind != "random" and self.degree is not None:
            problems.append((("degree",), f"only for kind random, not {self.kind} (remove it)"))
        if self.kind == "edges" and self.edges is None:
            problems.append((("edges",), "required for kind edges, as [[0, 1], [1, 2], ...]"))
        if self.kind != "edges" and self.edges is not None:
            problems.append((("edges",), f"only for kind edges, not {self.kind} (remove it)"))
        _check(problems)
        return self


class DflSection(_Model):
    """The DFL protocol's parameters (node/protocol/dfl.py: DflConfig) plus the node's ML ones."""

    batch_size: Int = Field(64, ge=1)
    fedavg_buffer: Int = Field(8, ge=1)
    transactions_per_block: Int = Field(12, ge=1)
    ttl: Int = Field(1, ge=1, le=MAX_TTL)
    receipt_wait: Seconds = Field(10.0, gt=0)
    transaction_lifetime: Seconds = Field(120.0, gt=0)  # after receipt_wait: checked against it
    confirmation_quorum: Float = Field(0.6, ge=0, le=1)
    quorum_grace: Seconds = Field(2.0, ge=0)
    confirmation_timeout: Seconds = Field(10.0, gt=0)
    aggregator: AggregatorSpec = Field(
        default_factory=lambda: AggregatorSpec(name="reputation-0.05")
    )
    test_batch: Int = Field(100, ge=1)  # samples a node tests a received model on

    @field_validator("transaction_lifetime")
    @classmethod
    def _outlives_receipts(cls, lifetime: float, info: ValidationInfo) -> float:
        wait = info.data.get("receipt_wait")
        if wait is not None and lifetime <= wait:
            raise ValueError(f"must be longer than receipt_wait ({wait:g} s)")
        return lifetime

    @model_validator(mode="after")
    def _accepted_by_engine(self) -> DflSection:
        self.config()  # whatever else DflConfig insists on
        return self

    def config(self, trains: bool = True) -> DflConfig:
        return DflConfig(
            batch_size=self.batch_size,
            fedavg_buffer=self.fedavg_buffer,
            transactions_per_block=self.transactions_per_block,
            ttl=self.ttl,
            transaction_lifetime=self.transaction_lifetime,
            receipt_wait=self.receipt_wait,
            confirmation_quorum=self.confirmation_quorum,
            quorum_grace=self.quorum_grace,
            confirmation_timeout=self.confirmation_timeout,
            trains=trains,
        )


class BladeSection(_Model):
    """BLADE-FL's parameters (paper 002, section 3.3) and the clients' local training.

    The time budget follows eq. 4, t_sum = K (tau alpha + beta): give `rounds` (K) with either
    `local_iterations` (tau) or `t_sum` and `alpha`, from which tau = floor((t_sum / K - beta) /
    alpha). `beta` is the mining time per block the difficulty is calibrated for (from the hash
    rate measured at the start of a run); `difficulty` (expected hashes per block) sets it
    directly instead. The last `lazy_clients` (M) clients plagiarize with noise of variance
    `noise_variance` (sigma^2).
    """

    rounds: Int = Field(ge=1)
    local_iterations: Int | None = Field(None, ge=1)
    t_sum: Seconds | None = Field(None, gt=0)
    alpha: Seconds | None = Field(None, gt=0)
    beta: Seconds = Field(2.0, gt=0)
    difficulty: Float | None = Field(None, ge=1)
    dataset_size: Int = Field(512, ge=1)
    batch_size: Int = Field(32, ge=1)
    collect_timeout: Seconds = Field(30.0, gt=0)
    vote_timeout: Seconds = Field(10.0, gt=0)
    lazy_clients: Int = Field(0, ge=0)
    noise_variance: Float = Field(0.01, ge=0)

    @model_validator(mode="after")
    def _time_budget(self) -> BladeSection:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        budget = self.t_sum is not None or self.alpha is not None
        if self.local_iterations is not None and budget:
            problems.append(
                (("local_iterations",), "give local_iterations or t_sum and alpha, not both")
            )
        elif self.local_iterations is None:
            for name in ("t_sum", "alpha"):
                if getattr(self, name) is None:
                    problems.append(((name,), "required unless local_iterations is given"))
            if not problems and self.iterations < 1:
                problems.append(
                    (
                        ("t_sum",),
                        f"leaves no time to train: t_sum / rounds - beta = "
                        f"{self.t_sum / self.rounds - self.beta:g} s, less than one alpha "
                        f"({self.alpha:g} s); raise t_sum or lower rounds or beta",
                    )
                )
        _check(problems)
        return self

    @property
    def iterations(self) -> int:
        """tau: local epochs per round, given or derived from eq. 4."""
        if self.local_iterations is not None:
            return self.local_iterations
        assert self.t_sum is not None and self.alpha is not None
        return math.floor((self.t_sum / self.rounds - self.beta) / self.alpha + 1e-9)


class EvaluationSpec(_Model):
    """The orchestrator's own measurement: every node's model on a common test set."""

    test_samples: Int = Field(1000, ge=1, le=TEST_SET_SIZE)
    interval: Seconds = Field(10.0, gt=0)

    @property
    def interval_seconds(self) -> float:
        return self.interval


class SimSection(_Model):
    """How the tick simulator (`dfl simulate`) runs a DFL experiment; other runtimes ignore it.

    One tick is one second of virtual time, so `duration: 4000` is the paper's 4000 ticks. A
    node collects a batch and trains every `training_interval` ticks (drawn uniformly from the
    inclusive range each time, as the paper's 8-12), in place of `nodes.injection_rate`. Every
    `accuracy_interval` ticks each node's model is tested on `test_samples` uniform samples of the
    test set (accuracy.csv) and the models' per-layer difference is taken (weight_diff.csv).
    """

    training_interval: tuple[Int, Int] = (8, 12)
    accuracy_interval: Int = Field(20, ge=1)
    test_samples: Int = Field(100, ge=1, le=TEST_SET_SIZE)

    @field_validator("training_interval")
    @classmethod
    def _range(cls, interval: tuple[int, int]) -> tuple[int, int]:
        low, high = interval
        if not 1 <= low <= high:
            raise ValueError(
                f"must be [low, high] ticks with 1 <= low <= high, not {list(interval)}"
            )
        return interval


_MEMORY = re.compile(r"[1-9][0-9]*[bkmg]?")


class ResourcesSpec(_Model):
    """Per-node limits for the container runtimes (ignored by local processes and the sim).

    On a shared machine a limit keeps one runaway node from starving the rest, and the memory
    figure is what a user sizes a bigger deployment from.
    """

    cpus: Float | None = Field(None, gt=0)  # CPU cores per node, e.g. 0.5
    memory: str | None = None  # Docker's notation: 768m, 2g

    @field_validator("memory")
    @classmethod
    def _memory(cls, text: str | None) -> str | None:
        if text is not None and not _MEMORY.fullmatch(text.strip().lower()):
            raise ValueError(f"{text!r}: write bytes with a unit, as Docker does: 768m, 2g")
        return None if text is None else text.strip().lower()


class ExperimentSpec(_Model):
    """One experiment, whatever runs it."""

    name: str
    protocol: str
    seed: Int = Field(ge=0)
    duration: Seconds = Field(gt=0)
    model: str
    dataset: str
    nodes: NodesSpec
    topology: TopologySpec = Field(default_factory=TopologySpec)
    dfl: DflSection = Field(default_factory=DflSection)
    blade: BladeSection | None = None
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    sim: SimSection = Field(default_factory=SimSection)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a usable name (letters, digits, '.', '_', '-'; it names "
                f"run directories and containers)"
            )
        return name

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, protocol: str) -> str:
        return _known(PROTOCOL_ALIASES.get(protocol, protocol), PROTOCOLS, "protocol")

    @field_validator("model")
    @classmethod
    def _model(cls, model: str) -> str:
        return _known(model, MODELS, "model")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, dataset: str) -> str:
        return _known(dataset, DATASETS, "dataset")

    @field_validator("topology")
    @classmethod
    def _graph(cls, spec: TopologySpec, info: ValidationInfo) -> TopologySpec:
        nodes, seed = info.data.get("nodes"), info.data.get("seed")
        if nodes is None or seed is None:
            return spec  # reported already
        try:
            topology.build_edges(
                spec.kind, nodes.count, degree=spec.degree, edges=spec.edges, seed=seed
            )
        except ValueError as exc:
            field = {"random": "degree", "edges": "edges"}.get(spec.kind)
            _check([((field,) if field else (), f"{exc} (nodes.count is {nodes.count})")])
        return spec

    @model_validator(mode="after")
    def _blade_fits(self) -> ExperimentSpec:
        if self.protocol != "blade-fl":
            if self.blade is not None:
                _check([(("blade",), "only for protocol blade-fl (remove it)")])
            return self
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.blade is None:
            problems.append((("blade",), "required for protocol blade-fl (at least rounds)"))
        elif self.blade.lazy_clients >= self.nodes.count:
            problems.append(
                (
                    ("blade", "lazy_clients"),
                    f"must leave an honest client: below nodes.count ({self.nodes.count})",
                )
            )
        if self.topology.kind != "full":
            problems.append(
                (
                    ("topology", "kind"),
                    "BLADE-FL clients send to every other client: use full",
                )
            )
        _check(problems)
        return self

    # What the runtimes ask for.

    def edges(self) -> list[topology.Edge]:
        """The peer graph, drawn under the experiment seed."""
        t = self.topology
        return topology.build_edges(
            t.kind, self.nodes.count, degree=t.degree, edges=t.edges, seed=self.seed
        )

    def neighbours(self) -> list[list[int]]:
        return topology.neighbours(self.edges(), self.nodes.count)

    def behaviour_of(self, node: int) -> BehaviourSpec:
        """The node's behaviour as written (name and options); `normal` when not listed.

        In BLADE-FL the last `blade.lazy_clients` clients are lazy (as in the paper's code),
        unless nodes.behaviours says otherwise for one of them.
        """
        if node in self.nodes.behaviours:
            return self.nodes.behaviours[node]
        blade = self.blade
        if blade is not None and node >= self.nodes.count - blade.lazy_clients:
            return BehaviourSpec(name="lazy", options={"variance": blade.noise_variance})
        return BehaviourSpec(name="normal")

    def behaviour(self, node: int) -> Behaviour:
        return self.behaviour_of(node).build()

    def injection_rate_of(self, node: int) -> float:
        """Samples per second injected into `node` (its own rate, else the common one)."""
        return float(self.nodes.injection_rates.get(node, self.nodes.injection_rate))

    def partition(self) -> PartitionSpec:
        return parse_partition(self.nodes.distribution)

    def dfl_config(self, node: int | None = None) -> DflConfig:
        """The engine's config; for a node that never sends (an observer), `trains` is False."""
        sends = node is None or self.behaviour(node).sends
        return self.dfl.config(trains=sends)

    def dfl_config_fields(self, node: int | None = None) -> dict[str, Any]:
        """`dfl_config(node)` as plain keyword arguments, for a node's config file."""
        return dataclasses.asdict(self.dfl_config(node))

    @property
    def duration_seconds(self) -> float:
        return self.duration  # already seconds; the name says so at call sites

    def to_yaml(self) -> str:
        return spec_to_yaml(self)


def _known(value: str, known: Sequence[str], what: str) -> str:
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    return value


# --- reading ----------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
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


def parse_yaml(text: str, source: str = "<spec>") -> ExperimentSpec:
    """A spec from YAML text; `source` names it in errors."""
    loader = _Loader(text)
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
            Problem(_dotted(loc), message, _line(_root, loc)) for loc, message in _problems(exc)
        ]
        problems.sort(key=lambda p: math.inf if p.line is None else p.line)  # read top-down
        raise SpecError(source, problems) from None


def _problems(exc: ValidationError) -> list[tuple[tuple[str | int, ...], str]]:
    out: list[tuple[tuple[str | int, ...], str]] = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldProblems):
            out += [(loc + sub, message) for sub, message in cause.problems]
        elif loc and loc[-1] == "[key]":
            out.append((loc[:-1], f"key: {_message(error, loc)}; keys are node indices"))
        else:
            out.append((loc, _message(error, loc)))
    return out


def _message(error: Any, loc: tuple[str | int, ...]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key ({hint}known: {', '.join(known)})"
    simple = {
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
    if kind in simple:
        return simple[kind].format(**ctx)
    return str(error["msg"])


def _known_keys(loc: tuple[str | int, ...]) -> list[str]:
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


def _dotted(loc: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


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


# --- writing and overriding -------------------------------------------------------------------


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


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` (a `--set` argument) with the value read as YAML: `3`, `3m`, `[[0, 1]]`."""
    path, sep, raw = text.partition("=")
    if not sep or not path.strip():
        raise SpecError("--set", [Problem(text, "expected key.path=value")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise SpecError(
            "--set", [Problem(path.strip(), f"value is not valid YAML: {exc}")]
        ) from None
    return path.strip(), value


__all__ = [
    "AggregatorSpec",
    "BehaviourSpec",
    "BladeSection",
    "DflSection",
    "EvaluationSpec",
    "ExperimentSpec",
    "NodesSpec",
    "Problem",
    "SimSection",
    "SpecError",
    "TopologySpec",
    "load_spec",
    "parse_override",
    "parse_seconds",
    "parse_spec",
    "parse_yaml",
    "spec_to_dict",
    "spec_to_yaml",
    "with_overrides",
]
