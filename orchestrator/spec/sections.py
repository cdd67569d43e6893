"""The sections of a spec (nodes, topology, dfl, blade, fedavg, evaluation, sim, resources,
transport).

Each section checks what it can check on its own, by asking the component that will use a value
(behaviours, aggregators, partitions, the DFL engine), so that the spec never accepts something a
node later refuses. Checks that need another section live in ExperimentSpec.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from node.learning.aggregation import load_aggregator
from node.learning.behaviours import ALIASES, Behaviour, make_behaviour
from node.protocol.blade import BladeConfig
from node.protocol.dfl import DflConfig
from node.protocol.fedavg import FedAvgConfig
from orchestrator.partition import PartitionSpec, parse_partition
from orchestrator.spec.errors import Location, check
from orchestrator.spec.values import Bool, Float, Int, Model, Seconds, named

TEST_SET_SIZE = 10_000  # MNIST and Fashion-MNIST alike
MAX_TTL = DflConfig.max_ttl  # the most a receiver accepts


class BehaviourSpec(Model):
    """A node behaviour (node/learning/behaviours.py) and its numeric options.

    Written as a name (`random-model`) or as `{name: random-model, options: {high: 0.01}}`.
    Aliases (the DFL simulator's node types) are stored under their canonical names.
    """

    name: str
    options: dict[str, Float] = Field(default_factory=dict)
    _behaviour: Behaviour = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return named(value, "a behaviour")

    @field_validator("name")
    @classmethod
    def _canonical(cls, name: str) -> str:
        return ALIASES.get(name, name)

    @model_validator(mode="after")
    def _build(self) -> BehaviourSpec:
        # make_behaviour's ValueError names the known behaviours or the bad option.
        self._behaviour = make_behaviour(self.name, **self.options)
        return self

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> Any:
        return handler(self) if self.options else self.name

    @property
    def behaviour(self) -> Behaviour:
        """Built once, when validated; behaviours are frozen, so every runtime shares it."""
        return self._behaviour


class AggregatorSpec(Model):
    """An aggregation rule: any name `load_aggregator` takes (built-in, entry point, dotted path).

    Written as a name (`reputation-0.05`) or with options,
    `{name: trimmed-mean, options: {trim_fraction: 0.2}}`. It is loaded once here, so that a
    typo or a plugin that does not import fails before a run; each node loads its own instance,
    since a rule may keep state.
    """

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return named(value, "an aggregator")

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


class NodesSpec(Model):
    """How many nodes, what data each gets, how fast, and how each behaves."""

    count: Int = Field(ge=1)
    distribution: Annotated[str, StringConstraints(strip_whitespace=True)] = "iid"
    injection_rate: Float = Field(64.0, gt=0)  # samples per second per node
    injection_rates: dict[int, Annotated[Float, Field(ge=0)]] = Field(default_factory=dict)
    behaviours: dict[int, BehaviourSpec] = Field(default_factory=dict)
    _partition: PartitionSpec = PrivateAttr()

    # Field validators rather than one model validator, so that these are reported even when
    # another field of the section is wrong too (a model validator would not run).
    @field_validator("injection_rates", "behaviours")
    @classmethod
    def _nodes_exist(cls, per_node: dict[int, Any], info: ValidationInfo) -> dict[int, Any]:
        count = info.data.get("count")
        if count is not None:
            check(
                [
                    ((node,), f"node {node} does not exist (nodes 0..{count - 1})")
                    for node in per_node
                    if not 0 <= node < count
                ]
            )
        return per_node

    @model_validator(mode="after")
    def _parse_distribution(self) -> NodesSpec:
        try:
            self._partition = parse_partition(self.distribution)
        except ValueError as exc:  # it says what is expected
            check([(("distribution",), str(exc))])
        return self

    @property
    def partition(self) -> PartitionSpec:
        """`distribution`, parsed once when validated."""
        return self._partition


class TopologySpec(Model):
    """The peer graph; see orchestrator/topology.py for each kind."""

    kind: Literal["full", "ring", "star", "line", "random", "edges"] = "full"
    degree: Int | None = Field(None, ge=1)  # random only
    edges: list[tuple[Int, Int]] | None = None  # edges only

    @model_validator(mode="after")
    def _fields_match_kind(self) -> TopologySpec:
        problems: list[tuple[Location, str]] = []
        if self.kind == "random" and self.degree is None:
            problems.append((("degree",), "required for the random topology"))
        if self.kind != "random" and self.degree is not None:
            problems.append((("degree",), f"only for kind random, not {self.kind} (remove it)"))
        if self.kind == "edges" and self.edges is None:
            problems.append((("edges",), "required for kind edges, as [[0, 1], [1, 2], ...]"))
        if self.kind != "edges" and self.edges is not None:
            problems.append((("edges",), f"only for kind edges, not {self.kind} (remove it)"))
        check(problems)
        return self


class DflSection(Model):
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


class BladeSection(Model):
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
        problems: list[tuple[Location, str]] = []
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
        check(problems)
        return self

    @property
    def iterations(self) -> int:
        """tau: local epochs per round, given or derived from eq. 4."""
        if self.local_iterations is not None:
            return self.local_iterations
        assert self.t_sum is not None and self.alpha is not None
        return math.floor((self.t_sum / self.rounds - self.beta) / self.alpha + 1e-9)

    def config(
        self, clients: int, *, lazy: bool = False, lazy_wait: float = BladeConfig.lazy_wait
    ) -> BladeConfig:
        """The engine's config for one of `clients` (nodes.count) clients, made in one place
        for every runtime; `lazy` and `lazy_wait` belong to the client, not the section."""
        return BladeConfig(
            clients=clients,
            rounds=self.rounds,
            local_iterations=self.iterations,
            dataset_size=self.dataset_size,
            collect_timeout=self.collect_timeout,
            vote_timeout=self.vote_timeout,
            lazy=lazy,
            lazy_wait=lazy_wait,
        )


class FedAvgSection(Model):
    """Synchronous FedAvg with one aggregator (node/protocol/fedavg.py), the baseline without a
    chain: node 0, the star's centre, aggregates and is a client too.

    Each of `rounds` (K) rounds, every client trains `local_epochs` epochs over its fixed local
    dataset of `dataset_size` samples (minibatch `batch_size`) from the global model and sends
    its model to the aggregator, which averages the round's models once every client's is in,
    or `round_timeout` after the first came, and sends the one global model to every client.
    The fields mirror BLADE-FL's (rounds, local epochs, |D_i|, batch), so that one experiment
    runs under both protocols on equal terms.
    """

    rounds: Int = Field(ge=1)
    local_epochs: Int = Field(1, ge=1)
    dataset_size: Int = Field(512, ge=1)
    batch_size: Int = Field(32, ge=1)
    round_timeout: Seconds = Field(30.0, gt=0)

    def config(self, clients: int, *, trains: bool = True) -> FedAvgConfig:
        """The engine's config, made in one place for every runtime: `clients` is how many
        models a round waits for (the nodes that train and send, the aggregator included);
        `trains` belongs to the node (an observer only receives)."""
        return FedAvgConfig(
            clients=clients,
            rounds=self.rounds,
            local_iterations=self.local_epochs,
            dataset_size=self.dataset_size,
            round_timeout=self.round_timeout,
            trains=trains,
        )


class EvaluationSpec(Model):
    """The orchestrator's own measurement: every node's model on a common test set."""

    test_samples: Int = Field(1000, ge=1, le=TEST_SET_SIZE)
    interval: Seconds = Field(10.0, gt=0)

    @property
    def interval_seconds(self) -> float:
        return self.interval


class SimSection(Model):
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


class ResourcesSpec(Model):
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


class TransportSpec(Model):
    """How nodes and the orchestrator talk: gRPC, over mutual TLS or in plaintext.

    With `tls: true` the runtime makes a certificate authority for the run and a certificate
    per node (orchestrator/certificates.py), and every connection, node to node and
    orchestrator to node, is TLS both ways. Left out, each runtime takes its own default:
    plaintext for `local` and `docker` (one machine, a network of the run's own), TLS for
    `swarm` (traffic between hosts). The simulator has no network and ignores it.
    """

    tls: Bool | None = None  # None: the runtime's default

    def tls_or(self, default: bool) -> bool:
        """`tls` as written, else the runtime's `default`."""
        return default if self.tls is None else self.tls
