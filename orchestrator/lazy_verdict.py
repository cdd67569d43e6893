"""BLADE-FL's lazy clients, found from the chain: per round, who copied a peer and added noise.

The chain says which models each round's block holds (each one signed by its client, named by
the BLAKE3 digest of its weights) and in which order the rounds went. The resemblance figures
need the weights themselves, which a block does not hold; whoever supplies them (the simulator
re-running the chain's own spec, orchestrator/contributions_replay.py) is checked against those
signed digests, so no weight the chain does not name is ever used.

The figures are the ones a client writes to its rounds.jsonl, from the same function
(node/host/resemblance.py), against the same previous global model: the experiment's initial
model for round 1 (built from the genesis, checked against its initial-model digest) and after
that the average of the previous block's models, averaged by the clients' own function
(node/host/blade.py: average_models). A process run's clients already wrote these tables, so
for a run whose models cannot be re-derived they are read back from rounds.jsonl instead, but
only for rounds whose miner and models are the chain's.

The rule. A lazy client's model is a peer's model w_j plus N(0, sigma^2) noise n, so its update
is u_i = u_j + n, and the function's figures show two things no honest client shows:

  - the difference is noise-sized: difference_std (the std of w_i - w_j, which for a copy is
    sigma itself) is far above the round's honest spread. As the honest spread we take the
    median difference_std of the round's other clients (the honest ones while the lazy are a
    minority), and a ratio needs no knowledge of sigma:  spread_ratio >= SPREAD_RATIO.
  - the difference is independent of the peer's update: the copy coefficient
    c = <u_i, u_j> / |u_j|^2 = 1 + <n, u_j> / |u_j|^2 is 1 up to the noise's projection on u_j.
    For noise independent of u_j, <n, u_j> / (|n| |u_j|) has standard deviation 1 / sqrt(P)
    (P weights), so c's standard error is |n| / (|u_j| sqrt(P)), and |n| / |u_j| follows from
    the figures alone: with rho = c / update_cosine = |u_i| / |u_j|, |n|^2 / |u_j|^2 =
    rho^2 - 2c + 1. The copy test is |z| <= COPY_Z with z = (c - 1) / standard error: "near 1"
    with the tolerance the noise implies. Honest clients fail it by two orders of magnitude
    (|z| of 50 to 230 in the runs below: their differences share the common part of the
    updates, which is not independent of u_j), and so does a peer that was copied (its update
    is a small part of the noisy one, c near 0).

A client is lazy in a round when both hold. A fixed band on c would not do: when the noise is
large against the updates a copy's c strays far from 1 (0.11 to 0.97 in a simulated
four-client MLP run with sigma^2 = 0.01, |D_i| = 64), while honest IID clients of a process run
reach 0.82 to 0.95 against a lazy one's 0.63 to 0.95; in both the copy's |z| stayed below 1.6.
Over the run a client is lazy when it is flagged in at least half of the rounds it has
figures for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from node.host.blade import average_models
from node.host.genesis import initial_learner
from node.host.resemblance import Resemblance, resemblances
from node.learning.codec import decode_f32le, encode_f32le
from node.ledger.hashing import model_digest
from orchestrator.contributions_run import RunChains
from orchestrator.report.schema import RoundLog
from proto.dfl.v1 import records_pb2 as pb

COPY_Z = 4.0
SPREAD_RATIO = 3.0


@dataclass(frozen=True)
class BlockModels:
    """One round's block as the chain holds it: its models by client, named by weight digest."""

    round: int
    block_hash: str
    miner: bytes
    models: tuple[tuple[bytes, bytes], ...]  # (client address, model digest), in block order


@dataclass(frozen=True)
class RoundTable:
    """One round's resemblance figures, or why there are none."""

    round: int
    block_hash: str
    entries: tuple[Resemblance, ...]  # client / nearest as hex addresses
    source: str  # "chain+replay", "rounds.jsonl", or "" when there are none
    missing: str | None = None


@dataclass(frozen=True)
class ClientRound:
    round: int
    client: str  # node name
    nearest: str
    copy_coefficient: float
    copy_z: float  # (copy_coefficient - 1) / its standard error under "copy plus noise"
    difference_std: float
    spread_ratio: float  # difference_std / median of the round's other clients'
    lazy: bool


@dataclass(frozen=True)
class ClientVerdict:
    client: str
    rounds: int  # with figures
    flagged: int
    lazy: bool
    mean_copy_coefficient: float | None
    median_copy_z: float | None
    mean_spread_ratio: float | None


def chain_blocks(chains: RunChains) -> tuple[list[BlockModels], list[str]]:
    """The rounds of the longest chain (all clients' should be one), and where others differ."""
    longest = max(chains.stores.values(), key=lambda store: store.height)
    blocks = []
    for height, _, _ in longest.blocks():
        block = longest.block(height)
        assert isinstance(block, pb.PowBlock)
        blocks.append(
            BlockModels(
                round=height,
                block_hash=block.hash.hex(),
                miner=block.header.miner,
                models=tuple(
                    (tx.body.generator.address, tx.body.model.digest) for tx in block.transactions
                ),
            )
        )
    warnings = []
    for name, store in chains.stores.items():
        if store.height and store.head_digest.hex() != blocks[store.height - 1].block_hash:
            warnings.append(f"{name}'s chain is on another fork at height {store.height}")
    return blocks, warnings


