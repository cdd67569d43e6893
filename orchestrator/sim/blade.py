"""A BLADE-FL experiment in one process, in the paper's time units (section 5, eq. 4).

N clients each hold |D_i| samples of their label distribution (`Partition.local_datasets`). A
round: every honest client trains tau local epochs from the global model, which takes tau *
alpha time units; the last M clients (lazy) copy a peer's model of the round and add N(0,
sigma^2) noise; every client mines a proof-of-work block over the round's models, and the
network finds one in about beta time units; the block's models average into the next global
model. After block k the global model is tested on the whole test set (rounds.csv), and the run
ends after K blocks, t_sum = K (tau alpha + beta) time units later.

Every client is the `BladeHost` (node/host/blade.py) a client process runs, with its keys,
genesis and random streams. With the chain (the default) its engine is the `BladeEngine` a
container runs: signed pool models, real SHA-256d mining at a small difficulty
(`MINING_DIFFICULTY` expected hashes) whose virtual duration is scaled so the network's expected
block time is beta, votes, chain stores. With `chain=False` the engine is the paper's own rounds
(node/protocol/blade_chainless.py): train, copy, average; no records and no mining, so a round
takes only its training time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.host.genesis import blade_extras
from node.ledger.store import ChainStore
from node.protocol.blade import BladeEngine
from node.protocol.blade_chainless import ChainlessBladeEngine
from node.protocol.events import SamplesCollected
from orchestrator.datasets import Dataset
from orchestrator.genesis import spec_genesis
from orchestrator.runtimes.memory import MemoryNetwork, MemoryNode
from orchestrator.sim.clients import RoundsSimulation
from orchestrator.sim.dfl import LATENCY
from orchestrator.spec import ExperimentSpec

MINING_DIFFICULTY = 256.0  # expected hashes per block and miner: real work, a few ms of it


class BladeSimulation(RoundsSimulation):
    def __init__(
        self,
        spec: ExperimentSpec,
        dataset: Dataset,
        out: Path,
        *,
        chain: bool = True,
        progress: bool = True,
    ) -> None:
        if spec.blade is None:
            raise ValueError(f"{spec.name} is a {spec.protocol} experiment, not blade-fl")
        self.blade = spec.blade
        self.chain = chain
        super().__init__(
            spec,
            dataset,
            out,
            rounds=self.blade.rounds,
            dataset_size=self.blade.dataset_size,
            batch_size=self.blade.batch_size,
            progress=progress,
        )
        # Each miner needs MINING_DIFFICULTY hashes on average; the first of `count` finds a
        # block in about 1/count of that, which is to take beta time units.
        self.start_network(
            MemoryNetwork(
                latency=LATENCY,
                hash_rate=MINING_DIFFICULTY / (spec.nodes.count * self.blade.beta),
            )
        )

    # --- running -------------------------------------------------------------------------------

    def _build(self) -> list[ChainStore]:
        """Every client's engine on the network: BladeEngine with a chain store, or (without
        the chain) the paper's own rounds: train, copy, average, no records, no mining."""
        spec, section = self.spec, self.blade
        self.genesis = spec_genesis(
            spec,
            learner=self.hosts[0].learner,
            extra=blade_extras(
                difficulty=MINING_DIFFICULTY,
                rounds=section.rounds,
                local_iterations=section.iterations,
                dataset_size=section.dataset_size,
                batch_size=section.batch_size,
            ),
        )
        stores = []
        for index, (name, key, host) in enumerate(
            zip(self.names, self.keys, self.hosts, strict=True)
        ):
            config = section.config(
                clients=spec.nodes.count,
                lazy=host.behaviour.copies_peers,
                # The honest models of a round all arrive at one instant; a lazy client copies
                # at the next tick rather than after the protocol's default 5 time units.
                lazy_wait=0.5,
            )
            store = None
            engine: BladeEngine | ChainlessBladeEngine
            if self.chain:
                store = ChainStore.create(self.out / "nodes" / name, self.genesis, key.address)
                stores.append(store)
                engine = BladeEngine(key, self.genesis, config)
            else:
                engine = ChainlessBladeEngine(key.address, config)
            node = MemoryNode(
                name,
                engine,
                host,
                store,
                observer=self.recorder if index == 0 else None,
                epoch_seconds=section.alpha or 1.0,
            )
            self.network.add(node)
            self.network.schedule(0.0, name, SamplesCollected(section.dataset_size))
        count = spec.nodes.count
        self.network.connect(
            [(self.names[a], self.names[b]) for a in range(count) for b in range(a + 1, count)]
        )
        return stores

    def _run(self, stores: Sequence[ChainStore]) -> dict[str, Any]:
        counters = self._advance()
        extra = self._figures({})
        if stores:
            extra["heights"] = sorted({store.height for store in stores})
            extra["chains_agree"] = len({store.head_digest for store in stores}) == 1
            extra["forks"] = counters.get("forks", 0)
        return extra

    def _summary(self, wall: float, extra: dict[str, Any]) -> dict[str, Any]:
        blade_section = self.blade
        return self._write_summary(
            wall,
            extra,
            protocol="blade-fl",
            chain=self.chain,
            clients={
                "lazy_clients": sum(h.behaviour.copies_peers for h in self.hosts),
                "noise_variance": blade_section.noise_variance,
            },
            local_epochs=blade_section.iterations,
            timing={"t_sum": blade_section.t_sum},
        )
