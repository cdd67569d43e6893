"""Every random stream of an experiment, named once: (experiment seed, purpose, node index).

A spec means one experiment in every runtime only if every runtime draws the same random numbers
for the same purpose. So no module seeds a generator on its own: it asks here for the stream of
its purpose, and the simulator, a node process and a container get identical draws. Streams are
independent of each other (NumPy's SeedSequence spawns them from distinct entropy words), so
drawing one more sample for one purpose never shifts another purpose's numbers, and adding a
node never changes the streams of the nodes before it.

Node identities are derived here too: by default a node's signing key is a function of (seed,
index), so one spec gives the same addresses in the simulator, in processes and in containers.
That is right for a testbed, where a run must be repeatable and nothing of value is signed, and
wrong for a deployment, where anyone who reads the spec could sign as any node: a spec asks for
fresh keys there (`identity: random`).
"""

from __future__ import annotations

import enum
import hashlib

import numpy as np


class Purpose(enum.IntEnum):
    """What a stream is for; the value is part of the stream's entropy, so never reuse one."""

    LABEL_WEIGHTS = 1  # the partition's per-node label distributions
    TRAIN_STREAM = 2  # the samples a node is given to train on (injection, or the sim's stream)
    LOCAL_DATASETS = 3  # BLADE-FL's fixed local datasets
    TOPOLOGY = 4  # a random peer graph
    BEHAVIOUR = 5  # what a node's behaviour draws (noise, shuffled labels, random inputs)
    LOCAL_TEST = 6  # which of its own samples a node tests a model on
    TEST_STREAM = 7  # the simulator's per-node test samples, drawn by the node's label weights
    SCHEDULE = 8  # the simulator's training times
    RECORD = 9  # the simulator's accuracy records on the common test set
    TEST_SET = 10  # the orchestrator's common test set
    INITIAL_MODEL = 11  # the weights every node of the experiment starts from
    NETWORK_FAULT = 12  # which messages a node's injected loss drops, and its jitter


# How many coordinates each purpose's streams take (the node index, and a record's tick). A
# stream's entropy is the words [seed, purpose, *index], and NumPy pads entropy with zeros, so a
# purpose used with two arities could give one stream twice: each purpose has exactly one.
ARITY = {
    Purpose.LABEL_WEIGHTS: 0,
    Purpose.TRAIN_STREAM: 1,
    Purpose.LOCAL_DATASETS: 0,
    Purpose.TOPOLOGY: 0,
    Purpose.BEHAVIOUR: 1,
    Purpose.LOCAL_TEST: 1,
    Purpose.TEST_STREAM: 1,
    Purpose.SCHEDULE: 1,
    Purpose.RECORD: 2,
    Purpose.TEST_SET: 0,
    Purpose.INITIAL_MODEL: 0,
    Purpose.NETWORK_FAULT: 1,
}
MAX_SEED = 2**32 - 1  # one entropy word: a larger seed would spill into the purpose's place


def sequence(seed: int, purpose: Purpose, *index: int) -> np.random.SeedSequence:
    """The SeedSequence of one stream; `index` is the node index and any further coordinates."""
    if not 0 <= seed <= MAX_SEED or any(not 0 <= i <= MAX_SEED for i in index):
        raise ValueError(f"seeds and indices are in 0..{MAX_SEED}, not {seed} / {index}")
    purpose = Purpose(purpose)
    if len(index) != ARITY[purpose]:
        raise ValueError(
            f"{purpose.name} streams take {ARITY[purpose]} coordinate(s), not {len(index)}"
        )
    return np.random.SeedSequence([seed, int(purpose), *index])


def stream(seed: int, purpose: Purpose, *index: int) -> np.random.Generator:
    """A fresh generator for (seed, purpose, index...): the same numbers in every runtime."""
    return np.random.default_rng(sequence(seed, purpose, *index))


def integer(seed: int, purpose: Purpose, *index: int) -> int:
    """One 63-bit integer of the stream, for APIs that take an int seed (torch, SampleStream)."""
    low, high = (int(word) for word in sequence(seed, purpose, *index).generate_state(2))
    return (low | high << 32) >> 1  # the same on every byte order


def identity_seed(seed: int, index: int) -> bytes:
    """The bytes node `index`'s signing key is derived from (see NodeKey.from_seed)."""
    return hashlib.sha256(f"dfl-testbed/identity/{seed}/{index}".encode()).digest()
