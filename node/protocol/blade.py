"""The BLADE-FL protocol engine (paper 002, section 3), sans-IO like the DFL engine.

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
from dataclasses import dataclass, field

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
from node.protocol.common import (
    MessageKind,
    PeersChanged,
    SamplesCollected,
    Send,
    Tick,
    TransactionReceived,
    to_ms,
)
from proto.dfl.v1 import records_pb2 as pb


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


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalModelReady:
    """The host trained (or, for a lazy client, copied) its model of `round`: raw f32le weights."""

    round: int
    model: bytes


@dataclass(frozen=True)
class BlockMined:
    height: int
    nonce: int


@dataclass(frozen=True)
class PowBlockReceived:
    payload: bytes
    sender: str


@dataclass(frozen=True)
class VoteReceived:
    payload: bytes
    sender: str


@dataclass(frozen=True)
class ChainFetched:
    """What FetchChain brought: the peer's blocks from height 1 and its last round's pool."""

    peer: str
    blocks: tuple[bytes, ...]
    models: tuple[bytes, ...]


@dataclass(frozen=True)
class FetchFailed:
    peer: str


Event = (
    SamplesCollected
    | LocalModelReady
    | TransactionReceived
    | BlockMined
    | PowBlockReceived
    | VoteReceived
    | ChainFetched
    | FetchFailed
    | PeersChanged
    | Tick
)


# --- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainLocal:
    """Train `iterations` local epochs from the current global model; report LocalModelReady."""

    round: int
    iterations: int


@dataclass(frozen=True)
class Plagiarize:
    """A lazy client's round: copy one of these peer models, add noise; report LocalModelReady."""

    round: int
    models: tuple[bytes, ...]


@dataclass(frozen=True)
class Mine:
    """Search nonces for this header prefix until one hashes below `target` (BlockMined)."""

    height: int
    prefix: bytes
    target: bytes


@dataclass(frozen=True)
class StopMining:
    height: int


@dataclass(frozen=True)
class PoolModel:
    generator: bytes
    transaction_digest: bytes
    model: bytes


@dataclass(frozen=True)
class AggregateRound:
    """Block `round` is appended: average its models into the global model (paper step 6)."""

    round: int
    models: tuple[PoolModel, ...]


@dataclass(frozen=True)
class PersistPowBlock:
    block: pb.PowBlock


@dataclass(frozen=True)
class TruncateChain:
    """Drop every stored block above `height`: the client is switching to a longer fork."""

    height: int


@dataclass(frozen=True)
class FetchChain:
    """Ask `peer` for its chain from height 1 and its last round's models (ChainFetched)."""

    peer: str


Action = (
    TrainLocal
    | Plagiarize
    | Mine
    | StopMining
    | Send
    | AggregateRound
    | PersistPowBlock
    | TruncateChain
    | FetchChain
)


# --- state -------------------------------------------------------------------------------------

WAITING_FOR_DATA = "waiting_for_data"
TRAINING = "training"
COPYING = "copying"
COLLECTING = "collecting"
MINING = "mining"
VOTING = "voting"
DONE = "done"


@dataclass
class HeightVotes:
    """Candidates and votes for one height."""

    blocks: dict[bytes, pb.PowBlock] = field(default_factory=dict)  # by hash, valid ones
    voters: dict[bytes, bytes] = field(default_factory=dict)  # voter address -> block hash
    voted_by_peer: dict[bytes, str] = field(default_factory=dict)  # block hash -> a peer voting
    first_candidate_at: float | None = None

    def tally(self) -> Counter[bytes]:
        return Counter(self.voters.values())


