"""The BLADE-FL protocol engine (paper 002, section 3), sans-IO like the DFL engine.

Two rules, after h11's state machine. First, every BLADE-FL protocol rule lives in node/protocol/:
which event moves a round from which phase to which in one table here (`TRANSITIONS`), what a
round is in blade_rounds.py, and how clients agree on one chain in blade_chain.py. Second, the
engine does not know where it runs: it never touches a socket, a thread, a clock or a file; the
host (a gRPC node, the simulator, a test) feeds it events with the current time and carries out
the actions it returns.

A round k runs the paper's six steps: (1) local training, tau iterations on the client's fixed
dataset; (2-3) the model goes, signed, to every client's cache pool; (4) once the pool holds
every client's model, or `collect_timeout` after our own, the client mines block k over the
pool's models; (5) the first valid block a client sees at a height gets its signed vote, and a
block with votes from more than half of the clients is appended by all; (6) every client
averages the block's models into the next global model. K blocks end the experiment.

Forks. Two miners can both find block k. Each client votes for the first valid one it saw, so
the votes split; the block with a majority wins. When every client has voted and none has a
majority, or the vote has run `vote_timeout` with more than half of the clients heard from, all
clients apply the same rule to the votes they saw: most votes, then the lowest hash. A client
whose view differed (it missed votes) learns of it when a block above its head arrives: it
fetches the sender's chain and switches to it when it is longer (the longest chain), truncating
its own above the fork. Competing blocks are counted as forks, switches as reorganizations.

Catching up. A client that missed a round (partitioned, restarted) sees a block or a vote above
its head, fetches the chain from the sender together with the last round's pool models, checks
every block's work, links and model signatures and the models against the last block, and
continues from there with the global model those models average to.

Lazy clients (section 3.2) do not train: once peers' models of the round are in the pool (all
of them, or `lazy_wait` after the first) they ask the host to copy one and add noise.

The engine never mines: it asks the host to (`Mine`), because mining is the one long CPU job of
the protocol; the host works in bounded chunks so that `StopMining` takes effect quickly.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from node.ledger import records
from node.ledger.errors import RecordRejected, RejectReason
from node.ledger.keys import NodeKey
from node.ledger.pow import header_prefix
from node.ledger.validation import (
    ValidationPolicy,
    decode,
    validate_pool_model,
    validate_pow_block,
    validate_vote,
)
from node.protocol.blade_chain import HeightVotes, check_fetched_chain
from node.protocol.blade_rounds import BladeConfig, Phase, maybe_copy, open_round
from node.protocol.events import (
    AggregateRound,
    BladeAction,
    BladeEvent,
    BlockMined,
    ChainFetched,
    FetchChain,
    FetchFailed,
    GeneratorsRefused,
    LocalModelReady,
    MessageKind,
    Mine,
    PeersChanged,
    PersistPowBlock,
    PoolModel,
    PowBlockReceived,
    SamplesCollected,
    Send,
    StopMining,
    Tick,
    TransactionReceived,
    TruncateChain,
    VoteReceived,
    to_ms,
)
from proto.dfl.v1 import records_pb2 as pb

__all__ = ["TRANSITIONS", "BladeConfig", "BladeEngine", "BladeState", "Phase"]


# --- state -------------------------------------------------------------------------------------


@dataclass
class BladeState:
    peers: tuple[str, ...]
    chain: list[bytes]  # block hashes by height; chain[0] is the genesis digest
    round: int = 0
    phase: Phase = Phase.WAITING_FOR_DATA
    samples: int = 0
    pool: dict[int, dict[bytes, pb.Transaction]] = field(default_factory=dict)  # by generator
    first_peer_model_at: float | None = None
    collect_deadline: float = 0.0
    mining: tuple[pb.PowHeader, tuple[pb.Transaction, ...]] | None = None
    heights: dict[int, HeightVotes] = field(default_factory=dict)
    own_vote: dict[int, bytes] = field(default_factory=dict)
    behind: str | None = None  # a peer whose chain is ahead of ours
    fetch_in_flight: bool = False
    next_fetch_at: float = 0.0
    counters: Counter[str] = field(default_factory=Counter)
    refused: frozenset[bytes] = frozenset()  # generators banned by the node (GeneratorsRefused)

    @property
    def height(self) -> int:
        return len(self.chain) - 1


class BladeEngine:
    """One BLADE-FL client. `handle(event, now)` returns the actions to carry out."""

    def __init__(
        self,
        key: NodeKey,
        genesis: pb.Genesis,
        config: BladeConfig,
        *,
        peers: tuple[str, ...] = (),
        chain: list[bytes] | None = None,
    ) -> None:
        self.key = key
        self.genesis = genesis
        self.config = config
        self.policy = ValidationPolicy.for_genesis(
            genesis, max_message_bytes=config.max_message_bytes
        )
        if self.policy.pow_target is None:
            raise ValueError("a BLADE-FL genesis must set pow_difficulty")
        self.target = self.policy.pow_target
        self.state = BladeState(peers=tuple(peers), chain=list(chain or [genesis.digest]))
        if self.state.height >= config.rounds:
            self.state.phase = Phase.DONE
        elif self.state.height > 0 and self.state.peers:
            # A restarted client may have missed blocks, and if the run is over by now, no
            # block or vote will ever come to say so: it asks a peer once, on its first tick.
            self.state.behind = self.state.peers[0]

    @property
    def address(self) -> bytes:
        return self.key.address

    @property
    def finished(self) -> bool:
        return self.state.phase is Phase.DONE

    def snapshot(self) -> BladeState:
        return copy.deepcopy(self.state)

    def round_models(self, round: int) -> list[pb.Transaction]:
        """The pool of `round` with weights, for a peer catching up (the last two rounds kept)."""
        pool = self.state.pool.get(round, {})
        return [pool[generator] for generator in sorted(pool)]

    def handle(self, event: BladeEvent, now: float) -> list[BladeAction]:
        kind = type(event)
        handler = TRANSITIONS.get((self.state.phase, kind)) or TRANSITIONS.get((None, kind))
        if handler is None:
            raise TypeError(f"not a BLADE-FL event: {event!r}")
        return handler(self, event, now)

    # --- rounds --------------------------------------------------------------------------------

    def _count_samples(self, event: SamplesCollected, now: float) -> list[BladeAction]:
        self.state.samples += max(event.count, 0)
        return []

    def _collect_then_start(self, event: SamplesCollected, now: float) -> list[BladeAction]:
        self._count_samples(event, now)
        if self.state.samples < self.config.dataset_size:
            return []
        return self._start_round(self.state.height + 1, now)

    def _start_round(self, round: int, now: float) -> list[BladeAction]:
        self.state.mining = None
        return open_round(self.state, self.config, round, self._peer_models(round), now)

    def _maybe_copy(self, now: float) -> list[BladeAction]:
        return maybe_copy(self.state, self.config, self._peer_models(self.state.round), now)

    def _peer_models(self, round: int) -> list[bytes]:
        """The round's pool while our own model is not in it yet, in order of arrival."""
        return [tx.model for tx in self.state.pool.get(round, {}).values()]

    def _local_model_late(self, event: LocalModelReady, now: float) -> list[BladeAction]:
        self.state.counters["local_models_late"] += 1
        return []  # the round moved on (a block arrived first, or we caught up)

    def _on_local_model(self, event: LocalModelReady, now: float) -> list[BladeAction]:
        state = self.state
        if event.round != state.round:
            return self._local_model_late(event, now)
        tx = records.make_transaction(
            self.key,
            genesis_digest=self.genesis.digest,
            weights=event.model,
            now_ms=to_ms(now),
            ttl=0,
            lifetime_ms=to_ms(self.config.collect_timeout) + 1,
            round=event.round,
        )
        state.pool.setdefault(event.round, {})[self.address] = tx
        state.counters["models_created"] += 1
        state.counters["models_sent"] += len(state.peers)
        state.phase = Phase.COLLECTING
        state.collect_deadline = now + self.config.collect_timeout
        actions: list[BladeAction] = [
            Send(state.peers, MessageKind.TRANSACTION, tx.SerializeToString(deterministic=True))
        ]
        return actions + self._maybe_mine(now)

    def _pool(self, payload: bytes, now: float) -> bool:
        """Adds a peer's model to its round's pool; True for one of the current round."""
        state = self.state
        tx = decode(pb.Transaction, payload, self.config.max_message_bytes)
        if tx.body.generator.address in state.refused:
            raise RecordRejected(RejectReason.REFUSED_GENERATOR, "its generator is banned here")
        validate_pool_model(tx, self.policy)
        round, generator = tx.body.round, tx.body.generator.address
        if round <= state.height:
            raise RecordRejected(
                RejectReason.WRONG_ROUND, f"round {round} is closed (head {state.height})"
            )
        if round > state.height + 2:
            raise RecordRejected(
                RejectReason.WRONG_ROUND, f"round {round} is too far ahead (head {state.height})"
            )
        pool = state.pool.setdefault(round, {})
        if generator in pool:
            same = pool[generator].digest == tx.digest
            raise RecordRejected(
                RejectReason.DUPLICATE,
                "model already in the pool" if same else f"a second model of round {round}",
            )
        pool[generator] = tx
        state.counters["models_received"] += 1
        if round != state.round or generator == self.address:
            return False
        if state.first_peer_model_at is None:
            state.first_peer_model_at = now
        return True

    def _on_pool_model(self, event: TransactionReceived, now: float) -> list[BladeAction]:
        self._pool(event.payload, now)
        return []

    def _pool_then_copy(self, event: TransactionReceived, now: float) -> list[BladeAction]:
        return self._maybe_copy(now) if self._pool(event.payload, now) else []

    def _pool_then_mine(self, event: TransactionReceived, now: float) -> list[BladeAction]:
        return self._maybe_mine(now) if self._pool(event.payload, now) else []

    def _maybe_mine(self, now: float) -> list[BladeAction]:
        state = self.state
        pool = state.pool.get(state.round, {})
        if len(pool) < self.config.clients and now < state.collect_deadline:
            return []
        height = state.height + 1
        if height in state.own_vote:
            state.phase = Phase.VOTING  # a peer's block came first; we vote, not mine
            return []
        transactions = tuple(pool[generator] for generator in sorted(pool))
        header = records.pow_header(
            height=height,
            previous_hash=state.chain[-1],
            transactions=transactions,
            miner=self.address,
            time_ms=to_ms(now),
        )
        state.mining = (header, transactions)
        state.phase = Phase.MINING
        state.counters["mining_started"] += 1
        if len(pool) < self.config.clients:
            state.counters["rounds_with_missing_models"] += 1
        return [Mine(height, header_prefix(header), self.target)]

    # --- blocks and votes ----------------------------------------------------------------------

    def _block_mined_late(self, event: BlockMined, now: float) -> list[BladeAction]:
        self.state.counters["mined_too_late"] += 1
        return []

    def _on_mined(self, event: BlockMined, now: float) -> list[BladeAction]:
        state = self.state
        height = event.height
        if state.mining is None or height != state.height + 1:
            return self._block_mined_late(event, now)
        header, transactions = state.mining
        block = records.make_pow_block(self.key, header, event.nonce, transactions)
        state.mining = None
        state.counters["blocks_mined"] += 1
        votes = state.heights.setdefault(height, HeightVotes())
        votes.blocks[block.hash] = block
        votes.first_candidate_at = votes.first_candidate_at or now
        actions: list[BladeAction] = [
            Send(state.peers, MessageKind.POW_BLOCK, block.SerializeToString(deterministic=True))
        ]
        return actions + self._vote(height, block.hash, now)

    def _vote(self, height: int, block_hash: bytes, now: float) -> list[BladeAction]:
        state = self.state
        state.own_vote[height] = block_hash
        vote = records.make_vote(
            self.key, height=height, block_hash=block_hash, genesis_digest=self.genesis.digest
        )
        state.heights[height].voters[self.address] = block_hash
        state.counters["votes_sent"] += 1
        actions: list[BladeAction] = [
            Send(state.peers, MessageKind.BLOCK_VOTE, vote.SerializeToString(deterministic=True))
        ]
        if state.phase is Phase.MINING:
            actions.append(StopMining(height))
            state.mining = None
        if state.phase in (Phase.MINING, Phase.COLLECTING):
            state.phase = Phase.VOTING
        return actions + self._maybe_accept(now)

    def _on_block(self, event: PowBlockReceived, now: float) -> list[BladeAction]:
        state = self.state
        block = decode(pb.PowBlock, event.payload, self.config.max_message_bytes)
        height = block.header.height
        if height > state.height + 1:
            validate_pow_block(block, self.policy, previous_hash=None)
            return self._fall_behind(event.sender, now)
        if height <= state.height:
            if height >= 1 and block.hash == state.chain[height]:
                raise RecordRejected(RejectReason.DUPLICATE, f"block {height} is on our chain")
            validate_pow_block(block, self.policy, previous_hash=state.chain[height - 1])
            state.counters["forks"] += 1  # a valid competitor of a block we appended
            return []
        if block.hash in state.heights.get(height, HeightVotes()).blocks:
            raise RecordRejected(RejectReason.DUPLICATE, f"block {height} seen already")
        pool = state.pool.get(height, {})
        validate_pow_block(
            block,
            self.policy,
            previous_hash=state.chain[-1],
            pool={tx.digest: tx.signature for tx in pool.values()},
        )
        votes = state.heights.setdefault(height, HeightVotes())
        votes.blocks[block.hash] = block
        votes.voted_by_peer.setdefault(block.hash, event.sender)
        votes.first_candidate_at = votes.first_candidate_at or now
        state.counters["blocks_received"] += 1
        if height in state.own_vote:
            state.counters["forks"] += 1  # a second valid block at the height we voted on
            return self._maybe_accept(now)
        return self._vote(height, block.hash, now)

    def _on_vote(self, event: VoteReceived, now: float) -> list[BladeAction]:
        state = self.state
        vote = decode(pb.BlockVote, event.payload, self.config.max_message_bytes)
        validate_vote(vote, self.policy)
        body = vote.body
        if body.height <= state.height:
            state.counters["votes_late"] += 1
            return []
        earlier = state.heights.get(body.height, HeightVotes()).voters.get(body.voter.address)
        if earlier is not None:
            detail = "vote repeated" if earlier == body.block_hash else "voted for two blocks"
            raise RecordRejected(RejectReason.DUPLICATE, detail)
        votes = state.heights.setdefault(body.height, HeightVotes())
        votes.voters[body.voter.address] = body.block_hash
        votes.voted_by_peer.setdefault(body.block_hash, event.sender)
        state.counters["votes_received"] += 1
        if body.height > state.height + 1:
            return self._fall_behind(event.sender, now)
        return self._maybe_accept(now)

    def _maybe_accept(self, now: float) -> list[BladeAction]:
        """Appends the block of the next height once it has a majority (or wins the tie-break)."""
        state = self.state
        votes = state.heights.get(state.height + 1)
        if votes is None or not votes.voters:
            return []
        winner, count = votes.leader()
        if count < self.config.majority:
            everyone = len(votes.voters) >= self.config.clients
            timed_out = (
                votes.first_candidate_at is not None
                and now >= votes.first_candidate_at + self.config.vote_timeout
                and len(votes.voters) >= self.config.majority
            )
            if not (everyone or timed_out):
                return []
            state.counters["ties_broken"] += 1
        block = votes.blocks.get(winner)
        if block is None:  # the winning block never reached us (or we refused its models)
            state.behind = votes.voted_by_peer.get(winner)
            return self._maybe_fetch(now)
        return self._append(block, now)

    def _append(self, block: pb.PowBlock, now: float) -> list[BladeAction]:
        state = self.state
        height = block.header.height
        actions: list[BladeAction] = []
        if state.phase is Phase.MINING:
            actions.append(StopMining(height))
        state.chain.append(block.hash)
        state.counters["blocks_appended"] += 1
        pool = state.pool.get(height, {})
        models = tuple(
            PoolModel(tx.body.generator.address, tx.digest, pool[tx.body.generator.address].model)
            for tx in block.transactions
        )
        self._forget_below(height)
        actions += [PersistPowBlock(block), AggregateRound(height, models)]
        return actions + self._start_round(height + 1, now)

    def _forget_below(self, height: int) -> None:
        """Drops what `height` settled; keeps its pool, which peers catching up ask for."""
        state = self.state
        state.pool = {h: pool for h, pool in state.pool.items() if h >= height}
        state.heights = {h: votes for h, votes in state.heights.items() if h > height}
        state.own_vote = {h: vote for h, vote in state.own_vote.items() if h > height}

    # --- falling behind and catching up --------------------------------------------------------

    def _fall_behind(self, peer: str, now: float) -> list[BladeAction]:
        self.state.behind = peer
        return self._maybe_fetch(now)

    def _maybe_fetch(self, now: float) -> list[BladeAction]:
        state = self.state
        if state.behind is None or state.fetch_in_flight or now < state.next_fetch_at:
            return []
        state.fetch_in_flight = True
        state.counters["fetches"] += 1
        return [FetchChain(state.behind)]

    def _fetch_over(self, now: float) -> None:
        self.state.fetch_in_flight = False
        self.state.next_fetch_at = now + self.config.fetch_retry

    def _on_fetch_failed(self, event: FetchFailed, now: float) -> list[BladeAction]:
        self._fetch_over(now)
        return []

    def _on_chain(self, event: ChainFetched, now: float) -> list[BladeAction]:
        state = self.state
        self._fetch_over(now)
        if len(event.blocks) <= state.height:
            state.behind = None  # not longer than ours; a later block or vote will tell again
            return []
        fetched = check_fetched_chain(state.chain, event.blocks, event.models, self.policy)
        fork, last = fetched.fork, fetched.blocks[-1]
        actions: list[BladeAction] = []
        if state.phase is Phase.MINING:
            actions.append(StopMining(state.height + 1))
        if fork <= state.height:
            actions.append(TruncateChain(fork - 1))
            state.counters["reorganizations"] += 1
            del state.chain[fork:]
        state.counters["blocks_fetched"] += len(fetched.blocks) - (fork - 1)
        state.behind = None
        for block in fetched.blocks[fork - 1 : -1]:
            state.chain.append(block.hash)
            actions.append(PersistPowBlock(block))
        state.pool[last.header.height] = fetched.pool
        return actions + self._append(last, now)

    # --- peers and time ------------------------------------------------------------------------

    def _on_peers(self, event: PeersChanged, now: float) -> list[BladeAction]:
        self.state.peers = tuple(event.peers)
        return []

    def _on_refused(self, event: GeneratorsRefused, now: float) -> list[BladeAction]:
        self.state.refused = event.generators
        return []

    def _on_tick(self, event: Tick, now: float) -> list[BladeAction]:
        return self._maybe_accept(now) + self._maybe_fetch(now)

    def _copy_on_tick(self, event: Tick, now: float) -> list[BladeAction]:
        return self._maybe_copy(now) + self._on_tick(event, now)

    def _mine_on_tick(self, event: Tick, now: float) -> list[BladeAction]:
        return self._maybe_mine(now) + self._on_tick(event, now)


