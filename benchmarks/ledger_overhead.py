"""Blockchain CPU per DFL transaction, against the ML work it accompanies.

Prints, for a LeNet-sized model (431,080 float32 parameters, 1.7 MB), the thread CPU time of:
  - the generator's blockchain work per transaction (model digest, body digest, signature);
  - a receiver's (digest checks, address and signature verification, receipt digest + signature);
  - one LeNet forward pass on 100 samples (the receiver's evaluation), measured in the same run;
and the ratio receiver / evaluation (target: <= 10 %). The candidates the ledger chose between
(SHA-256, BLAKE2b, BLAKE3; verification with and without ecdsa's precomputed table) are measured
alongside, so the choice can be re-checked on any machine.

Run: python benchmarks/ledger_overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from collections.abc import Callable

import blake3
import ecdsa
import numpy as np
import torch
from ecdsa.util import sigdecode_string

from node.learning.codec import encode_f32le, layer_shapes
from node.learning.models import build_model
from node.learning.training import configure_torch
from node.ledger import records
from node.ledger.keys import NodeKey, verify_signature
from node.ledger.validation import ValidationPolicy, validate_transaction
from proto.dfl.v1 import records_pb2 as pb

TARGET_RATIO = 0.10


def cpu_ms(action: Callable[[], object], repeat: int) -> float:
    """Median thread CPU time of `action` in milliseconds (one warm-up call first)."""
    action()
    samples = []
    for _ in range(repeat):
        start = time.thread_time_ns()
        action()
        samples.append((time.thread_time_ns() - start) / 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="timed repetitions per figure")
    args = parser.parse_args()
    repeat = args.repeat

    configure_torch(threads=1)
    model = build_model("lenet", seed=1)
    weights = encode_f32le(model)
    genesis = records.make_genesis(
        protocol="dfl",
        model_architecture="lenet",
        layers=layer_shapes(model),
        hyperparameters={"lr": 0.01},
        seed=1,
    )
    policy = ValidationPolicy.for_genesis(genesis)
    generator, receiver = NodeKey.generate(), NodeKey.generate()
    now_ms = 1_000_000

    def generate() -> pb.Transaction:
        return records.make_transaction(
            generator,
            genesis_digest=genesis.digest,
            weights=weights,
            now_ms=now_ms,
            ttl=1,
            lifetime_ms=120_000,
        )

    tx = generate()
    wire = tx.SerializeToString()

    def receive() -> None:
        validate_transaction(tx, policy, now_ms=now_ms)
        records.make_receipt(receiver, tx, accuracy=0.9, now_ms=now_ms)

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (100, 1, 28, 28)))
    inputs = images.float() * model.input_scale

    def evaluate() -> None:
        with torch.no_grad():
            model(inputs).argmax(dim=1)

    print(f"model: LeNet, {len(weights) // 4:,} float32 parameters, {len(weights):,} bytes")
    print(f"thread CPU time, median of {repeat} runs, ms\n")
    print("hash of the model (candidates)")
    for name, digest in (
        ("sha256", lambda: hashlib.sha256(weights).digest()),
        ("blake2b", lambda: hashlib.blake2b(weights, digest_size=32).digest()),
        ("blake3 (chosen)", lambda: blake3.blake3(weights).digest()),
    ):
        print(f"  {name:<34}{cpu_ms(digest, repeat):8.3f}")

    digest = tx.digest
    sk = ecdsa.SigningKey.generate(curve=ecdsa.SECP256k1)
    plain_key = sk.get_verifying_key()
    signature = sk.sign_digest_deterministic(digest, sigencode=ecdsa.util.sigencode_string)
    cached_key = NodeKey.from_signing_key(sk)

    print("ECDSA secp256k1, python-ecdsa + gmpy2")
    print(f"  {'sign (RFC 6979)':<34}{cpu_ms(lambda: cached_key.sign(digest), repeat):8.3f}")
    plain = cpu_ms(
        lambda: plain_key.verify_digest(signature, digest, sigdecode=sigdecode_string), repeat
    )
    print(f"  {'verify, plain key':<34}{plain:8.3f}")
    cached = cpu_ms(lambda: verify_signature(cached_key.public_key, digest, signature), repeat)
    print(f"  {'verify, precomputed key (chosen)':<34}{cached:8.3f}")

    parse = cpu_ms(lambda: pb.Transaction.FromString(wire), repeat)
    serialize = cpu_ms(lambda: tx.SerializeToString(), repeat)
    print("network (not blockchain): the transaction as protobuf")
    print(f"  {'serialize':<34}{serialize:8.3f}")
    print(f"  {'parse':<34}{parse:8.3f}")

    generator_ms = cpu_ms(generate, repeat)
    receiver_ms = cpu_ms(receive, repeat)
    evaluation_ms = cpu_ms(evaluate, max(20, repeat // 4))
    ratio = receiver_ms / evaluation_ms
    print("\nper transaction")
    print(f"  {'generator blockchain (digest+sign)':<34}{generator_ms:8.3f}")
    print(f"  {'receiver blockchain (check+receipt)':<34}{receiver_ms:8.3f}")
    print(f"  {'LeNet forward, 100 samples':<34}{evaluation_ms:8.3f}")
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"\nreceiver blockchain / evaluation = {ratio:.1%} ({verdict} the <= 10 % target)")


if __name__ == "__main__":
    main()
