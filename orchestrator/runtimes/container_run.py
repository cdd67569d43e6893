"""How a container runtime's run ends, the same for docker and swarm: run.json, then cleanup.

Both runtimes record the same figures of their containers (health-check counts, the spec's
resource limits, the calibrated proof-of-work difficulty) beside what only one of them knows,
so the report reads one shape of run.json whichever ran the nodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.driver import write_run_info


def finish_container_run(run: Any, out: Path, runtime: str, extra: dict[str, Any]) -> None:
    """run.json with the containers' shared figures plus `extra`, then the run's exporter and
    everything the run created on the engine go (unless the run keeps them)."""
    record: dict[str, Any] = {
        **extra,
        "health": {name: dict(counts) for name, counts in run.health.items()},
        "resources": run.spec.resources.model_dump(),
    }
    if run.pow_difficulty is not None:
        record["pow_difficulty"] = run.pow_difficulty
    write_run_info(run, out, runtime, run.peer_names(), record)
    run.exporter.close()
    run.remove()
