"""A spec's fault schedule carried out on local processes: a crash with restart, a pause,
latency, loss and a partition, each at its time, with the nodes learning through them.

The network faults are the nodes' own (node/service/netfault.py), switched by the orchestrator's
signed SetNetworkFault; the process faults are SIGKILL and a restart on the same data directory,
SIGSTOP and SIGCONT. What each moment did is in faults.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.ledger.store import ChainStore
from orchestrator.spec import load_spec, with_overrides
from tests.integration.live import alive, running, scrape, status, total, wait_for

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DURATION = 75.0
FAULTS = [
    {"at": "10s", "kind": "latency", "nodes": [3], "delay": "200ms", "jitter": "20ms",
     "duration": "20s"},
    {"at": "10s", "kind": "loss", "nodes": [0], "probability": 0.2, "duration": "20s"},
    {"at": "15s", "kind": "crash", "nodes": [1], "restart_after": "15s"},
    {"at": "35s", "kind": "pause", "nodes": [2], "duration": "8s"},
    {"at": "48s", "kind": "partition", "groups": [[0, 1], [2, 3]], "duration": "15s"},
]  # fmt: skip


def test_every_scheduled_fault_happens_and_the_network_survives_it(tmp_path: Path) -> None:
    spec = with_overrides(
        load_spec(REPO_ROOT / "experiments" / "smoke-dfl.yaml"),
        {
            "duration": DURATION,
            "dfl.transactions_per_block": 4,
            "dfl.fedavg_buffer": 4,
            "evaluation.interval": "5s",
            "evaluation.test_samples": 300,
            "faults": FAULTS,
        },
    )
    with running(spec, tmp_path / "run") as network:
        nodes = network.nodes
        killed_pid = nodes[1].process.pid
        wait_for(lambda: not network.driving, DURATION + 90, "the run to end", network)
        network.check()
        assert all(alive(node) for node in nodes), "a node did not come back from its fault"
        assert nodes[1].process.pid != killed_pid, "node1 was not restarted"
        samples = {node.name: scrape(node) for node in nodes}
        heights = {node.name: status(node).chain_height for node in nodes}

    lines = [
        json.loads(line) for line in (tmp_path / "run" / "faults.jsonl").read_text().splitlines()
    ]
    moments = [(line["kind"], line["phase"]) for line in lines]
    assert sorted(moments) == sorted(
        (fault["kind"], phase) for fault in FAULTS for phase in ("begin", "end")
    ), moments
    for line, (kind, phase) in zip(lines, moments, strict=True):
        fault = next(f for f in FAULTS if f["kind"] == kind)
        expected = float(str(fault["at"]).rstrip("s"))
        if phase == "end":
            span = fault.get("duration") or fault.get("restart_after")
            expected += float(str(span).rstrip("s"))
        assert abs(line["time_s"] - expected) < 3.0, line  # carried out on time

    def counted(node: str, direction: str, fate: str) -> float:
        return total(
            samples[node], "dfl_network_fault_messages_total", direction=direction, fate=fate
        )

    assert counted("node3", "out", "delayed") > 0, "latency on node3 delayed nothing"
    assert counted("node0", "out", "dropped") + counted("node0", "in", "dropped") > 0
    # node3 had latency, never loss: what it dropped, the partition cut
    assert counted("node3", "out", "dropped") + counted("node3", "in", "dropped") > 0

    crash = next(line for line in lines if line["kind"] == "crash" and line["phase"] == "begin")
    for node in nodes:  # nothing finalized was lost, and every chain verifies
        with ChainStore.open(node.data_dir) as store:
            assert store.height == heights[node.name]
        assert heights[node.name] >= crash["chain_heights"].get(node.name, 0)
    assert heights["node1"] > crash["chain_heights"]["node1"], "node1 made no block after it"


# --- a partition of a ring -----------------------------------------------------------------------

SPLIT_AT, SPLIT_FOR = 25.0, 30.0
HALVES = [[0, 1, 2], [3, 4, 5]]  # the ring 0-1-2-3-4-5-0 loses its links 2-3 and 5-0


def test_a_split_ring_keeps_finalizing_in_both_halves_and_heals(tmp_path: Path) -> None:
    """DFL needs no global agreement: each half goes on finalizing blocks while no receipt comes
    across the cut (the chains say who measured what, and when), and after the split heals,
    models cross the cut again."""
    spec = with_overrides(
        load_spec(REPO_ROOT / "experiments" / "smoke-dfl.yaml"),
        {
            "nodes.count": 6,
            "nodes.injection_rate": 32,
            "topology.kind": "ring",
            "duration": SPLIT_AT + SPLIT_FOR + 30,
            "dfl.transactions_per_block": 2,
            "dfl.fedavg_buffer": 2,
            "evaluation.interval": "10s",
            "evaluation.test_samples": 200,
            "faults": [
                {"at": SPLIT_AT, "kind": "partition", "groups": HALVES, "duration": SPLIT_FOR}
            ],
        },
    )
    with running(spec, tmp_path / "run") as network:
        nodes = network.nodes
        wait_for(lambda: not network.driving, spec.duration_seconds + 90, "the run", network)
        network.check()
        began = network.run.started_at
    address_to_index = {node.address: node.index for node in nodes}
    half_of = {i: h for h, half in enumerate(HALVES) for i in half}
    split = (began + SPLIT_AT + 1.0, began + SPLIT_AT + SPLIT_FOR)  # 1 s for the switch
    during = {0: 0, 1: 0}
    crossed_after = 0
    for node in nodes:
        with ChainStore.open(node.data_dir) as store:
            for height in range(1, store.height + 1):
                block = store.block(height)
                for tx in block.body.transactions:
                    for receipt in tx.receipts:
                        creator = address_to_index[receipt.body.creator.address.hex()]
                        at = receipt.body.create_time_ms / 1000
                        across = half_of[creator] != half_of[node.index]
                        if split[0] <= at <= split[1]:
                            assert not across, (
                                f"{node.name}: a receipt of node{creator} in the split"
                            )
                            during[half_of[node.index]] += 1
                        elif at > split[1] + 1 and across:
                            crossed_after += 1
    assert during[0] > 0 and during[1] > 0, f"a half finalized nothing in the split: {during}"
    assert crossed_after > 0, "no model crossed the cut after it healed"


# --- BLADE-FL: a client down for rounds ----------------------------------------------------------

BLADE_ROUNDS = 12  # about 5 s each here: the crash ends with rounds still to go


def test_a_blade_client_crashed_for_rounds_is_waited_for_then_skipped_and_catches_up(
    tmp_path: Path,
) -> None:
    """BLADE-FL's rounds are synchronous: with a client down, the others wait for its model up to
    collect_timeout, then mine the round without it; restarted, it fetches the blocks it missed
    (its model resumed from its checkpoint) and every chain ends the same and verified."""
    spec = with_overrides(
        load_spec(REPO_ROOT / "experiments" / "smoke-blade.yaml"),
        {
            "blade.rounds": BLADE_ROUNDS,
            "blade.t_sum": None,
            "blade.alpha": None,
            "blade.local_iterations": 2,
            "blade.beta": "1s",
            "blade.collect_timeout": "8s",
            "duration": "5m",
            "evaluation.interval": "3s",
            "evaluation.test_samples": 300,
            "faults": [{"at": "15s", "kind": "crash", "nodes": [3], "restart_after": "12s"}],
        },
    )
    with running(spec, tmp_path / "run") as network:
        wait_for(lambda: not network.driving, 300, "every client to hold every block", network)
        network.check()
        nodes = network.nodes
    chains = []
    for node in nodes:
        with ChainStore.open(node.data_dir) as store:  # re-verifies every block
            blocks = [store.block(height) for height in range(1, store.height + 1)]
        assert len(blocks) == BLADE_ROUNDS, f"{node.name} holds {len(blocks)} blocks"
        chains.append([block.hash for block in blocks])
    assert all(chain == chains[0] for chain in chains), "the chains differ"
    missing = [len(block.transactions) for block in blocks if len(block.transactions) < len(nodes)]
    assert missing, "no round went on without the crashed client"
