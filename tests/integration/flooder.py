"""A hostile peer, as its own process: floods one node's SubmitTransaction at a fixed rate.

    python -m tests.integration.flooder --target 127.0.0.1:PORT --kind mixed --rate 50 \
        --duration 20 [--connections 1] [--parameters 431080]
    python -m tests.integration.flooder --target ... --kind valid --weights FILE --identities 8

Kinds: bad-signature, wrong-genesis, wrong-shape and garbage are forged records (what an
attacker who cannot sign for anyone sends); mixed cycles through the four. valid sends records
that pass every check: signed by `--identities` fresh keys under the node's genesis, carrying
the weights in `--weights` (raw float32, e.g. the node's own model from a signed GetModel),
each a new transaction the node must evaluate.

Everything is built before the first send, so the rate is the network's and the node's, not
ours: the records' small signed part is made ahead, and for a valid record the model field
(the same bytes in every one) is appended at send time. Protobuf parses concatenated encodings
as one message, so the node sees an ordinary transaction. The genesis digest comes from the
node's GetStatus over the first connection; `--connections` channels each get a connection of
their own (the node scores, rate-limits and bans per connection).

Output: one JSON line a second on stdout, counts since the start: `by_status` (gRPC status
names), `by_reason` (the label before ": " in a refusal's details, `accepted` for OK), `sent`,
`skipped` (sends not made because `--max-in-flight` calls were outstanding), the Unix times of
the first send (`first_sent`) and of the first refusal whose details start with "banned"
(`first_banned`) or "queue_full" (`first_queue_full`), and `not_banned_after_ban`: replies to
calls sent after the first ban that were not a ban. The last line has "done": true.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc

from node.ledger import records
from node.ledger.hashing import digest_message
from node.ledger.keys import NodeKey
from node.service.peers import CHANNEL_OPTIONS, SERVICE
from proto.dfl.v1 import node_pb2, node_pb2_grpc
from proto.dfl.v1 import records_pb2 as pb

FORGED_KINDS = ("bad-signature", "wrong-genesis", "wrong-shape", "garbage")
KINDS = (*FORGED_KINDS, "mixed", "valid")
LENET_PARAMETERS = 431_080
POOL_PER_KIND = 4  # forged records are resent: a refused record leaves no trace to dedupe on
LIFETIME_MS = 120_000
CALL_TIMEOUT = 10.0
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- records -------------------------------------------------------------------------------------


def forged_records(
    kind: str, genesis_digest: bytes, parameters: int, count: int = POOL_PER_KIND
) -> list[bytes]:
    """`count` forged SubmitTransaction payloads of `kind` (one of FORGED_KINDS)."""
    rng = random.Random(f"{kind}:{count}")
    now_ms = int(time.time() * 1000)
    zeros = bytes(parameters * 4)
    out = []
    for i in range(count):
        if kind == "garbage":
            out.append(rng.randbytes(4096))
            continue
        genesis, weights = genesis_digest, zeros
        if kind == "wrong-genesis":
            genesis = hashlib.sha256(b"another experiment").digest()[: len(genesis_digest)]
        elif kind == "wrong-shape":
            weights = bytes(4000)  # signed, but not the genesis model's size
        elif kind != "bad-signature":
            raise ValueError(f"not a forged kind: {kind!r}")
        tx = records.make_transaction(
            NodeKey.generate(),
            genesis_digest=genesis,
            weights=weights,
            now_ms=now_ms - i,
            ttl=1,
            lifetime_ms=LIFETIME_MS,
        )
        if kind == "bad-signature":
            signature = bytearray(tx.signature)
            signature[5] ^= 0x40
            tx.signature = bytes(signature)
        out.append(tx.SerializeToString())
    return out


class ValidRecords:
    """Valid transactions of `identities` fresh generators, all carrying `weights`: the signed
    part of each is made now, the model appended when `payload` is called."""

    def __init__(
        self,
        genesis_digest: bytes,
        weights: bytes,
        identities: int,
        count: int,
        *,
        ttl: int = 1,
        lifetime_ms: int = LIFETIME_MS,
    ) -> None:
        keys = [NodeKey.generate() for _ in range(identities)]
        template = records.make_transaction(
            keys[0],
            genesis_digest=genesis_digest,
            weights=weights,
            now_ms=0,
            ttl=ttl,
            lifetime_ms=lifetime_ms,
        )
        self._model_field = pb.Transaction(model=weights).SerializeToString()
        now_ms = int(time.time() * 1000)
        self.headers: list[bytes] = []
        for i in range(count):
            key = keys[i % identities]
            body = pb.TransactionBody()
            body.CopyFrom(template.body)
            body.generator.CopyFrom(records.node_info(key))
            body.create_time_ms = now_ms - i  # distinct digests, never from the future
            body.expire_time_ms = body.create_time_ms + lifetime_ms
            digest = digest_message(body)
            tx = pb.Transaction(body=body, digest=digest, signature=key.sign(digest))
            self.headers.append(tx.SerializeToString())

    def __len__(self) -> int:
        return len(self.headers)

    def payload(self, index: int) -> bytes:
        return self.headers[index] + self._model_field


# --- the flood -----------------------------------------------------------------------------------


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The node's refusal label (`banned: ...` -> banned); `other` for a refusal without one
    (gRPC's own, such as its concurrent-RPC limit)."""
    details = error.details() or ""
    label, colon, _ = details.partition(": ")
    return label if colon and label.replace("_", "").isalpha() and label.islower() else "other"


