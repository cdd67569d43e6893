"""ExperimentSpec: one experiment whatever runs it, and the values every runtime reads from it.

Validation derives those values once: the parsed partition (NodesSpec), the drawn peer graph and
each node's behaviour. The spec keeps them, so the simulator, a sweep, node processes and
containers read one graph and one set of behaviours and never draw their own; a changed value
(`with_overrides`, `model_copy`) goes through validation again and derives them anew.

The fault schedule (`faults`, orchestrator/spec/faults.py) is checked here against the run it
belongs to (node indices against nodes.count, windows against duration) and ordered once into
the timeline the runtimes carry out.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from node.learning.behaviours import Behaviour
from node.protocol.dfl import DflConfig
from node.protocol.fedavg import FedAvgConfig
from node.seeds import MAX_SEED
from orchestrator import topology
from orchestrator.datasets import DATASETS
from orchestrator.partition import PartitionSpec
from orchestrator.spec.errors import Location, check
from orchestrator.spec.faults import AnyFault, Fault, FaultStep, schedule_problems, timeline
from orchestrator.spec.placement import PlacementSpec
from orchestrator.spec.sections import (
    BehaviourSpec,
    BladeSection,
    DflSection,
    EvaluationSpec,
    FedAvgSection,
    NodesSpec,
    ResourcesSpec,
    SimSection,
    TopologySpec,
    TransportSpec,
)
from orchestrator.spec.values import Int, Model, Seconds, known
from orchestrator.spec.write import spec_to_yaml

# node.learning.models imports torch (seconds); checking a spec must not. A unit test keeps this
# list equal to models.MODELS.
MODELS = ("lenet", "mlp")
PROTOCOLS = ("dfl", "blade-fl", "fedavg")
PROTOCOL_ALIASES = {"blade": "blade-fl", "bladefl": "blade-fl", "fed-avg": "fedavg"}
FEDAVG_AGGREGATOR = 0  # the star's centre (orchestrator/topology.py)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ExperimentSpec(Model):
    """One experiment, whatever runs it."""

    name: str
    protocol: str
    seed: Int = Field(ge=0, le=MAX_SEED)  # one 32-bit word of every stream's entropy
    # Where node signing keys come from. `derived`: from (seed, node index) (node/seeds.py), so
    # one spec gives the same addresses in the simulator, in processes and in containers, and a
    # run can be repeated; anyone who reads the spec can sign as any node, which a testbed can
    # afford. `random`: fresh keys for every node, for deployments.
    identity: Literal["derived", "random"] = "derived"
    duration: Seconds = Field(gt=0)
    model: str
    dataset: str
    nodes: NodesSpec
    topology: TopologySpec = Field(default_factory=TopologySpec)
    dfl: DflSection = Field(default_factory=DflSection)
    blade: BladeSection | None = None
    # None is left out of the canonical JSON (exclude_none), so specs without it keep their digest
    fedavg: FedAvgSection | None = None
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    sim: SimSection = Field(default_factory=SimSection)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    transport: TransportSpec = Field(default_factory=TransportSpec)  # TLS or not
    placement: PlacementSpec | None = None  # the swarm runtime's (orchestrator/spec/placement.py)
    # After nodes and duration, which its check reads. BLADE-FL takes faults too: a crashed or
    # paused client is what its synchronous rounds are tested against.
    faults: tuple[Fault, ...] = ()
    _edges: tuple[topology.Edge, ...] = PrivateAttr()
    _neighbours: tuple[tuple[int, ...], ...] = PrivateAttr()
    _behaviours: tuple[BehaviourSpec, ...] = PrivateAttr()
    _timeline: tuple[FaultStep, ...] = PrivateAttr()

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
        return known(PROTOCOL_ALIASES.get(protocol, protocol), PROTOCOLS, "protocol")

    @field_validator("model")
    @classmethod
    def _model(cls, model: str) -> str:
        return known(model, MODELS, "model")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, dataset: str) -> str:
        return known(dataset, DATASETS, "dataset")

    @field_validator("faults")
    @classmethod
    def _faults_fit_the_run(
        cls, faults: tuple[AnyFault, ...], info: ValidationInfo
    ) -> tuple[AnyFault, ...]:
        """A field validator, not part of `_derive`, so that a bad schedule is reported even
        when another field is wrong too; a wrong nodes or duration only skips its own checks."""
        nodes, duration = info.data.get("nodes"), info.data.get("duration")
        check(schedule_problems(faults, nodes.count if nodes is not None else None, duration))
        return faults

    @field_validator("placement")
    @classmethod
    def _placement_fits(cls, placement: PlacementSpec | None, info: ValidationInfo) -> Any:
        nodes = info.data.get("nodes")
        if placement is not None and nodes is not None:
            check(placement.problems(nodes.count))
        return placement

    @model_serializer(mode="wrap")
    def _without_empty_faults(self, handler: SerializerFunctionWrapHandler) -> Any:
        """No `faults` key when there are none, so that a spec written before faults existed
        keeps its canonical JSON and digest (and runs recorded with it still match). The same
        for a `transport` left to the runtime's default, so TLS changed no existing digest."""
        data = handler(self)
        if isinstance(data, dict):
            if not self.faults:
                data.pop("faults", None)
            if self.transport.tls is None:
                data.pop("transport", None)
        return data

    @model_validator(mode="after")
    def _derive(self) -> ExperimentSpec:
        """The checks that span sections, then the values the runtimes read, each made once.

        The graph is drawn here and kept: checking that it can be drawn and drawing it for a
        runtime are the same draw, so what was checked is what runs.
        """
        problems = self._blade_problems() + self._fedavg_problems()
        t, count = self.topology, self.nodes.count
        edges: tuple[topology.Edge, ...] = ()
        try:
            edges = tuple(
                topology.build_edges(t.kind, count, degree=t.degree, edges=t.edges, seed=self.seed)
            )
        except ValueError as exc:
            field = {"random": "degree", "edges": "edges"}.get(t.kind)
            where: Location = ("topology", field) if field else ("topology",)
            problems.append((where, f"{exc} (nodes.count is {count})"))
        check(problems)
        self._edges = edges
        self._neighbours = tuple(tuple(peers) for peers in topology.neighbours(edges, count))
        self._behaviours = tuple(self._written_behaviour(node) for node in range(count))
        self._timeline = timeline(self.faults)
        return self

    def _blade_problems(self) -> list[tuple[Location, str]]:
        if self.protocol != "blade-fl":
            if self.blade is not None:
                return [(("blade",), "only for protocol blade-fl (remove it)")]
            return []
        problems: list[tuple[Location, str]] = []
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
                (("topology", "kind"), "BLADE-FL clients send to every other client: use full")
            )
        return problems

    def _fedavg_problems(self) -> list[tuple[Location, str]]:
        if self.protocol != "fedavg":
            if self.fedavg is not None:
                return [(("fedavg",), "only for protocol fedavg (remove it)")]
            return []
        problems: list[tuple[Location, str]] = []
        if self.fedavg is None:
            problems.append((("fedavg",), "required for protocol fedavg (at least rounds)"))
        if self.topology.kind != "star":
            problems.append(
                (
                    ("topology", "kind"),
                    f"FedAvg's clients send to one aggregator, node {FEDAVG_AGGREGATOR}, the "
                    f"star's centre, not over a {self.topology.kind} graph: use "
                    f"topology: {{kind: star}}",
                )
            )
        if not any(
            self._written_behaviour(node).behaviour.sends for node in range(self.nodes.count)
        ):
            problems.append(
                (("nodes", "behaviours"), "FedAvg needs one node that trains and sends its model")
            )
        return problems

    def _written_behaviour(self, node: int) -> BehaviourSpec:
        """In BLADE-FL the last `blade.lazy_clients` clients are lazy (as in the paper's code),
        unless nodes.behaviours says otherwise for one of them."""
        if node in self.nodes.behaviours:
            return self.nodes.behaviours[node]
        blade = self.blade
        if blade is not None and node >= self.nodes.count - blade.lazy_clients:
            return BehaviourSpec(name="lazy", options={"variance": blade.noise_variance})
        return BehaviourSpec(name="normal")

    # What the runtimes ask for.

    def edges(self) -> tuple[topology.Edge, ...]:
        """The peer graph, drawn under the experiment seed when the spec was validated."""
        return self._edges

    def neighbours(self) -> tuple[tuple[int, ...], ...]:
        """Per node, its sorted neighbours in `edges()`."""
        return self._neighbours

    def behaviour_of(self, node: int) -> BehaviourSpec:
        """The node's behaviour as written (name and options); `normal` when not listed."""
        if not 0 <= node < self.nodes.count:
            raise IndexError(f"node {node} does not exist (nodes 0..{self.nodes.count - 1})")
        return self._behaviours[node]

    def behaviour(self, node: int) -> Behaviour:
        return self.behaviour_of(node).behaviour

    def fault_timeline(self) -> tuple[FaultStep, ...]:
        """Every fault's begin and end as (time, "begin" | "end", fault), in the order to carry
        them out: by time, ends before begins at one moment, then spec order. A crash without
        restart_after has no end. Ordered once, when validated, for every runtime alike."""
        return self._timeline

    def injection_rate_of(self, node: int) -> float:
        """Samples per second injected into `node` (its own rate, else the common one)."""
        return float(self.nodes.injection_rates.get(node, self.nodes.injection_rate))

    def partition(self) -> PartitionSpec:
        return self.nodes.partition

    def dfl_config(self, node: int | None = None) -> DflConfig:
        """The engine's config; for a node that never sends (an observer), `trains` is False."""
        sends = node is None or self.behaviour(node).sends
        return self.dfl.config(trains=sends)

    def fedavg_config(self, node: int) -> FedAvgConfig:
        """FedAvg's engine config for `node`: a round waits for the models of every node that
        sends (an observer only receives the global model)."""
        assert self.fedavg is not None, "not a fedavg experiment"
        senders = sum(self.behaviour(index).sends for index in range(self.nodes.count))
        return self.fedavg.config(senders, trains=self.behaviour(node).sends)

    def dfl_config_fields(self, node: int | None = None) -> dict[str, Any]:
        """`dfl_config(node)` as plain keyword arguments, for a node's config file."""
        return dataclasses.asdict(self.dfl_config(node))

    @property
    def duration_seconds(self) -> float:
        return self.duration  # already seconds; the name says so at call sites

    def to_yaml(self) -> str:
        return spec_to_yaml(self)
