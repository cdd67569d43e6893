"""The plan file: everything the Locust process needs to know, in one JSON file it is pointed at.

The orchestrator knows the nodes once they answer (address, genesis digest), holds the control
key and has the dataset loaded; the Locust process knows none of it and must not import the
orchestrator's asyncio side. So the runner writes this file and the locustfile reads it
(`locust ... --dfl-plan FILE`); both go through this one class, so the two sides cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

PLAN_FILE = "plan.json"
SAMPLES_FILE = "samples.npz"  # images (N x 28 x 28 uint8) and labels, for the inject task


@dataclass(frozen=True)
class PlanNode:
    """One node under load: where it listens and what it signs as."""

    name: str
    target: str  # host:port of its gRPC
    address: str  # its ledger address, hex (what control signatures bind to)
    genesis: str  # its genesis digest, hex (what virtual peers' transactions name)
    model_bytes: int  # the size of its model's weights (what forged records are padded to)


@dataclass(frozen=True)
class LoadPlan:
    """What the Locust process is to do. Users are spread over `nodes` in turn."""

    nodes: tuple[PlanNode, ...]
    weights: Mapping[str, int]  # task -> weight (orchestrator/load/tasks.py)
    control_key: str  # the orchestrator's private key (PEM file), for the signed calls
    seed: int  # the experiment's: virtual peers' identities derive from it
    samples: str  # SAMPLES_FILE's path
    csv_prefix: str  # where the final statistics go: PREFIX_stats.csv, PREFIX_failures.csv
    ttl: int = 1  # of virtual peers' transactions (1: the target evaluates, nobody relays)
    lifetime_ms: int = 120_000
    wait_seconds: float = 0.0  # each user's pause between two tasks
    user_rate: float = 0.0  # if above 0, each user's tasks per second instead (an open rate)
    perturbation: float = 1e-3  # std of the noise on the node's model, per virtual peer
    model_refresh_seconds: float = 10.0  # how often a virtual peer fetches the node's model
    batch_size: int = 16  # samples per InjectSamples call (the injector sends 16 at 64/s)
    parent_pid: int = 0  # the orchestrator: Locust stops when it dies (0: it does not watch)
    niceness: int = 0  # added to the Locust process's (os.nice): the nodes' CPU comes first
    live_file: str = ""  # where Locust keeps its running totals (orchestrator/load/live.py)
    step: Mapping[str, object] | None = None  # the step mode (orchestrator/load/steps.py)
    extra: Mapping[str, object] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        data = asdict(self)
        data["nodes"] = [asdict(node) for node in self.nodes]
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def read(cls, path: Path) -> LoadPlan:
        data = json.loads(path.read_text())
        nodes = tuple(PlanNode(**node) for node in data.pop("nodes"))
        if not nodes:
            raise ValueError(f"{path}: the plan names no node")
        return cls(nodes=nodes, **data)
