"""A FedAvg experiment in one process: the baseline without a chain, in virtual time.

N clients each hold |D_i| samples of their label distribution (`Partition.local_datasets`, as
BLADE-FL's clients do). A round: every client trains `local_epochs` epochs from the global model
(one time unit per epoch), sends its model to the aggregator, node 0, the star's centre and a
client itself; once every model is in (or `round_timeout` after the first) the aggregator
averages them and sends the global model to every client. After each round the global model is
tested on the whole test set (rounds.csv); the run ends after `rounds` rounds, or at `duration`.

Every node is the `BladeHost` (node/host/blade.py) a FedAvg process runs, driven by the
`FedAvgEngine` (node/protocol/fedavg.py) a process runs, through the `FedAvgDispatcher` a
process uses, with its keys, genesis and random streams: only time and transport are the
simulator's (orchestrator/runtimes/memory.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.host.dispatch import FedAvgDispatcher
from node.host.genesis import fedavg_extras
from node.learning.codec import encode_f32le
from node.ledger.store import ChainStore
from node.protocol.events import SamplesCollected
from node.protocol.fedavg import FedAvgEngine
from orchestrator.datasets import Dataset
from orchestrator.genesis import spec_genesis
from orchestrator.runtimes.memory import MemoryNetwork, MemoryNode
from orchestrator.sim.clients import RoundsSimulation
from orchestrator.sim.dfl import LATENCY
from orchestrator.spec import ExperimentSpec
from orchestrator.spec.experiment import FEDAVG_AGGREGATOR

EPOCH_SECONDS = 1.0  # virtual time of one local epoch, BLADE-FL's alpha when it gives none


class FedAvgSimulation(RoundsSimulation):
    observed = FEDAVG_AGGREGATOR  # the aggregator's global model is the round's

    def __init__(
        self, spec: ExperimentSpec, dataset: Dataset, out: Path, *, progress: bool = True
    ) -> None:
        if spec.fedavg is None:
            raise ValueError(f"{spec.name} is a {spec.protocol} experiment, not fedavg")
        self.fedavg = spec.fedavg
        super().__init__(
            spec,
            dataset,
            out,
            rounds=self.fedavg.rounds,
            dataset_size=self.fedavg.dataset_size,
            batch_size=self.fedavg.batch_size,
            progress=progress,
        )
        self.start_network(MemoryNetwork(latency=LATENCY))

    def _build(self) -> list[ChainStore]:
        """Every node's engine on the network, connected as the spec's star; no chain stores."""
        spec, section = self.spec, self.fedavg
        self.genesis = spec_genesis(
            spec,
            learner=self.hosts[0].learner,
            extra=fedavg_extras(
                rounds=section.rounds,
                local_epochs=section.local_epochs,
                dataset_size=section.dataset_size,
                batch_size=section.batch_size,
            ),
        )
        model_bytes = len(encode_f32le(self.hosts[0].global_weights))
        for index, (name, key, host) in enumerate(
            zip(self.names, self.keys, self.hosts, strict=True)
        ):
            engine = FedAvgEngine(
                key.address,
                self.genesis.digest,
                spec.fedavg_config(index),
                model_bytes=model_bytes,
                aggregator=index == FEDAVG_AGGREGATOR,
            )
            node = MemoryNode(
                name,
                engine,
                host,
                None,
                observer=self.recorder if index == FEDAVG_AGGREGATOR else None,
                epoch_seconds=EPOCH_SECONDS,
                dispatcher=FedAvgDispatcher,
            )
            self.network.add(node)
            self.network.schedule(0.0, name, SamplesCollected(section.dataset_size))
        self.network.connect([(self.names[a], self.names[b]) for a, b in spec.edges()])
        return []

    def _run(self, stores: Sequence[ChainStore]) -> dict[str, Any]:
        network = self.network
        counters = self._advance()
        return self._figures(
            {
                "models_missing": counters.get("models_missing", 0),
                # FedAvg's wire cost: each client uploads one model a round, the aggregator
                # sends one global model to each client a round
                "bytes_sent": {name: node.bytes_sent for name, node in network.nodes.items()},
                "messages_sent": {name: node.messages_sent for name, node in network.nodes.items()},
            }
        )

    def _summary(self, wall: float, extra: dict[str, Any]) -> dict[str, Any]:
        section = self.fedavg
        return self._write_summary(
            wall,
            extra,
            protocol="fedavg",
            chain=False,
            clients={"aggregator": self.names[FEDAVG_AGGREGATOR]},
            local_epochs=section.local_epochs,
            timing={},
        )