@dataclass
class BladeState:
    peers: tuple[str, ...]
    chain: list[bytes]  # block hashes by height; chain[0] is the genesis digest
    round: int = 0
    phase: str = WAITING_FOR_DATA
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
            self.state.phase = DONE

    @property
    def address(self) -> bytes:
        return self.key.address

    @property
    def finished(self) -> bool:
        return self.state.phase == DONE

    def snapshot(self) -> BladeState:
        return copy.deepcopy(self.state)

    def round_models(self, round: int) -> list[pb.Transaction]:
        """The pool of `round` with weights, for a peer catching up (the last two rounds kept)."""
        pool = self.state.pool.get(round, {})
        return [pool[generator] for generator in sorted(pool)]

    def handle(self, event: Event, now: float) -> list[Action]:
        match event:
            case SamplesCollected(count):
                return self._on_samples(count, now)
            case LocalModelReady(round, model):
                return self._on_local_model(round, model, now)
            case TransactionReceived(payload, _):
                return self._on_pool_model(payload, now)
            case BlockMined(height, nonce):
                return self._on_mined(height, nonce, now)
            case PowBlockReceived(payload, sender):
                return self._on_block(payload, sender, now)
            case VoteReceived(payload, sender):
                return self._on_vote(payload, sender, now)
            case ChainFetched(peer, blocks, models):
                return self._on_chain(peer, blocks, models, now)
            case FetchFailed(_):
                self.state.fetch_in_flight = False
                self.state.next_fetch_at = now + self.config.fetch_retry
                return []
            case PeersChanged(peers):
                self.state.peers = tuple(peers)
                return []
            case Tick():
                return self._on_tick(now)
        raise TypeError(f"not a BLADE-FL event: {event!r}")

    # --- rounds --------------------------------------------------------------------------------

    def _on_samples(self, count: int, now: float) -> list[Action]:
        state = self.state
        state.samples += max(count, 0)
        if state.phase == WAITING_FOR_DATA and state.samples >= self.config.dataset_size:
            return self._start_round(state.height + 1, now)
        return []

    def _start_round(self, round: int, now: float) -> list[Action]:
        state = self.state
        state.round = round
        state.first_peer_model_at = None
        state.mining = None
        if round > self.config.rounds:
            state.phase = DONE
            return []
        if state.samples < self.config.dataset_size:
            state.phase = WAITING_FOR_DATA
            return []
        if self.config.lazy:
            state.phase = COPYING
            if state.pool.get(round, {}):
                state.first_peer_model_at = now
            return self._maybe_copy(now)
        state.phase = TRAINING
        return [TrainLocal(round, self.config.local_iterations)]

    def _maybe_copy(self, now: float) -> list[Action]:
        state = self.state
        if state.phase != COPYING or state.first_peer_model_at is None:
            return []
        others = list(state.pool.get(state.round, {}).values())  # ours is not there yet
        everyone = len(others) >= self.config.clients - 1
        if not (everyone or now >= state.first_peer_model_at + self.config.lazy_wait):
            return []
        state.phase = TRAINING  # waiting for the host's copy, like a training
        state.counters["models_plagiarized"] += 1
        return [Plagiarize(state.round, tuple(tx.model for tx in others))]

    def _on_local_model(self, round: int, model: bytes, now: float) -> list[Action]:
        state = self.state
        if round != state.round or state.phase != TRAINING:
            state.counters["local_models_late"] += 1
            return []  # the round moved on (a block arrived first, or we caught up)
        tx = records.make_transaction(
            self.key,
            genesis_digest=self.genesis.digest,
            weights=model,
            now_ms=to_ms(now),
            ttl=0,
            lifetime_ms=to_ms(self.config.collect_timeout) + 1,
            round=round,
        )
        state.pool.setdefault(round, {})[self.address] = tx
        state.counters["models_created"] += 1
        state.counters["models_sent"] += len(state.peers)
        state.phase = COLLECTING
        state.collect_deadline = now + self.config.collect_timeout
        actions: list[Action] = [
            Send(state.peers, MessageKind.TRANSACTION, tx.SerializeToString(deterministic=True))
        ]
        return actions + self._maybe_mine(now)

    def _on_pool_model(self, payload: bytes, now: float) -> list[Action]:
        state = self.state
        tx = decode(pb.Transaction, payload, self.config.max_message_bytes)
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
            return []
        if state.first_peer_model_at is None:
            state.first_peer_model_at = now
        return self._maybe_copy(now) + self._maybe_mine(now)

    def _maybe_mine(self, now: float) -> list[Action]:
        state = self.state
        if state.phase != COLLECTING:
            return []
        pool = state.pool.get(state.round, {})
        if len(pool) < self.config.clients and now < state.collect_deadline:
            return []
        height = state.height + 1
        if height in state.own_vote:
            state.phase = VOTING  # a peer's block came first; we vote, not mine
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
        state.phase = MINING
        state.counters["mining_started"] += 1
        if len(pool) < self.config.clients:
            state.counters["rounds_with_missing_models"] += 1
        return [Mine(height, header_prefix(header), self.target)]

    # --- blocks and votes ----------------------------------------------------------------------

    def _on_mined(self, height: int, nonce: int, now: float) -> list[Action]:
        state = self.state
        if state.phase != MINING or state.mining is None or height != state.height + 1:
            state.counters["mined_too_late"] += 1
            return []
        header, transactions = state.mining
        block = records.make_pow_block(self.key, header, nonce, transactions)
        state.mining = None
        state.counters["blocks_mined"] += 1
        votes = state.heights.setdefault(height, HeightVotes())
        votes.blocks[block.hash] = block
        votes.first_candidate_at = votes.first_candidate_at or now
        actions: list[Action] = [
            Send(state.peers, MessageKind.POW_BLOCK, block.SerializeToString(deterministic=True))
        ]
        return actions + self._vote(height, block.hash, now)

    def _vote(self, height: int, block_hash: bytes, now: float) -> list[Action]:
        state = self.state
        state.own_vote[height] = block_hash
        vote = records.make_vote(
            self.key, height=height, block_hash=block_hash, genesis_digest=self.genesis.digest
        )
        state.heights[height].voters[self.address] = block_hash
        state.counters["votes_sent"] += 1
        actions: list[Action] = [
            Send(state.peers, MessageKind.BLOCK_VOTE, vote.SerializeToString(deterministic=True))
        ]
        if state.phase == MINING:
            actions.append(StopMining(height))
            state.mining = None
        if state.phase in (MINING, COLLECTING):
            state.phase = VOTING
        return actions + self._maybe_accept(now)

    def _on_block(self, payload: bytes, sender: str, now: float) -> list[Action]:
        state = self.state
        block = decode(pb.PowBlock, payload, self.config.max_message_bytes)
        height = block.header.height
        if height > state.height + 1:
            validate_pow_block(block, self.policy, previous_hash=None)
            return self._fall_behind(sender, now)
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
            pool={tx.digest for tx in pool.values()},
        )
        votes = state.heights.setdefault(height, HeightVotes())
        votes.blocks[block.hash] = block
        votes.voted_by_peer.setdefault(block.hash, sender)
        votes.first_candidate_at = votes.first_candidate_at or now
        state.counters["blocks_received"] += 1
        if height in state.own_vote:
            state.counters["forks"] += 1  # a second valid block at the height we voted on
            return self._maybe_accept(now)
        return self._vote(height, block.hash, now)

    def _on_vote(self, payload: bytes, sender: str, now: float) -> list[Action]:
        state = self.state
        vote = decode(pb.BlockVote, payload, self.config.max_message_bytes)
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
        votes.voted_by_peer.setdefault(body.block_hash, sender)
        state.counters["votes_received"] += 1
        if body.height > state.height + 1:
            return self._fall_behind(sender, now)
        return self._maybe_accept(now)

    def _maybe_accept(self, now: float) -> list[Action]:
        """Appends the block of the next height once it has a majority (or wins the tie-break)."""
        state = self.state
        votes = state.heights.get(state.height + 1)
        if votes is None or not votes.voters:
            return []
        tally = votes.tally()
        winner, count = min(tally.items(), key=lambda item: (-item[1], item[0]))
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

    def _append(self, block: pb.PowBlock, now: float) -> list[Action]:
        state = self.state
        height = block.header.height
        actions: list[Action] = []
        if state.phase == MINING:
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

    def _fall_behind(self, peer: str, now: float) -> list[Action]:
        self.state.behind = peer
        return self._maybe_fetch(now)

    def _maybe_fetch(self, now: float) -> list[Action]:
        state = self.state
        if state.behind is None or state.fetch_in_flight or now < state.next_fetch_at:
            return []
        state.fetch_in_flight = True
        state.counters["fetches"] += 1
        return [FetchChain(state.behind)]

    def _on_chain(
        self, peer: str, blocks: tuple[bytes, ...], models: tuple[bytes, ...], now: float
    ) -> list[Action]:
        state = self.state
        state.fetch_in_flight = False
        state.next_fetch_at = now + self.config.fetch_retry
        if len(blocks) <= state.height:
            state.behind = None  # not longer than ours; a later block or vote will tell again
            return []
        decoded = [decode(pb.PowBlock, data, self.config.max_message_bytes) for data in blocks]
        fork = 1
        while fork <= state.height and decoded[fork - 1].hash == state.chain[fork]:
            fork += 1
        previous = state.chain[fork - 1]
        for height, block in enumerate(decoded[fork - 1 :], start=fork):
            validate_pow_block(block, self.policy, previous_hash=previous)
            if block.header.height != height:
                raise RecordRejected(RejectReason.BAD_LINK, f"block {height} out of order")
            previous = block.hash
        last = decoded[-1]
        pool = self._verified_pool(last, models)
        actions: list[Action] = []
        if state.phase == MINING:
            actions.append(StopMining(state.height + 1))
        if fork <= state.height:
            actions.append(TruncateChain(fork - 1))
            state.counters["reorganizations"] += 1
            del state.chain[fork:]
        state.counters["blocks_fetched"] += len(decoded) - (fork - 1)
        state.behind = None
        for block in decoded[fork - 1 : -1]:
            state.chain.append(block.hash)
            actions.append(PersistPowBlock(block))
        state.pool[last.header.height] = pool
        return actions + self._append(last, now)

    def _verified_pool(
        self, block: pb.PowBlock, models: tuple[bytes, ...]
    ) -> dict[bytes, pb.Transaction]:
        """The fetched models of `block`'s round, each signed and exactly those the block names."""
        wanted = {tx.digest for tx in block.transactions}
        pool: dict[bytes, pb.Transaction] = {}
        for data in models:
            tx = decode(pb.Transaction, data, self.config.max_message_bytes)
            validate_pool_model(tx, self.policy)
            if tx.digest in wanted:
                pool[tx.body.generator.address] = tx
        if {tx.digest for tx in pool.values()} != wanted:
            raise RecordRejected(
                RejectReason.UNKNOWN_MODEL, "the fetched models are not those of the last block"
            )
        return pool

    # --- time ----------------------------------------------------------------------------------

    def _on_tick(self, now: float) -> list[Action]:
        actions = self._maybe_copy(now) + self._maybe_mine(now) + self._maybe_accept(now)
        return actions + self._maybe_fetch(now)