class Tally:
    """What came back, cumulative, as the JSON lines print it."""

    def __init__(self) -> None:
        self.by_status: Counter[str] = Counter()
        self.by_reason: Counter[str] = Counter()
        self.sent = 0
        self.skipped = 0
        self.in_flight = 0
        self.first_sent: float | None = None
        self.first_banned: float | None = None
        self.first_queue_full: float | None = None
        self.not_banned_after_ban = 0

    def answered(self, sent_at: float, status: str, reason: str) -> None:
        now = time.time()
        self.by_status[status] += 1
        self.by_reason[reason] += 1
        if reason == "banned" and self.first_banned is None:
            self.first_banned = now
        if reason == "queue_full" and self.first_queue_full is None:
            self.first_queue_full = now
        if self.first_banned is not None and sent_at > self.first_banned and reason != "banned":
            self.not_banned_after_ban += 1

    def line(self, **extra: object) -> str:
        elapsed = time.time() - self.first_sent if self.first_sent is not None else 0.0
        return json.dumps(
            {
                "t": round(elapsed, 2),
                "sent": self.sent,
                "skipped": self.skipped,
                "in_flight": self.in_flight,
                "by_status": dict(self.by_status),
                "by_reason": dict(self.by_reason),
                "first_sent": self.first_sent,
                "first_banned": self.first_banned,
                "first_queue_full": self.first_queue_full,
                "not_banned_after_ban": self.not_banned_after_ban,
                **extra,
            },
            sort_keys=True,
        )


def open_channel(target: str) -> grpc.aio.Channel:
    """A channel on a connection of its own (gRPC shares one per target by default)."""
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    return grpc.aio.insecure_channel(target, options=options)


async def flood(
    payloads: Callable[[int], bytes],
    *,
    channels: list[grpc.aio.Channel],
    rate: float,
    duration: float,
    max_in_flight: int,
    tally: Tally,
) -> None:
    """Sends payloads(0), payloads(1), ... at `rate` a second for `duration` seconds,
    round-robin over `channels`, printing the tally every second."""
    calls = [
        channel.unary_unary(
            f"/{SERVICE}/SubmitTransaction",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        for channel in channels
    ]
    pending: set[asyncio.Task[None]] = set()

    async def one(index: int) -> None:
        sent_at = time.time()
        tally.in_flight += 1
        try:
            await calls[index % len(calls)](payloads(index), timeout=CALL_TIMEOUT)
            tally.answered(sent_at, "OK", "accepted")
        except grpc.aio.AioRpcError as error:
            tally.answered(sent_at, error.code().name, reason_of(error))
        finally:
            tally.in_flight -= 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    next_print = start + 1.0
    index = 0
    while (now := loop.time()) < start + duration:
        due = start + index / rate
        if now < due:
            await asyncio.sleep(min(due, next_print) - now)
        elif tally.in_flight >= max_in_flight:
            tally.skipped += 1
            index += 1
        else:
            if tally.first_sent is None:
                tally.first_sent = time.time()
            task = asyncio.ensure_future(one(index))
            pending.add(task)
            task.add_done_callback(pending.discard)
            tally.sent += 1
            index += 1
        if loop.time() >= next_print:
            print(tally.line(), flush=True)
            next_print += 1.0
    if pending:
        await asyncio.wait(pending, timeout=CALL_TIMEOUT + 1)


async def main_async(args: argparse.Namespace) -> int:
    channels = [open_channel(args.target) for _ in range(args.connections)]
    try:
        stub = node_pb2_grpc.NodeStub(channels[0])
        status = await stub.GetStatus(node_pb2.StatusRequest(), timeout=10)
        genesis = status.genesis_digest
        if args.kind == "valid":
            weights = Path(args.weights).read_bytes()
            count = int(args.rate * args.duration) + 1
            valid = ValidRecords(genesis, weights, args.identities, count, ttl=args.ttl)
            payloads: Callable[[int], bytes] = lambda i: valid.payload(i % len(valid))  # noqa: E731
        else:
            kinds = FORGED_KINDS if args.kind == "mixed" else (args.kind,)
            pool = [r for kind in kinds for r in forged_records(kind, genesis, args.parameters)]
            # mixed: one of each kind in turn (the pool is kind-major)
            order = sorted(range(len(pool)), key=lambda i: (i % POOL_PER_KIND, i))
            payloads = lambda i: pool[order[i % len(pool)]]  # noqa: E731
        tally = Tally()
        print(json.dumps({"ready": True, "kind": args.kind, "rate": args.rate}), flush=True)
        await flood(
            payloads,
            channels=channels,
            rate=args.rate,
            duration=args.duration,
            max_in_flight=args.max_in_flight,
            tally=tally,
        )
        print(tally.line(done=True), flush=True)
    finally:
        for channel in channels:
            await channel.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the node's host:port")
    parser.add_argument("--kind", choices=KINDS, default="mixed")
    parser.add_argument("--rate", type=float, default=50.0, help="sends per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument(
        "--parameters", type=int, default=LENET_PARAMETERS, help="the genesis model's size"
    )
    parser.add_argument("--weights", help="valid: raw float32 weights to send")
    parser.add_argument("--identities", type=int, default=8, help="valid: signing keys")
    parser.add_argument("--ttl", type=int, default=1, help="valid: the experiment's ttl")
    args = parser.parse_args(argv)
    if args.kind == "valid" and not args.weights:
        parser.error("--kind valid needs --weights")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
