"""FedAvg nodes as real processes on 127.0.0.1 (the local runtime), seen from outside.

Four nodes run the FedAvg smoke experiment, shortened, while the tests send the aggregator
messages it must refuse over its real gRPC port. Then the run must still have completed: every
node ends on the same global model, the wire carried FedAvg's cost (one upload per client and
one global model per client a round), nothing was charged to a chain, and the report reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.datadir import ROUNDS_FILE, STORE_FILE
from node.host.checkpoint import Checkpoint
from node.host.genesis import fedavg_extras
from node.ledger.errors import RejectReason
from node.ledger.records import parameter_count
from node.protocol.framing import frame_experiment_model
from orchestrator.datasets import DATA_DIR_ENV, ensure_dataset
from orchestrator.genesis import spec_genesis
from orchestrator.sim.evaluation import BatchEvaluator, Job
from orchestrator.spec import ExperimentSpec, load_spec, with_overrides
from tests.integration.live import (
    LiveNetwork,
    channel,
    rejected,
    running,
    scrape,
    status,
    submit,
    total,
    wait_for,
)
from tests.support import assert_refused, finished_summary

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 5
OVERRIDES = {
    "name": "fedavg-it",
    "fedavg.rounds": ROUNDS,
    "fedavg.local_epochs": 3,
    "fedavg.round_timeout": "60s",
    "nodes.injection_rate": 128,
    "evaluation.interval": "2s",
    "evaluation.test_samples": 500,
    "duration": "5m",
}
AGGREGATOR = 0


@pytest.fixture(scope="module")
def spec() -> ExperimentSpec:
    return with_overrides(load_spec(REPO_ROOT / "experiments" / "smoke-fedavg.yaml"), OVERRIDES)


@pytest.fixture(scope="module")
def network(
    spec: ExperimentSpec, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveNetwork]:
    with running(spec, tmp_path_factory.mktemp("fedavg-run")) as live:
        yield live


def genesis_of(spec: ExperimentSpec) -> Any:
    """The genesis every node derives, built here from the spec (orchestrator/genesis.py)."""
    section = spec.fedavg
    assert section is not None
    return spec_genesis(
        spec,
        extra=fedavg_extras(
            rounds=section.rounds,
            local_epochs=section.local_epochs,
            dataset_size=section.dataset_size,
            batch_size=section.batch_size,
        ),
    )


def rounds_done(network: LiveNetwork, index: int) -> float:
    return total(scrape(network.nodes[index]), "dfl_rounds_total")


def refuse(network: LiveNetwork, payload: bytes, reason: RejectReason) -> None:
    with channel(network.nodes[AGGREGATOR], own_connection=True) as ch:
        error = submit(ch, "SubmitTransaction", payload)
    assert_refused(error, reason, "a message")


def test_the_nodes_and_the_spec_derive_one_genesis(
    network: LiveNetwork, spec: ExperimentSpec
) -> None:
    digest = genesis_of(spec).digest
    assert all(status(node).genesis_digest == digest for node in network.nodes)
    assert all(not (node.data_dir / STORE_FILE).exists() for node in network.nodes)  # no chain


def test_bad_messages_to_the_aggregator_are_refused_with_their_reason_and_counted(
    network: LiveNetwork, spec: ExperimentSpec
) -> None:
    genesis = genesis_of(spec)
    size = 4 * parameter_count(genesis)
    stranger = b"\x5a" * 20
    before = rejected(scrape(network.nodes[AGGREGATOR]))
    refuse(network, b"\x00\x01\x02", RejectReason.MALFORMED)
    other_experiment = frame_experiment_model(b"\x07" * 32, stranger, bytes(size), round=1)
    refuse(network, other_experiment, RejectReason.GENESIS_MISMATCH)
    # the right experiment and size, but we are not one of the aggregator's clients
    not_a_client = frame_experiment_model(genesis.digest, stranger, bytes(size), round=1)
    refuse(network, not_a_client, RejectReason.WRONG_CREATOR)
    after = rejected(scrape(network.nodes[AGGREGATOR]))
    for reason in (
        RejectReason.MALFORMED,
        RejectReason.GENESIS_MISMATCH,
        RejectReason.WRONG_CREATOR,
    ):
        assert after[reason.label] == before[reason.label] + 1, reason.label


def test_every_node_completes_every_round(network: LiveNetwork) -> None:
    wait_for(
        lambda: all(rounds_done(network, i) >= ROUNDS for i in range(len(network.nodes))),
        300,
        f"all {ROUNDS} rounds on every node",
        network,
    )


def test_the_wire_carried_fedavgs_cost_and_nothing_else(
    network: LiveNetwork, spec: ExperimentSpec
) -> None:
    genesis = genesis_of(spec)
    address = status(network.nodes[AGGREGATOR]).address  # every node's is this long
    frame = len(frame_experiment_model(genesis.digest, address, b"", round=1))
    model = 4 * parameter_count(genesis) + frame

    def sent() -> dict[int, float]:
        return {
            i: total(scrape(node), "dfl_bytes_sent_total")  # every kind: only models travel
            for i, node in enumerate(network.nodes)
        }

    clients = [i for i in range(len(network.nodes)) if i != AGGREGATOR]
    # the aggregator counts a send once the client has answered it: wait for the last ones
    final = wait_for(
        lambda: (now := sent())[AGGREGATOR] >= len(clients) * ROUNDS * model and now,
        60,
        "the last global models counted as sent",
        network,
    )
    for i in clients:  # one upload a round, to the aggregator only
        assert final[i] == ROUNDS * model, (i, final)
    # one global model a round to each of the three clients: 3x a client's upload
    assert final[AGGREGATOR] == len(clients) * final[clients[0]], final


@pytest.fixture(scope="module")
def summary(network: LiveNetwork) -> dict[str, Any]:
    return finished_summary(network)


def test_every_node_ends_on_the_same_global_model(
    network: LiveNetwork, spec: ExperimentSpec, summary: dict[str, Any]
) -> None:
    genesis = genesis_of(spec)
    saved = [Checkpoint(node.data_dir, genesis).load() for node in network.nodes]
    assert all(s is not None and s.metadata["round"] == str(ROUNDS) for s in saved)
    first = saved[0].weights  # type: ignore[union-attr]
    assert all(np.array_equal(s.weights, first) for s in saved)  # type: ignore[union-attr]
    # and that model learned: the whole test set, measured here as the simulator measures it
    test = ensure_dataset(spec.dataset, os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data")
    ((_, accuracy),) = BatchEvaluator(spec.model).losses(
        [Job(first, test.test_images, test.test_labels)]
    )
    assert accuracy > 0.8, accuracy
    for node in network.nodes:
        lines = (node.data_dir / ROUNDS_FILE).read_text().splitlines()
        assert [json.loads(line)["round"] for line in lines] == list(range(1, ROUNDS + 1))


def test_the_report_shows_learning_and_no_blockchain_cpu(
    network: LiveNetwork, summary: dict[str, Any]
) -> None:
    assert summary["protocol"] == "fedavg"
    report = (network.out / "report.md").read_text()
    assert "keeps no chain" in report and "no chain store (the node may have died" not in report
    for name, node in summary["nodes"].items():
        # the orchestrator's last samples (some nodes' may be a round before the last)
        assert node["final_test_accuracy"] >= 0.6, name
        assert node["blockchain_share"] == 0.0, name
        assert node["chain_verifies"] is None and node["chain_problem"] is None, name
