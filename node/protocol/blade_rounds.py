"""BLADE-FL's rounds as both of its engines run them: parameters, phases, opening, copying.

Two rules. First, what a round is exists here once, for the engine with the chain (blade.py)
and the one without (blade_chainless.py), and for FedAvg's clients (fedavg.py), which open
rounds by the same rule: a client trains only once it holds its whole dataset,
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
        check_config(
            "BLADE-FL",
            self,
            ("collect_timeout", self.collect_timeout > 0),
            ("vote_timeout", self.vote_timeout > 0),
            ("lazy_wait", self.lazy_wait >= 0),
            ("fetch_retry", self.fetch_retry > 0),
        )

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
    AGGREGATING = "aggregating"  # FedAvg only: the host is making (or adopting) the global model
    DONE = "done"  # K rounds aggregated


class RoundRules(Protocol):
    """What opening a round reads of an engine's config (BladeConfig, FedAvgConfig)."""

    @property
    def clients(self) -> int: ...

    @property
    def rounds(self) -> int: ...

    @property
    def local_iterations(self) -> int: ...

    @property
    def dataset_size(self) -> int: ...

    @property
    def lazy(self) -> bool: ...


def check_config(protocol: str, config: RoundRules, *checks: tuple[str, bool]) -> None:
    """Raises ValueError naming every invalid field, the round's own first, then `checks`'
    (name, valid) pairs: every engine's config is refused in the same words."""
    problems = [
        name
        for name, ok in (
            ("clients", config.clients >= 1),
            ("rounds", config.rounds >= 1),
            ("local_iterations", config.local_iterations >= 1),
            ("dataset_size", config.dataset_size >= 1),
            *checks,
        )
        if not ok
    ]
    if problems:
        raise ValueError(f"invalid {protocol} config field(s): {', '.join(problems)}")


class RoundState(Protocol):
    """What both engines keep of the round they are in."""

    round: int
    phase: Phase
    samples: int
    first_peer_model_at: float | None  # when a peer's model of this round first came in
    counters: Counter[str]


class RoundEngine:
    """What every engine running these rounds does alike: it is finished after K rounds, and
    collected samples count toward the dataset a round waits for."""

    state: RoundState

    @property
    def finished(self) -> bool:
        return self.state.phase is Phase.DONE

    def _collected(self, count: int) -> bool:
        """Counts `count` more samples; True while the client waits for data, the one phase
        in which samples can open its round."""
        self.state.samples += max(count, 0)
        return self.state.phase is Phase.WAITING_FOR_DATA


def open_round(
    state: RoundState, config: RoundRules, round: int, peer_models: Sequence[bytes], now: float
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
        assert isinstance(config, BladeConfig), "only BLADE-FL's clients copy a peer's model"
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
