"""A node's configuration: one YAML file, overridable by environment variables.

Everything a node needs to take part in an experiment is here, so that a container, a local
process and a test start nodes the same way. Validation happens once, at start: a bad value stops
the node with the field's name and what to write instead, never halfway through a run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from node.protocol.blade import BladeConfig
from node.protocol.dfl import DflConfig
from node.protocol.fedavg import FedAvgConfig
from node.service.admission import Limits
from node.service.control import parse_public_key

ENV_PREFIX = "DFL_NODE_"
PROTOCOLS = ("dfl", "blade-fl", "fedavg")
BLADE_HOST_FIELDS = ("difficulty", "batch_size")  # the host's, not the engine's
FEDAVG_NODE_FIELDS = ("batch_size", "aggregator")  # the host's and the node's role


class NodeConfigError(Exception):
    """The configuration cannot start a node; the message names every bad field."""


class TlsFiles(BaseModel):
    """The PEM files of gRPC over TLS: the run's CA, this node's certificate and private key.

    Every connection is mutual: a node serves only clients whose certificate the run's CA
    signed, and trusts only servers it signed, so that a node of another run (or anything else
    on the network) can neither send it records nor be taken for a peer.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca: Path
    cert: Path
    key: Path


class NodeConfig(BaseModel):
    """Every setting of one node; `load_node_config` builds it from a file and DFL_NODE_*.

    `hold_append` is a test hook, not a setting for runs: with a path there (or
    DFL_NODE_HOLD_APPEND), a chain append that finds no file at that path writes it (holding
    the height being appended) and then waits 60 s inside the append's SQLite transaction,
    before the commit, so that a crash test can SIGKILL the node in the middle of an append
    (node/service/crashpoint.py). While the file exists appends run as usual; deleting it arms
    the hook again. Only the node's own configuration sets it; nothing a peer sends can.
    `hold_start` is the same kind of hook for start-up (node/service/health.py): the process
    writes that file once it listens, and waits while the file exists (at most 60 s) before it
    opens and verifies the chain, answering NOT_SERVING meanwhile.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "node"
    data_dir: Path = Path("node-data")
    listen: str = "127.0.0.1"  # containers listen on 0.0.0.0 (their configs say so)
    port: int = Field(50051, ge=1, le=65535)
    advertise: str | None = None  # host:port peers reach us at; default 127.0.0.1:port
    metrics_port: int = Field(0, ge=0, le=65535)  # 0: no /metrics endpoint
    peers: tuple[str, ...] = ()

    protocol: str = "dfl"
    model: str = "lenet"
    seed: int = 1  # the experiment's: same genesis and same initial weights on every node
    index: int = Field(0, ge=0)  # the node's place in the experiment: its random streams
    # derived: the signing key follows from (seed, index), the same in every runtime (a
    # testbed's choice, see node/seeds.py); random: a fresh key, for a node of a deployment
    identity: Literal["derived", "random"] = "random"
    spec: str = ""  # the canonical experiment spec (JSON): it goes into the genesis
    behaviour: str = "normal"
    behaviour_options: dict[str, float] = Field(default_factory=dict)
    aggregator: str = "reputation-0.05"
    aggregator_options: dict[str, Any] = Field(default_factory=dict)
    dfl: dict[str, Any] = Field(default_factory=dict)  # DflConfig fields
    # BLADE-FL: BladeConfig fields, plus `difficulty` (expected hashes per block, in the genesis)
    # and `batch_size` (local minibatch)
    blade: dict[str, Any] = Field(default_factory=dict)
    # FedAvg: FedAvgConfig fields, plus `batch_size` (local minibatch) and `aggregator` (true
    # for the star's centre, which averages; false for a client)
    fedavg: dict[str, Any] = Field(default_factory=dict)
    test_batch: int = Field(100, ge=1)  # samples per local accuracy measurement
    sample_memory: int = Field(20_000, ge=64)  # recent samples kept for evaluation
    torch_threads: int = Field(1, ge=1)
    tick_interval: float = Field(1.0, gt=0)  # as the simulator's: timers of 2-10 s need no finer
    peer_timeout: float = Field(10.0, gt=0)
    peer_retries: int = Field(2, ge=0)
    # The orchestrator's public key(s), hex, comma-separated: who may make control calls
    # (node/service/control.py). A file holding one serves a compose stack, which makes it at
    # start. Neither: the node takes no control call at all.
    control_key: tuple[str, ...] = ()
    control_key_file: Path | None = None
    limits: dict[str, float] = Field(default_factory=dict)  # node/service/admission.py Limits
    hold_append: Path | None = None  # a test hook (see above)
    hold_start: Path | None = None  # a test hook (see above)
    tls: TlsFiles | None = None  # None: plaintext gRPC (h2c)

    @field_validator("peers", mode="before")
    @classmethod
    def _split_peers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(peer.strip() for peer in value.split(",") if peer.strip())
        return value

    @field_validator("control_key", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("control_key")
    @classmethod
    def _public_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for key in value:
            parse_public_key(key)
        return value

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        if value not in PROTOCOLS:
            raise ValueError(f"unknown protocol {value!r}; known: {', '.join(PROTOCOLS)}")
        return value

    @property
    def address(self) -> str:
        return self.advertise or f"127.0.0.1:{self.port}"

    def dfl_config(self) -> DflConfig:
        try:
            return DflConfig(**self.dfl)
        except (TypeError, ValueError) as error:
            raise NodeConfigError(f"dfl: {error}") from None

    def blade_config(self, *, lazy: bool = False) -> BladeConfig:
        """`lazy`: the node's behaviour plagiarizes (the node knows once it has built it)."""
        fields = {k: v for k, v in self.blade.items() if k not in BLADE_HOST_FIELDS}
        try:
            return BladeConfig(**fields, lazy=lazy)
        except (TypeError, ValueError) as error:
            raise NodeConfigError(f"blade: {error}") from None

    def fedavg_config(self, *, trains: bool = True) -> FedAvgConfig:
        """`trains`: the node's behaviour sends a model (an observer's does not)."""
        fields = {k: v for k, v in self.fedavg.items() if k not in FEDAVG_NODE_FIELDS}
        try:
            return FedAvgConfig(**fields, trains=trains)
        except (TypeError, ValueError) as error:
            raise NodeConfigError(f"fedavg: {error}") from None

    @property
    def fedavg_aggregator(self) -> bool:
        aggregator = self.fedavg.get("aggregator", False)
        if not isinstance(aggregator, bool):
            raise NodeConfigError(f"fedavg.aggregator: true or false, not {aggregator!r}")
        return aggregator

    @property
    def pow_difficulty(self) -> float:
        difficulty = self.blade.get("difficulty")
        if not isinstance(difficulty, int | float) or difficulty < 1:
            raise NodeConfigError(
                f"blade.difficulty: expected hashes per block (a number >= 1), not {difficulty!r}"
            )
        return float(difficulty)

    @property
    def local_batch_size(self) -> int:
        section = self.fedavg if self.protocol == "fedavg" else self.blade
        return int(section.get("batch_size", 32))

    def control_keys(self) -> tuple[bytes, ...]:
        """The trusted orchestrator keys: `control_key`, and the one in `control_key_file`."""
        keys = [parse_public_key(key) for key in self.control_key]
        if self.control_key_file is not None:
            try:
                keys.append(parse_public_key(self.control_key_file.read_text()))
            except (OSError, ValueError) as error:
                raise NodeConfigError(f"control_key_file: {error}") from None
        return tuple(keys)

    def admission_limits(self) -> Limits:
        try:
            return Limits(**self.limits)
        except (TypeError, ValueError) as error:
            raise NodeConfigError(f"limits: {error}") from None

    def check_protocol(self) -> None:
        """Fails now, not at the first record, when the protocol's own settings are wrong."""
        if self.protocol == "dfl":
            self.dfl_config()
        elif self.protocol == "fedavg":
            self.fedavg_config()
            _ = self.fedavg_aggregator
        else:
            self.blade_config()
            _ = self.pow_difficulty
        self.control_keys()
        self.admission_limits()


def _environment_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """DFL_NODE_PORT=50052 sets `port`; DFL_NODE_PEERS=a:1,b:2 sets `peers`."""
    fields = set(NodeConfig.model_fields)
    overrides = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            field = name[len(ENV_PREFIX) :].lower()
            if field not in fields:
                raise NodeConfigError(
                    f"{name}: no such setting; known: {', '.join(sorted(fields))}"
                )
            overrides[field] = value
    return overrides


def load_node_config(
    path: Path | None, environ: Mapping[str, str] | None = None, **overrides: Any
) -> NodeConfig:
    """The file (if any), then DFL_NODE_* variables, then keyword overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise NodeConfigError(f"{path}: {error}") from None
        if not isinstance(loaded, dict):
            raise NodeConfigError(f"{path}: expected a mapping of settings")
        values.update(loaded)
    values.update(_environment_overrides(os.environ if environ is None else environ))
    values.update(overrides)
    try:
        config = NodeConfig(**values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        raise NodeConfigError(f"bad node configuration: {problems}") from None
    config.check_protocol()
    return config