def _shapes(genesis: pb.Genesis) -> list[tuple[str, tuple[int, ...]]]:
    return [(layer.name, tuple(layer.shape)) for layer in genesis.body.layers]


def initial_model(genesis: pb.Genesis) -> np.ndarray:
    """The model every client starts round 1 from, rebuilt from the genesis's model and seed."""
    weights = initial_learner(genesis.body.model_architecture, genesis.body.seed).weights()
    expected = genesis.body.initial_model_digest
    if expected and model_digest(encode_f32le(weights)) != expected:
        raise ValueError("the rebuilt initial model does not match the genesis's digest")
    return weights


def tables_from_weights(
    genesis: pb.Genesis, blocks: Sequence[BlockModels], weights: Mapping[bytes, bytes]
) -> list[RoundTable]:
    """Each round's figures from the weights the chain names (`weights` by model digest); a
    round missing a model has none, and neither has any later one (its previous global model
    is unknown)."""
    shapes = _shapes(genesis)
    previous: np.ndarray | None = initial_model(genesis)
    tables = []
    for block in blocks:
        absent = [client.hex()[:12] for client, digest in block.models if digest not in weights]
        if previous is None or absent:
            why = f"no weights for {', '.join(absent)}" if absent else "an earlier round lacks"
            tables.append(RoundTable(block.round, block.block_hash, (), "", why))
            previous = None
            continue
        decoded = [
            (client.hex(), decode_f32le(weights[digest], shapes)) for client, digest in block.models
        ]
        found = resemblances(previous, decoded)
        tables.append(RoundTable(block.round, block.block_hash, tuple(found), "chain+replay"))
        previous = average_models([w for _, w in decoded])
    return tables


def tables_from_rounds_log(log: RoundLog, blocks: Sequence[BlockModels]) -> list[RoundTable]:
    """The clients' own tables (rounds.jsonl), for the rounds whose miner and models are the
    chain's block's; any other round has none."""
    logged = {record.round: record for record in log.rounds}
    tables = []
    for block in blocks:
        record = logged.get(block.round)
        clients = sorted(client.hex() for client, _ in block.models)
        if record is None:
            tables.append(RoundTable(block.round, block.block_hash, (), "", "not in rounds.jsonl"))
        elif record.miner != block.miner.hex() or sorted(record.models) != clients:
            why = "rounds.jsonl names another block"
            tables.append(RoundTable(block.round, block.block_hash, (), "", why))
        else:
            tables.append(
                RoundTable(block.round, block.block_hash, record.resemblance, "rounds.jsonl")
            )
    return tables


def copy_z(entry: Resemblance, parameters: int) -> float:
    """How many standard errors the copy coefficient is from 1 if the client's model were its
    nearest peer's plus independent noise (see the rule above); inf when it cannot be one."""
    c, cosine = entry.copy_coefficient, entry.update_cosine
    if not (np.isfinite(c) and np.isfinite(cosine)) or cosine == 0:
        return float("inf")
    rho = c / cosine
    relative = rho * rho - 2 * c + 1  # |n|^2 / |u_j|^2
    if relative <= 0:
        return 0.0 if c == 1 else float("inf")
    return float((c - 1) / (np.sqrt(relative) / np.sqrt(parameters)))


def judge_round(
    table: RoundTable,
    name_of: Mapping[str, str],
    parameters: int,
    *,
    copy_z_max: float = COPY_Z,
    spread_ratio: float = SPREAD_RATIO,
) -> list[ClientRound]:
    """The rule above, for every client of one round (`name_of`: hex address -> node name;
    `parameters`: the model's weight count)."""
    out = []
    for entry in table.entries:
        others = [e.difference_std for e in table.entries if e.client != entry.client]
        baseline = float(np.median(others)) if others else 0.0
        ratio = entry.difference_std / baseline if baseline > 0 else float("inf")
        z = copy_z(entry, parameters)
        out.append(
            ClientRound(
                round=table.round,
                client=name_of.get(entry.client, entry.client[:12]),
                nearest=name_of.get(entry.nearest, entry.nearest[:12]),
                copy_coefficient=entry.copy_coefficient,
                copy_z=z,
                difference_std=entry.difference_std,
                spread_ratio=ratio,
                lazy=abs(z) <= copy_z_max and ratio >= spread_ratio,
            )
        )
    return out


def verdicts(rounds: Sequence[ClientRound], clients: Sequence[str]) -> list[ClientVerdict]:
    """Per client over the run: lazy when flagged in at least half of its rounds with figures."""
    out = []
    for client in clients:
        own = [r for r in rounds if r.client == client]
        flagged = sum(r.lazy for r in own)
        finite = [r.spread_ratio for r in own if np.isfinite(r.spread_ratio)]
        out.append(
            ClientVerdict(
                client=client,
                rounds=len(own),
                flagged=flagged,
                lazy=bool(own) and 2 * flagged >= len(own),
                mean_copy_coefficient=(
                    float(np.mean([r.copy_coefficient for r in own])) if own else None
                ),
                median_copy_z=float(np.median([r.copy_z for r in own])) if own else None,
                mean_spread_ratio=float(np.mean(finite)) if finite else None,
            )
        )
    return out