Handler = Callable[[BladeEngine, Any, float], list[BladeAction]]

# The state machine in one table, as h11's _state.py keeps its own: (phase, event type) -> the
# handler, with the phases it can move to. `None` is every phase without an entry of its own for
# that event type. "Next round" is where the round after an appended block opens (`open_round`:
# WAITING_FOR_DATA, COPYING, TRAINING or DONE). A host report that arrives in a phase that no
# longer expects it (our model after a peer's block won the round, our block after another was
# voted in) is late: counted and dropped, never an error.
TRANSITIONS: dict[tuple[Phase | None, type], Handler] = {
    (Phase.WAITING_FOR_DATA, SamplesCollected): BladeEngine._collect_then_start,  # -> next round
    (Phase.COPYING, TransactionReceived): BladeEngine._pool_then_copy,  # -> TRAINING
    (Phase.COPYING, Tick): BladeEngine._copy_on_tick,  # -> TRAINING; or next round
    (Phase.TRAINING, LocalModelReady): BladeEngine._on_local_model,  # -> COLLECTING, MINING, VOTING
    (Phase.COLLECTING, TransactionReceived): BladeEngine._pool_then_mine,  # -> MINING, VOTING
    (Phase.COLLECTING, Tick): BladeEngine._mine_on_tick,  # -> MINING, VOTING; or next round
    (Phase.MINING, BlockMined): BladeEngine._on_mined,  # -> VOTING; or next round
    (None, SamplesCollected): BladeEngine._count_samples,
    (None, LocalModelReady): BladeEngine._local_model_late,
    (None, BlockMined): BladeEngine._block_mined_late,
    (None, TransactionReceived): BladeEngine._on_pool_model,
    (None, PowBlockReceived): BladeEngine._on_block,  # MINING, COLLECTING -> VOTING; next round
    (None, VoteReceived): BladeEngine._on_vote,  # -> next round
    (None, ChainFetched): BladeEngine._on_chain,  # -> next round after the fetched head
    (None, FetchFailed): BladeEngine._on_fetch_failed,
    (None, PeersChanged): BladeEngine._on_peers,
    (None, GeneratorsRefused): BladeEngine._on_refused,
    (None, Tick): BladeEngine._on_tick,  # -> next round
}
