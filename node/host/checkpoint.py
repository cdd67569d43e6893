"""A node's model on disk, so that a node restarted on its data directory carries on from it.

The chain and the key survive a crash in the data directory; without this the model did not, and
a restarted node went back to the experiment's initial weights, undoing every aggregation it had
made (and, in DFL, sending its peers models that had forgotten everything). The node saves its
model here at every aggregation and on a clean stop, and resumes from it when it starts.

The file is `model.safetensors` (node/datadir.py), the weights by genesis layer name and shape,
so any safetensors reader can open it. Its metadata names the genesis it belongs to, which is
checked on loading beside every tensor's name, shape and dtype: a checkpoint that does not fit
the experiment's model is refused with a `CheckpointError` naming the file and what to do, never
loaded in part. The genesis itself is always built from the initial model (it must not change
across restarts), so a node loads its checkpoint only after building it.

Saving is atomic against a crash at any moment: the bytes go to a temporary file in the same
directory, are fsynced, and then `os.replace` puts them in place (and the directory is fsynced
so the rename itself is durable). A node killed mid-write leaves the previous checkpoint whole,
plus a stray `.part` file that the next save overwrites.

numpy and the codec only: the simulator and tools can read checkpoints without torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from node.datadir import CHECKPOINT_FILE
from node.learning.codec import LayerShapes, decode_safetensors, encode_safetensors
from node.ledger.errors import RecordRejected
from proto.dfl.v1 import records_pb2 as pb

GENESIS_KEY = "genesis_digest"  # the metadata entry that ties a checkpoint to its experiment
PART_SUFFIX = ".part"


class CheckpointError(Exception):
    """A checkpoint this node must not resume from: another model or experiment, or damaged."""


def genesis_shapes(genesis: pb.Genesis) -> LayerShapes:
    """The genesis layers as (name, shape): what a checkpoint of this experiment must hold."""
    return [(layer.name, tuple(layer.shape)) for layer in genesis.body.layers]


@dataclass(frozen=True)
class SavedModel:
    """A checkpoint read back: the flat weights in genesis order and the metadata saved beside."""

    path: Path
    weights: np.ndarray
    metadata: Mapping[str, str]

    def summary(self) -> str:
        """What a node resumes from, for its log: the file, when and why it was saved."""
        what = [f"saved on {self.metadata['reason']}"] if "reason" in self.metadata else []
        if "height" in self.metadata:
            what.append(f"at chain height {self.metadata['height']}")
        with contextlib.suppress(KeyError, ValueError):
            what.append(f"{time.time() - float(self.metadata['saved_at']):.0f} s ago")
        return f"{self.path} ({', '.join(what) or 'no metadata'})"


class Checkpoint:
    """`model.safetensors` in one data directory, for one experiment's genesis.

    `save` may run on any thread, but one at a time (a node saves on its single ML thread, or on
    the loop once that thread has stopped): concurrent saves would share the temporary file.
    """

    def __init__(self, data_dir: Path, genesis: pb.Genesis) -> None:
        self.path = Path(data_dir) / CHECKPOINT_FILE
        self.genesis_digest = genesis.digest.hex()
        self.shapes = genesis_shapes(genesis)

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def save(self, weights: np.ndarray, **metadata: object) -> float:
        """Replaces the checkpoint with `weights` (flat, genesis order) atomically; returns the
        seconds it took (encoding, writing and both fsyncs). `metadata` is stored as strings
        beside the genesis digest and the time, for whoever looks at the file later."""
        began = time.perf_counter()
        entries = {key: str(value) for key, value in metadata.items()}
        entries.update({GENESIS_KEY: self.genesis_digest, "saved_at": f"{time.time():.3f}"})
        write_atomically(self.path, encode_safetensors(weights, self.shapes, entries))
        return time.perf_counter() - began

    def load(self) -> SavedModel | None:
        """The saved model, None when there is none; CheckpointError when it does not fit."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._refusal(f"cannot be read ({error.strerror})") from None
        try:
            weights = decode_safetensors(data, self.shapes)
        except RecordRejected as rejected:
            problem = f"does not fit this experiment's model: {rejected.detail}"
            raise self._refusal(problem) from None
        metadata = _metadata(data)  # a header decode_safetensors has checked already
        saved_for = metadata.get(GENESIS_KEY)
        if saved_for != self.genesis_digest:
            whose = f"genesis {saved_for[:16]}" if saved_for else "no genesis it names"
            raise self._refusal(
                f"belongs to {whose}, not to this experiment's {self.genesis_digest[:16]}"
            )
        return SavedModel(self.path, weights, metadata)

    def _refusal(self, problem: str) -> CheckpointError:
        return CheckpointError(
            f"{self.path} {problem}; delete it to restart this node from the experiment's "
            "initial model, or use the data directory this node ran with"
        )


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` afterwards, or (after a crash at any point) what it held before."""
    part = path.with_name(path.name + PART_SUFFIX)
    try:
        with open(part, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Makes a rename in `directory` durable (a no-op where directories cannot be opened)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(handle)
    finally:
        os.close(handle)


def _metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors header that decode_safetensors has accepted."""
    (size,) = struct.unpack_from("<Q", data)
    header = json.loads(data[8 : 8 + size])
    return dict(header.get("__metadata__") or {})
