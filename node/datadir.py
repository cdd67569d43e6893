"""What a node's data directory holds, named once for the node that writes it and the run report
that reads it back (orchestrator/report/):

    DATA_DIR/chain.sqlite   the chain store (node/ledger/store.py), with the signed DFL
                            draft not yet finalized, so that a restart finalizes it; a
                            FedAvg node has no chain and writes none
    DATA_DIR/model.safetensors
                            the node's model, replaced atomically at every aggregation and on
                            a clean stop, so that a restarted node resumes from it
                            (node/host/checkpoint.py)
    DATA_DIR/profile.json   the profiler's snapshot: CPU seconds by (task, category), the
                            process's own CPU seconds, the profiled total
    DATA_DIR/rounds.jsonl   BLADE-FL and FedAvg: one line per round (BLADE-FL: per appended
                            block), with its resemblance table (node/host/resemblance.py)
    DATA_DIR/samples.json   the digest of the first samples the node trained on, which is
                            how two runtimes show that they fed a node the same data

profile.json's entries name their task and category from the profiler's closed sets, so those are
here too (node/service/profiler.py enforces them). The chain store's file name stays where it is
enforced, the store, and is only re-exported, so that each is defined once.
"""

from __future__ import annotations

import os
from pathlib import Path

from node.ledger.store import STORE_FILE

__all__ = [
    "CATEGORIES",
    "CHECKPOINT_FILE",
    "PROFILE_FILE",
    "ROUNDS_FILE",
    "SAMPLES_FILE",
    "STORE_FILE",
    "TASKS",
    "replace_text",
]

CHECKPOINT_FILE = "model.safetensors"
PROFILE_FILE = "profile.json"
ROUNDS_FILE = "rounds.jsonl"
SAMPLES_FILE = "samples.json"

TASKS: tuple[str, ...] = (
    # DFL (paper Table 6)
    "generate_transaction",
    "receive_transaction",
    "update_model",
    "generate_block",
    # BLADE-FL
    "train",
    "mine",
    "verify_block",
    # FedAvg (its training is BLADE-FL's "train", its averaging "update_model"): the rounds'
    # coordination, taking in the clients' models and sending the global model
    "aggregate",
    # what the node does for the testbed rather than the protocol: the orchestrator's model
    # fetches, status and metrics, sample injection, control calls, the idle event loop
    "observe",
    # anything else: peer changes, checkpoints
    "other",
)
CATEGORIES: tuple[str, ...] = ("ml", "blockchain", "network")


def replace_text(path: Path, text: str) -> None:
    """Writes `path` whole or not at all (a sibling file, then a rename): a reader of the data
    directory, the probe or the report, never sees half a file, even of a killed node."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)
