"""Node keys: ECDSA on NIST P-256 through OpenSSL (`cryptography`).

The DFL paper's nodes sign on secp256k1; this ledger uses P-256 because of what it costs. With
the chain in the simulator's loop every receipt takes about two signatures and two and a half
verifications, and on secp256k1 (python-ecdsa with gmpy2, 0.5 / 0.4-0.7 ms, or OpenSSL's generic
code, 0.35 / 0.31 ms) ECDSA alone was three quarters of the chain's CPU. OpenSSL's P-256 code
signs in 0.02 ms and verifies in 0.06 ms here. Nothing in the protocol depends on the curve.

Signatures are deterministic (RFC 6979) over a record's 32-byte digest, in the fixed 64-byte r||s
form. Verifying keys are parsed once per peer and cached. Key files are SEC1 PEM.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from node.ledger.hashing import address_of

CURVE = ec.SECP256R1()
# P-256's group order
ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
KEY_FILE = "node_key.pem"
PUBLIC_KEY_SIZE = 65
SIGNATURE_SIZE = 64
# The digest is already a 32-byte hash (BLAKE3); Prehashed takes it as it is.
_ALGORITHM = ec.ECDSA(Prehashed(hashes.SHA256()), deterministic_signing=True)


class KeyFileError(Exception):
    """A key file is missing, unreadable or not a P-256 key."""


@dataclass(frozen=True)
class NodeKey:
    """A node's signing key with its public key and address derived once."""

    signing_key: ec.EllipticCurvePrivateKey = field(repr=False)
    public_key: bytes
    address: bytes

    @classmethod
    def from_signing_key(cls, signing_key: ec.EllipticCurvePrivateKey) -> NodeKey:
        public_key = signing_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return cls(signing_key, public_key, address_of(public_key))

    @classmethod
    def generate(cls) -> NodeKey:
        return cls.from_signing_key(ec.generate_private_key(CURVE))

    @classmethod
    def from_seed(cls, seed: bytes) -> NodeKey:
        """A key derived from `seed`, for reproducible simulations and tests, never real nodes."""
        secret = int.from_bytes(hashlib.sha256(seed).digest(), "big") % (ORDER - 1)
        return cls.from_signing_key(ec.derive_private_key(secret + 1, CURVE))

    def sign(self, digest: bytes) -> bytes:
        r, s = decode_dss_signature(self.signing_key.sign(digest, _ALGORITHM))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def save(self, directory: Path, name: str = KEY_FILE) -> Path:
        """Writes the key as PEM, readable by the owner only; refuses to overwrite a key."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                self.signing_key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )
        return path

    @classmethod
    def load(cls, directory: Path, name: str = KEY_FILE) -> NodeKey:
        path = directory / name
        try:
            signing_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise KeyFileError(
                f"no key at {path}; create one with `dfl keygen {directory}`"
            ) from None
        except (ValueError, TypeError) as error:
            raise KeyFileError(f"{path} is not a PEM P-256 key: {error}") from None
        if not isinstance(signing_key, ec.EllipticCurvePrivateKey):
            raise KeyFileError(f"{path} holds a {type(signing_key).__name__}, not P-256")
        if signing_key.curve.name != CURVE.name:
            raise KeyFileError(f"{path} holds a {signing_key.curve.name} key, not P-256")
        return cls.from_signing_key(signing_key)

    @classmethod
    def load_or_create(cls, directory: Path, seed: bytes | None = None) -> NodeKey:
        """The node's key survives restarts: load it if the data directory has one, else make
        one (derived from `seed` when given, for a testbed's reproducible identities).

        A stored key that is not the one `seed` derives is refused: the directory belongs to
        another node of the experiment, or to another experiment."""
        if (directory / KEY_FILE).exists():
            key = cls.load(directory)
            if seed is not None and key.address != cls.from_seed(seed).address:
                raise KeyFileError(
                    f"{directory / KEY_FILE} is not this node's derived key (another node's or "
                    "another experiment's data directory); use a fresh data directory"
                )
            return key
        key = cls.generate() if seed is None else cls.from_seed(seed)
        key.save(directory)
        return key


@lru_cache(maxsize=4096)
def _verifying_key(public_key: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(CURVE, public_key)


def verify_signature(public_key: bytes, digest: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s signature of `digest`; False if malformed."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < ORDER and 0 < s < ORDER):
        return False
    try:
        _verifying_key(public_key).verify(encode_dss_signature(r, s), digest, _ALGORITHM)
    except (InvalidSignature, ValueError):
        return False
    return True
