"""Who may take how much of a node: misbehaviour scores, bans, rate limits and work budgets.

A peer's input is hostile until validated, and validating costs: a node that rejects a thousand
forged records a second, forever, spends its CPU on the attacker. So, as Bitcoin Core does, each
rejected record raises its sender's misbehaviour score by a weight that depends on the reason;
past `ban_score` the sender is refused outright for `ban_seconds`. A sender is scored twice: by
its connection (gRPC's peer string, ip:port, whatever the record claims) and, when the record
carried a valid signature, by the generator address that signed it. A bad signature scores only
the connection: charging the claimed generator would let anyone get an honest node banned by
naming it.

Reasons that honest gossip produces (a duplicate from a second relay, a receipt for a draft that
is gone, a round that just closed) weigh nothing: an honest network never bans itself.

Besides scores: a token bucket per connection bounds requests per second, and another bounds the
model evaluations one connection can cause per minute (evaluation is the node's heaviest work).
Everything here is a pure function of its calls and `now`, like the engines.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

from node.ledger.errors import RejectReason

# Misbehaviour points per rejected record; a reason absent here weighs nothing.
PENALTIES: dict[RejectReason, float] = {
    RejectReason.MALFORMED: 20,
    RejectReason.MESSAGE_TOO_LARGE: 20,
    RejectReason.DIGEST_MISMATCH: 20,
    RejectReason.ADDRESS_MISMATCH: 20,
    RejectReason.BAD_SIGNATURE: 20,
    RejectReason.GENESIS_MISMATCH: 20,
    RejectReason.MODEL_SHAPE_MISMATCH: 20,
    RejectReason.NON_FINITE_WEIGHTS: 20,
    RejectReason.INSUFFICIENT_WORK: 20,
    RejectReason.TTL_ABOVE_MAXIMUM: 10,
    RejectReason.WRONG_CREATOR: 10,
    RejectReason.FROM_FUTURE: 2,  # a skewed clock, not necessarily malice
}
MAX_TRACKED = 10_000  # peers remembered at once; the least recently seen are forgotten


@dataclass(frozen=True)
class Limits:
    """What one node lets its peers cost it. The defaults are far above what a healthy
    paper-scale run needs (no refusal in experiments/smoke-dfl.yaml or scale-24.yaml)."""

    ban_score: float = 100.0
    ban_seconds: float = 600.0
    score_decay_per_second: float = 1.0  # a rare bad record from a peer fades away
    requests_per_second: float = 200.0  # per connection, gossip and open RPCs
    request_burst: float = 400.0
    evaluations_per_minute: float = 600.0  # new models one connection may have us evaluate
    # ML jobs queued on the node; beyond, new models are refused. Each holds a model (1.7 MB
    # for LeNet), and the queue must stay small against a node's 250-600 MB.
    max_pending_ml: int = 16
    max_concurrent_rpcs: int = 128
    max_request_bytes: int = 4096  # any request that carries no record or samples
    max_sample_batch_bytes: int = 8 * 1024 * 1024  # one InjectSamples message

    def __post_init__(self) -> None:
        bad = [
            field.name
            for field in fields(self)
            if not isinstance(getattr(self, field.name), int | float)
            or getattr(self, field.name) < 0
            or (field.name != "score_decay_per_second" and getattr(self, field.name) == 0)
        ]
        if bad:
            raise ValueError(f"limits must be positive numbers: {', '.join(bad)}")


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take` is False when none is left."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.at = rate, burst, burst, now

    def take(self, now: float, amount: float = 1.0) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def available(self, now: float) -> float:
        return min(self.burst, self.tokens + (now - self.at) * self.rate)


@dataclass
class Standing:
    """One peer's misbehaviour: its decaying score and, once banned, until when."""

    score: float = 0.0
    at: float = 0.0
    banned_until: float = 0.0

    def decayed(self, now: float, decay: float) -> float:
        return max(0.0, self.score - (now - self.at) * decay)


class _Recent(OrderedDict):
    """A mapping that forgets its least recently used entries beyond MAX_TRACKED."""

    def touch(self, key: str) -> None:
        self.move_to_end(key)
        while len(self) > MAX_TRACKED:
            self.popitem(last=False)


class Admission:
    """The node's decisions about its peers. Peers are strings: a connection (`ipv4:1.2.3.4:5`)
    or a generator (`generator:` and its hex address)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._standing: _Recent = _Recent()
        self._requests: _Recent = _Recent()
        self._evaluations: _Recent = _Recent()

    # --- scores and bans -------------------------------------------------------------------------

    def banned(self, peer: str, now: float) -> float | None:
        """Seconds of ban left, or None."""
        standing = self._standing.get(peer)
        if standing is None or standing.banned_until <= now:
            return None
        return standing.banned_until - now

    def penalize(self, peer: str, reason: RejectReason, now: float) -> bool:
        """Scores one rejected record; True when this pushed the peer over into a ban."""
        weight = PENALTIES.get(reason, 0.0)
        if weight == 0:
            return False
        standing = self._standing.get(peer) or Standing(at=now)
        standing.score = standing.decayed(now, self.limits.score_decay_per_second) + weight
        standing.at = now
        self._standing[peer] = standing
        self._standing.touch(peer)
        if standing.score < self.limits.ban_score or standing.banned_until > now:
            return False
        standing.banned_until = now + self.limits.ban_seconds
        return True

    def scores(self, now: float) -> dict[str, float]:
        """Every tracked peer's current score (after decay)."""
        decay = self.limits.score_decay_per_second
        return {peer: s.decayed(now, decay) for peer, s in self._standing.items()}

    def banned_peers(self, now: float) -> list[str]:
        return [peer for peer, s in self._standing.items() if s.banned_until > now]

    def banned_count(self, now: float) -> int:
        return sum(1 for s in self._standing.values() if s.banned_until > now)

    def forget_expired(self, now: float) -> None:
        """Drops peers whose score has decayed to nothing and whose ban is over."""
        decay = self.limits.score_decay_per_second
        gone = [
            peer
            for peer, s in self._standing.items()
            if s.banned_until <= now and s.decayed(now, decay) == 0
        ]
        for peer in gone:
            del self._standing[peer]

    # --- rates -----------------------------------------------------------------------------------

    def allow_request(self, peer: str, now: float) -> bool:
        """One request from `peer`'s connection, within its rate?"""
        limits = self.limits
        return self._bucket(
            self._requests, peer, limits.requests_per_second, limits.request_burst, now
        ).take(now)

    def can_evaluate(self, peer: str, now: float) -> bool:
        """May `peer` have us evaluate one more model now? (Charged by `evaluated`.)"""
        return self._evaluation_bucket(peer, now).available(now) >= 1.0

    def evaluated(self, peer: str, now: float, count: int = 1) -> None:
        bucket = self._evaluation_bucket(peer, now)
        bucket.tokens, bucket.at = bucket.available(now) - count, now

    def _evaluation_bucket(self, peer: str, now: float) -> TokenBucket:
        per_minute = self.limits.evaluations_per_minute
        return self._bucket(self._evaluations, peer, per_minute / 60.0, per_minute, now)

    @staticmethod
    def _bucket(buckets: _Recent, peer: str, rate: float, burst: float, now: float) -> TokenBucket:
        bucket = buckets.get(peer)
        if bucket is None:
            bucket = buckets[peer] = TokenBucket(rate, burst, now)
        buckets.touch(peer)
        return bucket


GENERATOR_PREFIX = "generator:"


def generator_peer(address: bytes) -> str:
    """The peer string under which a signing generator is scored."""
    return f"{GENERATOR_PREFIX}{address.hex()}"
