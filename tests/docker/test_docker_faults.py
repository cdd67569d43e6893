"""A spec's faults carried out on containers: experiments/faults-dfl.yaml, shortened.

The crash is `docker kill` and its restart starts the same container on the same volume and the
same fixed address, the pause is `docker pause`; latency and the partition are switched inside
the nodes by the orchestrator's signed SetNetworkFault, as on every runtime. The run must end
cleanly (a container killed or paused on purpose is no failure), with every moment in
faults.jsonl, every chain valid, the crashed node back and making blocks, and nothing left.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
from pathlib import Path

import pytest

from node.ledger.store import ChainStore
from orchestrator.datasets import DATA_DIR_ENV, ensure_dataset
from orchestrator.runtimes.docker import (
    RUN_LABEL,
    DockerRun,
    leftovers,
    remove_run,
    run_docker,
)
from orchestrator.spec import load_spec, with_overrides
from tests.support import assert_audit_passes

pytestmark = pytest.mark.docker

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = REPO_ROOT / "experiments" / "faults-dfl.yaml"
DURATION = 100.0
CRASHED = 1
FAULTS = [
    {"at": "10s", "kind": "latency", "nodes": [3, 4], "delay": "200ms", "jitter": "50ms",
     "duration": "20s"},
    {"at": "20s", "kind": "crash", "nodes": [CRASHED], "restart_after": "15s"},
    {"at": "50s", "kind": "partition", "groups": [[0, 1, 2], [3, 4, 5]], "duration": "25s"},
    {"at": "80s", "kind": "pause", "nodes": [5], "duration": "10s"},
]  # fmt: skip


@pytest.fixture
def mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestrator (this process) injects MNIST: prepared once, shared with other tests."""
    data = Path(os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data")
    ensure_dataset("mnist", data)
    monkeypatch.setenv(DATA_DIR_ENV, str(data))


def test_faults_happen_on_containers_and_the_network_survives_them(
    engine, mnist: None, tmp_path: Path
) -> None:
    spec = with_overrides(
        load_spec(SPEC),
        {
            "name": "docker-faults",
            "duration": DURATION,
            "evaluation.interval": "5s",
            "evaluation.test_samples": 300,
            "faults": FAULTS,
        },
    )
    out = tmp_path / "run"
    began = time.monotonic()
    run = run_docker(spec, out, progress=True)  # RunFailed, if a fault looked like a failure
    print(f"run of {DURATION:.0f} s took {time.monotonic() - began:.0f} s in all")

    assert leftovers(engine, run.run_id) == []
    assert run.down == set(), "a node was left down or paused"

    lines = [json.loads(line) for line in (out / "faults.jsonl").read_text().splitlines()]
    moments = [(line["kind"], line["phase"]) for line in lines]
    assert sorted(moments) == sorted(
        (fault["kind"], phase) for fault in FAULTS for phase in ("begin", "end")
    ), moments
    for line in lines:  # each carried out on time
        fault = next(f for f in spec.faults if f.kind == line["kind"])
        expected = fault.start if line["phase"] == "begin" else fault.end
        assert abs(line["time_s"] - expected) < 5.0, line

    heights = {}
    for node in run.nodes:  # every chain, copied out of its volume, verifies
        assert (node.data_dir / "node.log").stat().st_size > 0, node.name
        with ChainStore.open(node.data_dir) as store:
            heights[node.name] = store.height
    print(f"chain heights at the end: {heights}")

    crashed = f"node{CRASHED}"
    crash = next(line for line in lines if line["kind"] == "crash" and line["phase"] == "begin")
    at_crash = crash["chain_heights"].get(crashed, 0)
    assert heights[crashed] >= at_crash, "blocks of the crashed node were lost"
    later = [line["chain_heights"] for line in lines if line["time_s"] > crash["time_s"] + 20]
    answered = [found[crashed] for found in later if crashed in found]
    assert answered, f"{crashed} did not answer after its restart: {later}"
    print(f"{crashed}: height {at_crash} at the crash, then {answered}, {heights[crashed]} last")
    assert all(height > 0 for height in heights.values()), heights
    info = json.loads((out / "run.json").read_text())
    assert info["runtime"] == "docker" and len(info["nodes"]) == spec.nodes.count
    assert_audit_passes(out)


def test_a_run_stopped_inside_a_pause_thaws_the_node_and_closes_its_chain(
    engine, mnist: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a container is paused. The fault runner resumes what it paused when it
    stops; here that resume is made to do nothing (as if the run had ended before the runner
    got to it), so the container is still frozen when the run stops its nodes, which must thaw
    it first: it then closes its chain and exits cleanly (the containers are kept here, to read
    their exit codes)."""
    name = f"docker-faults-stop-{secrets.token_hex(3)}"
    spec = with_overrides(
        load_spec(SPEC),
        {
            "name": name,
            "nodes.count": 2,
            "topology.kind": "full",
            "duration": 300,
            "faults": [{"at": "3s", "kind": "pause", "nodes": [0], "duration": "200s"}],
        },
    )
    out = tmp_path / "run"
    resumed: list[int] = []
    monkeypatch.setattr(DockerRun, "resume", lambda run, index: resumed.append(index))
    interrupted = threading.Event()

    def interrupt_inside_the_pause() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            path = out / "faults.jsonl"
            if path.is_file() and '"begin"' in path.read_text():
                time.sleep(2)
                interrupted.set()
                os.kill(os.getpid(), signal.SIGINT)  # the run's own handler: a clean stop
                return
            time.sleep(0.5)

    threading.Thread(target=interrupt_inside_the_pause, daemon=True).start()
    try:
        run = run_docker(spec, out, progress=False, keep=True)
        assert interrupted.is_set(), "the run ended before its pause began"
        assert run.elapsed is not None and run.elapsed < 100, run.elapsed
        assert resumed == [0], "the fault runner did not resume the pause when it stopped"
        assert run.down == set(), "the paused node was not thawed before its stop"
        for node in run.nodes:
            node.container.reload()
            state = node.container.attrs["State"]
            assert state["Status"] == "exited" and state["ExitCode"] == 0, (node.name, state)
            with ChainStore.open(node.data_dir):
                pass
        phases = [json.loads(line)["phase"] for line in (out / "faults.jsonl").open()]
        assert phases == ["begin"], phases
    finally:
        run_ids = {
            container.labels[RUN_LABEL]
            for container in engine.containers.list(
                all=True, filters={"label": f"dfl-testbed.experiment={name}"}
            )
        }
        for run_id in run_ids:
            remove_run(engine, run_id)
    assert run_ids and all(leftovers(engine, run_id) == [] for run_id in run_ids)
