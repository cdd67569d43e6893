"""Blockchain CPU per DFL transaction against its floor, and against the path it replaced.

For a LeNet-sized model (431,080 float32 parameters, 1.7 MB) this prints the thread CPU time of:

- the floor, measured here: what no receiver can skip (BLAKE3 of the weights, one P-256
  signature verified, one receipt signed);
- the receiver's real path: the DFL engine handling the transaction as gRPC delivers it (decode,
  every check, the weights kept as a view) and then its evaluation's result (the receipt signed
  and serialized), exactly what a node charges to receive_transaction's blockchain;
- the path before the receive path was taken down to its floor, replayed step by step in the
  same run (protobuf holding the weights, each read of them a copy, `np.isfinite` with its
  temporary, the node's second parse for a metric, the ML host's two copying decodes);
- the generator's side, old and new (the weights copied into protobuf, or joined on the wire);
- one LeNet forward pass on 100 samples, the evaluation the receipt reports on.

Each figure is the median over fresh payloads (a copy made just before, as gRPC's is), so the
weights are as warm in cache as a node's are. Ratios are printed against figures of the same run:
receiver / floor (target <= 1.5), old / new, receiver / evaluation. The hash and signature
candidates the ledger chose between are measured alongside, so the choice can be re-checked.

Run: python benchmarks/ledger_overhead.py [--repeat N] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable, Iterator

import blake3
import ecdsa
import numpy as np
import torch

from node.learning.codec import decode_f32le, encode_f32le, layer_shapes
from node.learning.models import build_model
from node.learning.training import configure_torch
from node.ledger import records
from node.ledger.hashing import model_digest
from node.ledger.keys import NodeKey, verify_signature
from node.ledger.validation import ValidationPolicy, decode, validate_transaction
from node.ledger.wire import join_model
from node.protocol.dfl import DflConfig, DflEngine
from node.protocol.events import Evaluate, EvaluationDone, TransactionReceived
from proto.dfl.v1 import records_pb2 as pb

FLOOR_TARGET = 1.5
QUICK_REPEAT = 15
NOW = 1_000.0


class Fixture:
    """A LeNet genesis, a generator and a receiver, and fresh signed transactions on demand."""

    def __init__(self) -> None:
        configure_torch(threads=1)
        self.model = build_model("lenet", seed=1)
        self.weights = encode_f32le(self.model)
        self.shapes = layer_shapes(self.model)
        self.genesis = records.make_genesis(
            protocol="dfl",
            model_architecture="lenet",
            layers=self.shapes,
            hyperparameters={"lr": 0.01},
            seed=1,
        )
        self.policy = ValidationPolicy.for_genesis(self.genesis)
        self.generator, self.receiver = NodeKey.generate(), NodeKey.generate()
        self._serial = 0

    def transaction(self, *, attach: bool = True) -> pb.Transaction:
        self._serial += 1  # a distinct create time: distinct digests, no duplicate refusals
        return records.make_transaction(
            self.generator,
            genesis_digest=self.genesis.digest,
            weights=self.weights,
            now_ms=round(NOW * 1000) - self._serial,
            ttl=1,
            lifetime_ms=600_000,
            attach_weights=attach,
        )

    def payloads(self) -> Iterator[bytes]:
        """Wire bytes of new transactions, each a fresh copy as gRPC hands one over."""
        while True:
            yield bytes(bytearray(self.transaction().SerializeToString()))

    def engine(self) -> DflEngine:
        config = DflConfig(fedavg_buffer=1_000_000, transactions_per_block=1_000_000)
        return DflEngine(self.receiver, self.genesis, config, peers=("generator",))


def cpu_ms(action: Callable[[bytes], object], inputs: Iterator[bytes], repeat: int) -> float:
    """Median thread CPU time of `action(next input)` in ms; inputs are made outside the timing."""
    action(next(inputs))
    samples = []
    for _ in range(repeat):
        data = next(inputs)
        start = time.thread_time_ns()
        action(data)
        samples.append((time.thread_time_ns() - start) / 1e6)
    return statistics.median(samples)


def floor_ms(fx: Fixture, repeat: int) -> tuple[float, float, float]:
    """(hash, verify, sign) of fresh payloads: the receiver's irreducible blockchain work."""
    payloads = fx.payloads()
    tx = fx.transaction()
    digest, signature, key = tx.digest, tx.signature, fx.generator.public_key
    prefix = len(next(payloads)) - len(fx.weights)  # the weights are the last field

    def hash_weights(data: bytes) -> None:
        model_digest(memoryview(data)[prefix:])

    hashed = cpu_ms(hash_weights, payloads, repeat)
    verified = cpu_ms(lambda _: verify_signature(key, digest, signature), payloads, repeat)
    signed = cpu_ms(lambda _: fx.receiver.sign(digest), payloads, repeat)
    return hashed, verified, signed


