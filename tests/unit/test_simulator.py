"""The tick simulator: reproducible runs, the transport, its outputs, and specs it refuses.

Runs here are small (four nodes, an MLP, a hundred ticks) but real: MNIST, the DFL engine with
signatures, receipts and blocks in SQLite stores, the BLADE-FL engine with proof of work.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from node.ledger.store import ChainStore
from node.protocol.events import MessageKind, PeersChanged, Send, Tick, TransactionReceived
from orchestrator.datasets import Dataset
from orchestrator.runtimes.memory import MemoryNetwork, MemoryNode
from orchestrator.sim import outputs
from orchestrator.sim.run import RunExists, simulate
from orchestrator.spec import SpecError, parse_spec, spec_to_dict, with_overrides
from tests.support import SMALL_DFL


def small_spec(**changes: object) -> object:
    data = {**SMALL_DFL, **changes}
    return parse_spec(data)


def run(tmp_path: Path, name: str, mnist: Dataset, data_dir: Path, **kwargs: object) -> dict:
    spec = kwargs.pop("spec", None) or small_spec()
    return simulate(spec, tmp_path / name, progress=False, data_dir=data_dir, **kwargs)


# --- reproducibility ----------------------------------------------------------------------------


def test_the_same_spec_and_seed_give_an_identical_accuracy_csv(
    tmp_path: Path, mnist: Dataset, data_dir: Path
) -> None:
    run(tmp_path, "a", mnist, data_dir)
    run(tmp_path, "b", mnist, data_dir)
    run(tmp_path, "c", mnist, data_dir, spec=small_spec(seed=4))

    first = (tmp_path / "a" / outputs.ACCURACY_FILE).read_bytes()
    assert first == (tmp_path / "b" / outputs.ACCURACY_FILE).read_bytes()
    assert first != (tmp_path / "c" / outputs.ACCURACY_FILE).read_bytes()
    assert (tmp_path / "a" / outputs.WEIGHT_DIFF_FILE).read_bytes() == (
        tmp_path / "b" / outputs.WEIGHT_DIFF_FILE
    ).read_bytes()


def test_a_run_learns_and_leaves_verifiable_chains_and_every_output(
    tmp_path: Path, mnist: Dataset, data_dir: Path
) -> None:
    summary = run(tmp_path, "run", mnist, data_dir)
    out = tmp_path / "run"

    header, series = outputs.read_series(out / outputs.ACCURACY_FILE)
    assert header == ["tick", "node0", "node1", "node2", "node3"]
    assert series[:, 0].tolist() == list(range(0, 101, 10))
    assert series[0, 1:].mean() < 0.3 and series[-1, 1:].mean() > 0.45
    assert summary["final_accuracy"] > 0.45 and summary["rejected"] == 0
    assert summary["evaluations"] > 4 * 10  # every received model, and the records
    assert len(set(summary["addresses"].values())) == 4 and summary["edges"] == [
        [0, 1],
        [0, 3],
        [1, 2],
        [2, 3],
    ]
    assert 0 < summary["chain_share"] < 1

    layers, differences = outputs.read_series(out / outputs.WEIGHT_DIFF_FILE)
    assert layers == ["tick", "fc1", "fc2"] and (differences[1:, 1:] > 0).all()
    reputation = (out / outputs.REPUTATION_FILE).read_text().splitlines()
    assert reputation[0] == "tick,node,generator,reputation" and len(reputation) > 10
    chain_rows = (out / outputs.CHAIN_FILE).read_text().splitlines()
    assert len(chain_rows) == 5
    for name in header[1:]:
        with ChainStore.open(out / "nodes" / name) as store:  # opening re-verifies everything
            assert store.height >= 1
    assert (out / "run.png").stat().st_size > 10_000
    assert (out / "spec.yaml").exists()


def test_a_finished_run_is_never_overwritten_and_an_unfinished_one_is_cleared(
    tmp_path: Path, mnist: Dataset, data_dir: Path
) -> None:
    spec = small_spec(duration=20)
    out = tmp_path / "run"
    (out / "nodes" / "node0").mkdir(parents=True)  # an interrupted run's leftovers
    (out / "nodes" / "node0" / "chain.sqlite").write_bytes(b"half a run")
    (out / "notes.txt").write_text("mine")

    first = simulate(spec, out, progress=False, data_dir=data_dir)
    with pytest.raises(RunExists, match="--force"):
        simulate(spec, out, progress=False, data_dir=data_dir)
    again = simulate(spec, out, progress=False, data_dir=data_dir, replace=True)

    assert first["final_accuracy"] == again["final_accuracy"]
    assert (out / "notes.txt").read_text() == "mine"  # only what a run writes is touched


def test_without_the_chain_nothing_is_signed_or_stored_and_the_models_still_learn(
    tmp_path: Path, mnist: Dataset, data_dir: Path
) -> None:
    summary = run(tmp_path, "plain", mnist, data_dir, chain=False)

    assert summary["chain"] is False and summary["final_accuracy"] > 0.45
    assert not list((tmp_path / "plain" / "nodes").glob("*/chain.sqlite"))
    assert summary["blocks_finalized"] == 0


def test_the_chainless_simulator_refuses_a_ttl_it_cannot_relay(
    tmp_path: Path, mnist: Dataset, data_dir: Path
) -> None:
    with pytest.raises(SpecError) as refused:
        run(tmp_path, "ttl", mnist, data_dir, spec=small_spec(dfl={"ttl": 2}), chain=False)
    assert refused.value.paths == ["dfl.ttl"]
    assert not (tmp_path / "ttl").exists()  # refused before anything was written


def test_a_model_poisoner_loses_reputation_with_its_neighbours(
    tmp_path: Path, mnist: Dataset, data_dir: Path
) -> None:
    spec = small_spec(nodes={"count": 4, "distribution": "iid", "behaviours": {0: "random-model"}})
    summary = run(tmp_path, "attack", mnist, data_dir, spec=spec)

    rows = (tmp_path / "attack" / outputs.REPUTATION_FILE).read_text().splitlines()[1:]
    last: dict[tuple[str, str], float] = {}
    for row in rows:
        _, node, generator, value = row.split(",")
        last[(node, generator)] = float(value)
    attacker = [v for (node, gen), v in last.items() if gen == "node0"]
    honest = [v for (node, gen), v in last.items() if gen != "node0"]
    assert attacker and max(attacker) < min(honest)
    assert summary["measured_nodes"] == ["node1", "node2", "node3"]


def test_blade_fl_runs_k_rounds_in_its_time_budget_with_and_without_the_chain(
    tmp_path: Path, mnist: Dataset, data_dir: Path
) -> None:
    spec = parse_spec(
        {
            "name": "blade-small",
            "protocol": "blade-fl",
            "seed": 2,
            "duration": 500,
            "model": "mlp",
            "dataset": "mnist",
            "nodes": {"count": 4, "distribution": "labels:2"},
            "blade": {
                "rounds": 3,
                "t_sum": 36,
                "alpha": 1,
                "beta": 10,
                "dataset_size": 64,
            },
        }
    )
    chain = simulate(spec, tmp_path / "chain", progress=False, data_dir=data_dir)
    plain = simulate(spec, tmp_path / "plain", chain=False, progress=False, data_dir=data_dir)
    lazy_spec = with_overrides(spec, {"blade.lazy_clients": 1})
    lazy = simulate(lazy_spec, tmp_path / "lazy", progress=False, data_dir=data_dir)

    assert chain["rounds_done"] == plain["rounds_done"] == 3 and chain["local_epochs"] == 2
    assert chain["chains_agree"] and chain["heights"] == [3] and chain["rejected"] == 0
    # the same models are averaged, whether they came through signed records and blocks or not
    assert chain["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-4)
    assert lazy["lazy_clients"] == 1 and lazy["chains_agree"] and lazy["rounds_done"] == 3
    header, rounds = outputs.read_series(tmp_path / "chain" / outputs.ROUNDS_FILE)
    assert header == ["round", "time", "loss", "accuracy"]
    assert rounds[-1, 2] < rounds[0, 2]  # the loss fell
    assert (np.diff(rounds[:, 1]) >= 2).all()  # each round took at least its tau * alpha


# --- the transport ------------------------------------------------------------------------------


@dataclass
class ScriptedEngine:
    """Sends a scripted message to its peers on its first tick; records what it receives."""

    name: str
    peers: tuple[str, ...] = ()
    received: list[tuple[str, bytes]] = field(default_factory=list)
    ticks: int = 0

    def handle(self, event: object, now: float) -> list[object]:
        match event:
            case PeersChanged(peers):
                self.peers = peers
            case TransactionReceived(payload, sender):
                self.received.append((sender, payload))
            case Tick():
                self.ticks += 1
                if self.ticks == 1 and self.peers:
                    payload = f"{self.name}:{now}".encode() + bytes(range(256))
                    return [Send(self.peers, MessageKind.TRANSACTION, payload)]
        return []


def test_the_in_memory_transport_delivers_exactly_what_the_engines_send() -> None:
    network = MemoryNetwork()
    engines = {name: ScriptedEngine(name) for name in ("a", "b", "c", "d")}
    for name, engine in engines.items():
        network.add(MemoryNode(name, engine, host=None))  # type: ignore[arg-type]
    network.connect([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])
    network.cut.add(("d", "c"))  # one direction of one link drops everything

    network.run(3.0)

    sent = Counter(
        (name, peer, f"{name}:1.0".encode() + bytes(range(256)))
        for name, engine in engines.items()
        for peer in engine.peers
        if (name, peer) != ("d", "c")
    )
    delivered = Counter(
        (sender, name, payload)
        for name, engine in engines.items()
        for sender, payload in engine.received
    )
    assert delivered == sent
    assert network.nodes["d"].messages_sent == 1  # sent and counted, then dropped on the cut


# --- eq. 5 --------------------------------------------------------------------------------------


def test_weight_difference_is_eq_5_over_a_ring_of_the_nodes() -> None:
    sums = np.array([[1.0, 10.0], [3.0, 10.0], [2.0, 14.0]])
    # layer 0: |3-1| + |2-3| + |1-2| = 4; layer 1: 0 + 4 + 4 = 8; divided by N = 3
    assert outputs.weight_difference(sums) == pytest.approx([4 / 3, 8 / 3])
    assert outputs.weight_difference(np.ones((4, 2))) == pytest.approx([0.0, 0.0])


# --- refused specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"sim": {"training_interval": [12, 8]}}, "sim.training_interval"),
        ({"sim": {"accuracy_interval": 0}}, "sim.accuracy_interval"),
        ({"sim": {"test_samples": 20_000}}, "sim.test_samples"),
        ({"sim": {"ticks": 4000}}, "sim.ticks"),
        ({"sim": {"training_interval": [8]}}, "sim.training_interval"),
    ],
)
def test_a_malformed_sim_section_is_an_error_naming_the_field(change: dict, path: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**SMALL_DFL, **change})
    assert any(found.startswith(path) for found in caught.value.paths), caught.value.paths


def test_the_spec_round_trips_with_its_sim_section() -> None:
    spec = small_spec()
    assert parse_spec(spec_to_dict(spec)) == spec
    assert spec.sim.training_interval == (4, 6)


def test_the_blade_fl_simulator_refuses_faults_before_writing_anything(
    tmp_path: Path, data_dir: Path
) -> None:
    spec = parse_spec(
        {
            "name": "blade-faults",
            "seed": 1,
            "protocol": "blade-fl",
            "duration": 60,
            "model": "mlp",
            "dataset": "mnist",
            "nodes": {"count": 3},
            "blade": {"rounds": 2, "t_sum": 20, "alpha": 1, "beta": 5, "dataset_size": 64},
            "faults": [{"at": 10, "kind": "crash", "nodes": [1], "restart_after": 5}],
        }
    )
    with pytest.raises(SpecError) as refused:
        simulate(spec, tmp_path / "blade", progress=False, data_dir=data_dir)
    assert refused.value.paths == ["faults"]
    assert "--runtime local or docker" in str(refused.value)
    assert not (tmp_path / "blade").exists()
