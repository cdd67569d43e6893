"""One spec, two runtimes, one experiment: `dfl simulate` and `dfl run --runtime local` compared.

The same short spec (four nodes on a ring, Dirichlet 0.5, one lazy node, seed 7) runs in the tick
simulator and as four node processes. Read from the two run directories, the experiments must be
the same one: the same genesis, the same node addresses, the same edges, the same first samples
fed to every node, the same initial model; and the spec a chain prints reproduces its genesis.

An aggregation plugin that records what it is handed, registered under the aggregator entry
point group by a distribution on PYTHONPATH (as a third-party package would be), must be given
the same types, the same kind of generator ids and a self-accuracy computed the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.datadir import SAMPLES_FILE
from node.host.genesis import initial_learner
from node.learning.codec import encode_f32le
from node.ledger.hashing import model_digest
from node.ledger.store import ChainStore
from orchestrator.genesis import spec_genesis
from orchestrator.spec import parse_yaml
from tests.support import assert_audit_passes

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_BATCH = 50  # a self-accuracy on the node's own test sample is a multiple of 1/50
SPEC = {
    "name": "one-code-path",
    "protocol": "dfl",
    "seed": 7,
    "duration": 24,
    "model": "mlp",
    "dataset": "mnist",
    "nodes": {
        "count": 4,
        "distribution": "dirichlet:0.5",
        "injection_rate": 128,
        "behaviours": {3: {"name": "lazy", "options": {"variance": 0.0001}}},
    },
    "topology": {"kind": "ring"},
    "dfl": {
        "fedavg_buffer": 2,
        "transactions_per_block": 4,
        "test_batch": TEST_BATCH,
        "aggregator": "recording",
    },
    # the simulator's records use 200 samples, so a self-accuracy read off them would show
    "sim": {"training_interval": [1, 2], "accuracy_interval": 4, "test_samples": 200},
    "evaluation": {"test_samples": 200, "interval": "6s"},
}
NAMES = [f"node{i}" for i in range(4)]

PLUGIN = '''
"""Records what the testbed hands an aggregator, then averages like FedAvg."""
import json
import os

import numpy as np


def _kind(value):
    if isinstance(value, np.ndarray):
        return ["ndarray", str(value.dtype), list(value.shape)]
    return [type(value).__name__]


class Recording:
    def update_model(self, current, self_accuracy, received, reputation):
        line = {
            "current": _kind(current),
            "self_accuracy": self_accuracy,
            "self_accuracy_type": type(self_accuracy).__name__,
            "received": [
                [_kind(r.model), type(r.accuracy).__name__, type(r.generator).__name__]
                for r in received
            ],
            "generators": [r.generator for r in received],
            "reputation": type(reputation).__name__,
        }
        path = os.path.join(os.environ["RECORDING_DIR"], f"{os.getpid()}.jsonl")
        with open(path, "a") as out:
            out.write(json.dumps(line) + "\\n")
        return np.mean([current, *[r.model for r in received]], axis=0).astype(np.float32)
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A distribution that registers `recording` in the aggregator entry point group."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "recording_plugin.py").write_text(PLUGIN)
    info = root / "recording_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: recording-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[dfl_testbed.aggregators]\nrecording = recording_plugin:Recording\n"
    )
    return root


def dfl(args: list[str], *, plugin: Path, records: Path) -> str:
    """Runs the CLI with the plugin installed; returns what it printed."""
    records.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(plugin), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path, RECORDING_DIR=str(records))
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert done.returncode == 0, f"dfl {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, plugin_path: Path) -> dict[str, Path]:
    """The spec run by each runtime; returns the two run directories (and records beside)."""
    base = tmp_path_factory.mktemp("one-code-path")
    spec_file = base / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    sim, local = base / "sim", base / "local"
    dfl(
        ["simulate", str(spec_file), "--out", str(sim), "--quiet"],
        plugin=plugin_path,
        records=base / "sim-records",
    )
    dfl(
        ["run", str(spec_file), "--runtime", "local", "--out", str(local), "--quiet"],
        plugin=plugin_path,
        records=base / "local-records",
    )
    assert_audit_passes(sim, local)
    return {"sim": sim, "local": local, "base": base, "plugin": plugin_path}


def chains(run: Path) -> dict[str, tuple[bytes, bytes, Any]]:
    """Per node: (genesis digest, owner address, genesis body)."""
    out = {}
    for name in NAMES:
        with ChainStore.open(run / "nodes" / name) as store:
            out[name] = (store.genesis.digest, store.owner, store.genesis.body)
    return out


def first_samples(run: Path) -> dict[str, str]:
    return {
        name: json.loads((run / "nodes" / name / SAMPLES_FILE).read_text())["sha256"]
        for name in NAMES
    }


def records(directory: Path) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(directory.glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def test_both_runtimes_run_the_same_experiment(runs: dict[str, Path]) -> None:
    sim, local = chains(runs["sim"]), chains(runs["local"])

    genesis = {digest for digest, _, _ in [*sim.values(), *local.values()]}
    assert len(genesis) == 1, "every node of both runs shares one genesis"
    assert {name: owner for name, (_, owner, _) in sim.items()} == {
        name: owner for name, (_, owner, _) in local.items()
    }
    assert len({owner for _, owner, _ in sim.values()}) == 4

    sim_edges = json.loads((runs["sim"] / "summary.json").read_text())["edges"]
    local_edges = json.loads((runs["local"] / "run.json").read_text())["edges"]
    assert sim_edges == local_edges == [[0, 1], [0, 3], [1, 2], [2, 3]]

    assert first_samples(runs["sim"]) == first_samples(runs["local"])
    assert len(set(first_samples(runs["sim"]).values())) == 4, "each node has its own data"

    body = sim["node0"][2]
    initial = initial_learner("mlp", 7)
    assert body.initial_model_digest == model_digest(encode_f32le(initial.weights()))


def test_the_spec_a_chain_prints_reproduces_its_genesis(
    runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(runs["plugin"]))  # the spec names the plugin's aggregator
    printed = dfl(
        ["chain", "spec", str(runs["local"] / "nodes" / "node2")],
        plugin=runs["plugin"],
        records=runs["base"] / "chain-spec-records",
    )
    spec = parse_yaml(printed, "dfl chain spec")
    genesis = spec_genesis(spec)
    with ChainStore.open(runs["sim"] / "nodes" / "node0") as store:
        assert genesis.digest == store.genesis.digest


def test_the_aggregator_plugin_is_handed_the_same_inputs_in_both_runtimes(
    runs: dict[str, Path],
) -> None:
    addresses = {owner.hex() for _, owner, _ in chains(runs["sim"]).values()}
    seen = {}
    for runtime in ("sim", "local"):
        lines = records(runs["base"] / f"{runtime}-records")
        assert len(lines) >= 8, f"{runtime}: the plugin was called {len(lines)} times"
        seen[runtime] = {
            json.dumps([line["current"], line["self_accuracy_type"], line["received"][0]])
            for line in lines
        }
        for line in lines:
            assert set(line["generators"]) <= addresses, "generators are node addresses"
            share = line["self_accuracy"] * TEST_BATCH
            assert abs(share - round(share)) < 1e-6, (
                f"{runtime}: self_accuracy {line['self_accuracy']} is not measured on the "
                f"node's own {TEST_BATCH}-sample test draw"
            )
    assert (
        seen["sim"]
        == seen["local"]
        == {
            json.dumps(
                [
                    ["ndarray", "float32", [203530]],
                    "float",
                    [["ndarray", "float32", [203530]], "float", "str"],
                ]
            )
        }
    )