def receive_new(fx: Fixture) -> Callable[[bytes], None]:
    """The engine's receive path as a node runs it, receipt included."""
    engine = fx.engine()

    def receive(payload: bytes) -> None:
        actions = engine.handle(TransactionReceived(payload, "generator"), NOW)
        (evaluate,) = [a for a in actions if isinstance(a, Evaluate)]
        engine.handle(EvaluationDone(evaluate.transaction_digest, 0.9), NOW)

    return receive


def receive_old(fx: Fixture) -> tuple[Callable[[bytes], None], Callable[[bytes], None]]:
    """The path before, replayed: (the engine's blockchain part, the node's and host's copies)."""

    def engine_part(payload: bytes) -> None:
        tx = decode(pb.Transaction, payload, fx.policy.max_message_bytes)
        validate_transaction(tx, fx.policy, now_ms=round(NOW * 1000), weights="optional")
        np.isfinite(np.frombuffer(tx.model, dtype="<f4")).all()  # the scan it made then
        model = tx.model  # the engine's own read: a second copy
        stored = records.without_model(tx)
        receipt = records.make_receipt(fx.receiver, stored, accuracy=0.9, now_ms=round(NOW * 1000))
        stored.receipts.append(receipt)
        stored.SerializeToString()
        del model

    def outside_engine(payload: bytes) -> None:
        pb.Transaction.FromString(payload)  # the node parsed it again for a metric
        decode_f32le(pb.Transaction.FromString(payload).model, fx.shapes)  # evaluate's decode
        decode_f32le(payload[-len(fx.weights) :], fx.shapes)  # aggregate's decode

    return engine_part, outside_engine


def generate_old(fx: Fixture) -> Callable[[bytes], None]:
    def generate(_: bytes) -> None:
        fx.transaction().SerializeToString()

    return generate


def generate_new(fx: Fixture) -> Callable[[bytes], None]:
    def generate(_: bytes) -> None:
        join_model(fx.transaction(attach=False), fx.weights)

    return generate


def candidates(fx: Fixture, repeat: int) -> None:
    weights = fx.weights
    payloads = fx.payloads()
    print("hash of the model (candidates)")
    for name, digest in (
        ("sha256", lambda _: hashlib.sha256(weights).digest()),
        ("blake2b", lambda _: hashlib.blake2b(weights, digest_size=32).digest()),
        ("blake3 (chosen)", lambda _: blake3.blake3(weights).digest()),
    ):
        print(f"  {name:<40}{cpu_ms(digest, payloads, repeat):8.3f}")
    digest = fx.transaction().digest
    baseline = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    baseline_public = baseline.get_verifying_key()
    baseline_signature = baseline.sign_digest_deterministic(
        digest, sigencode=ecdsa.util.sigencode_string
    )
    signature = fx.generator.sign(digest)
    public = fx.generator.public_key
    print("ECDSA: the paper's secp256k1 (python-ecdsa, the baseline) against P-256 (OpenSSL)")
    k1_sign = cpu_ms(
        lambda _: baseline.sign_digest_deterministic(digest, sigencode=ecdsa.util.sigencode_string),
        payloads,
        repeat,
    )
    k1_verify = cpu_ms(
        lambda _: baseline_public.verify_digest(
            baseline_signature, digest, sigdecode=ecdsa.util.sigdecode_string
        ),
        payloads,
        repeat,
    )
    p256_sign = cpu_ms(lambda _: fx.generator.sign(digest), payloads, repeat)
    p256_verify = cpu_ms(lambda _: verify_signature(public, digest, signature), payloads, repeat)
    print(f"  {'secp256k1 sign / verify':<40}{k1_sign:8.3f} / {k1_verify:.3f}")
    print(
        f"  {'P-256 sign / verify (chosen)':<40}{p256_sign:8.3f} / {p256_verify:.3f}"
        f"   ({k1_sign / p256_sign:.0f}x / {k1_verify / p256_verify:.0f}x faster)"
    )


