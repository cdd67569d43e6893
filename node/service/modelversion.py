"""What the orchestrator's model fetches compare: has the node's model changed since?

The orchestrator samples every node every few seconds, and 1.7 MB each time was most of an idle
node's CPU; a version lets a node answer "unchanged" instead. It changes with every ML job that
may change the model (a training, a merge, a checkpoint restored), and a process starts a new
series (a restart may resume another model than the one last fetched).
"""

from __future__ import annotations

import os

# ML jobs that read the model without changing it; any other job may change it.
MODEL_READING_TASKS = frozenset({"receive_transaction", "observe"})


class ModelVersion:
    def __init__(self) -> None:
        self._epoch = os.urandom(8)
        self._changes = 0

    def ml_job(self, task: str) -> None:
        """An ML job of profiler task `task` is about to run."""
        if task not in MODEL_READING_TASKS:
            self._changes += 1

    @property
    def current(self) -> bytes:
        return self._epoch + self._changes.to_bytes(8, "big")
