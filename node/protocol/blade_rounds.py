"""BLADE-FL's rounds as both of its engines run them: parameters, phases, opening, copying.

Two rules. First, what a round is exists here once, for the engine with the chain (blade.py)
and the one without (blade_chainless.py): a client trains only once it holds its whole dataset,
a lazy client copies instead of training, once every peer's model of the round is in or
`lazy_wait` after the first, and K rounds end the experiment. Second, they know nothing but the
round state they are handed: no clock, no transport, no chain.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from node.protocol.events import BladeAction, Plagiarize, TrainLocal


@dataclass(frozen=True)
class BladeConfig:
    """Protocol parameters; times are seconds of whatever clock the host passes as `now`."""

    clients: int  # N, this client included
    rounds: int  # K: blocks, and communication rounds
    local_iterations: int  # tau: local epochs per round
    dataset_size: int = 512  # |D_i|: samples a client collects before round 1
    collect_timeout: float = 30.0  # after our own model, how long to wait for the others
    vote_timeout: float = 10.0  # after the first candidate block, how long to wait for a majority
    lazy: bool = False
    lazy_wait: float = 5.0  # a lazy client copies this long after the first peer model at latest
    fetch_retry: float = 1.0  # between attempts to fetch a chain we are missing blocks of
    max_message_bytes: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("clients", self.clients >= 1),
                ("rounds", self.rounds >= 1),
                ("local_iterations", self.local_iterations >= 1),
                ("dataset_size", self.dataset_size >= 1),
                ("collect_timeout", self.collect_timeout > 0),
                ("vote_timeout", self.vote_timeout > 0),
                ("lazy_wait", self.lazy_wait >= 0),
                ("fetch_retry", self.fetch_retry > 0),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"invalid BLADE-FL config field(s): {', '.join(problems)}")

    @property
    def majority(self) -> int:
        """Votes a block needs: more than half of the clients (paper step 5)."""
        return self.clients // 2 + 1


class Phase(enum.Enum):
    """Where a client is in its current round; MINING and VOTING exist only with the chain."""

    WAITING_FOR_DATA = "waiting_for_data"  # fewer than dataset_size samples yet
    COPYING = "copying"  # a lazy client waits for peers' models to copy
    TRAINING = "training"  # the host trains (or copies) the round's model
    COLLECTING = "collecting"  # our model is in the pool; the others' are on their way
    MINING = "mining"
    VOTING = "voting"  # we voted at the next height; a block with a majority ends the round
    DONE = "done"  # K rounds aggregated


class RoundState(Protocol):
    """What both engines keep of the round they are in."""

    round: int
    phase: Phase
    samples: int
    first_peer_model_at: float | None  # when a peer's model of this round first came in
    counters: Counter[str]


def open_round(
    state: RoundState, config: BladeConfig, round: int, peer_models: Sequence[bytes], now: float
) -> list[BladeAction]:
    """Starts `round`: a client trains only on its whole dataset, a lazy one copies instead."""
    state.round = round
    state.first_peer_model_at = None
    if round > config.rounds:
        state.phase = Phase.DONE
    elif state.samples < config.dataset_size:
        state.phase = Phase.WAITING_FOR_DATA
    elif config.lazy:
        state.phase = Phase.COPYING
        if peer_models:  # they came while we were finishing the last round
            state.first_peer_model_at = now
        return maybe_copy(state, config, peer_models, now)
    else:
        state.phase = Phase.TRAINING
        return [TrainLocal(round, config.local_iterations)]
    return []


def maybe_copy(
    state: RoundState, config: BladeConfig, peer_models: Sequence[bytes], now: float
) -> list[BladeAction]:
    """A lazy client copies once every peer's model is in, or `lazy_wait` after the first."""
    if state.first_peer_model_at is None:
        return []
    everyone = len(peer_models) >= config.clients - 1
    if not (everyone or now >= state.first_peer_model_at + config.lazy_wait):
        return []
    state.phase = Phase.TRAINING  # waiting for the host's copy, like a training
    state.counters["models_plagiarized"] += 1
    return [Plagiarize(state.round, tuple(peer_models))]