def evaluation_ms(fx: Fixture, repeat: int) -> float:
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (100, 1, 28, 28)))
    inputs = images.float() * fx.model.input_scale

    def evaluate(_: bytes) -> None:
        with torch.no_grad():
            fx.model(inputs).argmax(dim=1)

    return cpu_ms(evaluate, iter(lambda: b"", None), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Figures are thread CPU time; ratios are against figures of the same run.",
    )
    parser.add_argument("--repeat", type=int, default=200, help="timed repetitions per figure")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_REPEAT} repetitions: seconds, for CI to prove the benchmark still runs",
    )
    args = parser.parse_args()
    repeat = QUICK_REPEAT if args.quick else args.repeat
    if repeat < 1:
        parser.error("--repeat must be at least 1")

    fx = Fixture()
    print(f"model: LeNet, {len(fx.weights) // 4:,} float32 parameters, {len(fx.weights):,} bytes")
    print(f"thread CPU time, median of {repeat} fresh payloads, ms\n")
    candidates(fx, repeat)

    hashed, verified, signed = floor_ms(fx, repeat)
    floor = hashed + verified + signed
    new = cpu_ms(receive_new(fx), fx.payloads(), repeat)
    old_engine, old_outside = receive_old(fx)
    old = cpu_ms(old_engine, fx.payloads(), repeat)
    outside = cpu_ms(old_outside, fx.payloads(), repeat)
    generated_old = cpu_ms(generate_old(fx), fx.payloads(), repeat)
    generated_new = cpu_ms(generate_new(fx), fx.payloads(), repeat)
    evaluation = evaluation_ms(fx, max(5, repeat // 4))

    print("\nthe floor (per received transaction)")
    print(f"  {'BLAKE3 of the weights':<40}{hashed:8.3f}")
    print(f"  {'verify the generator signature':<40}{verified:8.3f}")
    print(f"  {'sign the receipt':<40}{signed:8.3f}")
    print(f"  {'floor':<40}{floor:8.3f}")
    print("receiver, per transaction")
    print(f"  {'before: engine (replayed)':<40}{old:8.3f}")
    print(f"  {'before: node + host copies and scans':<40}{outside:8.3f}")
    print(f"  {'now: engine (receive + receipt)':<40}{new:8.3f}   (node + host: no copy)")
    print("generator, per transaction")
    print(f"  {'before: weights copied into protobuf':<40}{generated_old:8.3f}")
    print(f"  {'now: weights joined on the wire':<40}{generated_new:8.3f}")
    print(f"  {'LeNet forward, 100 samples':<40}{evaluation:8.3f}")

    ratio = new / floor
    verdict = "meets" if ratio <= FLOOR_TARGET else "MISSES"
    print(f"\nreceiver / floor = {ratio:.2f}x ({verdict} the <= {FLOOR_TARGET}x target)")
    print(f"before / now, receiver = {(old + outside) / new:.1f}x (engine alone {old / new:.1f}x)")
    print(f"before / now, generator = {generated_old / generated_new:.2f}x")
    print(f"receiver blockchain / evaluation = {new / evaluation:.1%}")


if __name__ == "__main__":
    main()
