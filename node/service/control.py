"""The control plane: only the orchestrator's key may feed, rewire or read a node.

Records a node gossips are signed by their creators, so anyone may submit them. The control calls
(`CONTROL_METHODS`) change what a node learns from or whom it talks to, or read its model, so each
carries a signature in gRPC metadata by the run's orchestrator key over (method, the node's
ledger address, time, nonce). The node checks it before doing anything: the address binds the
call to one node, the time window bounds how long a captured call stays usable, and the nonce,
remembered for that window, makes it usable once.

The orchestrator key is a P-256 key like a node's (node/ledger/keys.py): one signing primitive
for the whole testbed. A run makes its own (saved in the run directory, owner-only); `dfl
control-key DIR` makes one for nodes started by hand, whose configs then name its public key.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.ledger.hashing import digest_bytes
from node.ledger.keys import PUBLIC_KEY_SIZE, KeyFileError, NodeKey, verify_signature

CONTROL_METHODS = frozenset(
    {"InjectSamples", "AddPeer", "RemovePeer", "GetModel", "SetNetworkFault"}
)
KEY_FILE = "control_key.pem"
PUBLIC_FILE = "control_key.pub"  # the public key in hex, what node configs name

# gRPC metadata keys; binary values need the -bin suffix.
KEY_HEADER = "dfl-control-key-bin"
TIME_HEADER = "dfl-control-time"
NONCE_HEADER = "dfl-control-nonce"
SIGNATURE_HEADER = "dfl-control-signature-bin"

WINDOW_MS = 30_000  # clocks of the orchestrator and its nodes may differ by this much
NONCE_BYTES = 16
MAX_REMEMBERED_NONCES = 100_000

Metadata = tuple[tuple[str, str | bytes], ...]


class ControlRefused(Exception):
    """A control call without the right signature; `status` is the gRPC status name to answer."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _signed_digest(method: str, node_address: bytes, time_ms: int, nonce: str) -> bytes:
    message = f"{method}\n{node_address.hex()}\n{time_ms}\n{nonce}".encode()
    return digest_bytes("control call", message)


def parse_public_key(text: str) -> bytes:
    """A public key as node configs hold it (hex of the uncompressed point); ValueError if not."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ValueError("a control key is the hex of a 65-byte P-256 public key") from None
    if len(key) != PUBLIC_KEY_SIZE or key[0] != 4:
        raise ValueError(
            f"a control key is the hex of a 65-byte P-256 public key (04...), not {len(key)} bytes"
        )
    return key


@dataclass(frozen=True)
class ControlSigner:
    """The orchestrator's side: metadata that authorises one call to one node."""

    key: NodeKey

    @classmethod
    def generate(cls) -> ControlSigner:
        return cls(NodeKey.generate())

    @classmethod
    def load(cls, path: Path) -> ControlSigner:
        """A PEM key file, as `dfl control-key` or a run writes it."""
        if not path.is_file():
            raise KeyFileError(f"no control key at {path}; make one with `dfl control-key DIR`")
        try:
            return cls(NodeKey.load(path.parent, path.name))
        except KeyFileError as error:
            raise KeyFileError(f"control key: {error}") from None

    @property
    def public_hex(self) -> str:
        return self.key.public_key.hex()

    def save(self, directory: Path) -> Path:
        """KEY_FILE (owner-only; never overwritten) and PUBLIC_FILE in `directory`."""
        path = self.key.save(directory, KEY_FILE)
        (directory / PUBLIC_FILE).write_text(self.public_hex + "\n")
        return path

    def metadata(self, method: str, node_address: bytes, *, now: float | None = None) -> Metadata:
        """Fresh metadata (a new nonce) for one call of `method` on the node at `node_address`."""
        time_ms = int((time.time() if now is None else now) * 1000)
        nonce = secrets.token_hex(NONCE_BYTES)
        signature = self.key.sign(_signed_digest(method, node_address, time_ms, nonce))
        return (
            (KEY_HEADER, self.key.public_key),
            (TIME_HEADER, str(time_ms)),
            (NONCE_HEADER, nonce),
            (SIGNATURE_HEADER, signature),
        )


class NonceMemory:
    """Nonces seen inside the time window, oldest first; older ones can no longer be replayed."""

    def __init__(self, window_ms: int, capacity: int = MAX_REMEMBERED_NONCES) -> None:
        self._window_ms = window_ms
        self._capacity = capacity
        self._seen: OrderedDict[str, int] = OrderedDict()  # nonce -> time_ms of its call

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._seen

    def remember(self, nonce: str, now_ms: int) -> None:
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at >= now_ms - 2 * self._window_ms and len(self._seen) < self._capacity:
                break
            del self._seen[oldest]
        self._seen[nonce] = now_ms


class ControlVerifier:
    """The node's side: is this call signed by a trusted key, for us, now, for the first time?

    With no trusted key every control call is refused (PERMISSION_DENIED), saying how to give
    the node one: a node nobody configured takes orders from nobody.
    """

    def __init__(
        self, trusted: Iterable[bytes], node_address: bytes, window_ms: int = WINDOW_MS
    ) -> None:
        self.trusted = frozenset(trusted)
        self._address = node_address
        self._window_ms = window_ms
        self._nonces = NonceMemory(window_ms)

    def check(self, method: str, metadata: Sequence[tuple[str, str | bytes]], now: float) -> None:
        """Returns when the call may proceed; raises ControlRefused otherwise. Only a call that
        passes leaves a trace (its nonce), so refused calls change nothing."""
        headers = dict(metadata)
        key, stamp = headers.get(KEY_HEADER), headers.get(TIME_HEADER)
        nonce, signature = headers.get(NONCE_HEADER), headers.get(SIGNATURE_HEADER)
        if key is None or stamp is None or nonce is None or signature is None:
            raise ControlRefused(
                "UNAUTHENTICATED",
                f"{method} is a control call: it needs the orchestrator's signature "
                f"({KEY_HEADER}, {TIME_HEADER}, {NONCE_HEADER}, {SIGNATURE_HEADER})",
            )
        if not self.trusted:
            raise ControlRefused(
                "PERMISSION_DENIED",
                "this node trusts no control key; start it with control_key (node config or "
                "DFL_NODE_CONTROL_KEY, see `dfl control-key --help`)",
            )
        if not isinstance(key, bytes) or key not in self.trusted:
            raise ControlRefused("PERMISSION_DENIED", "signed by a key this node does not trust")
        if not isinstance(stamp, str) or not stamp.isdigit() or len(stamp) > 16:
            raise ControlRefused("UNAUTHENTICATED", f"{TIME_HEADER} is not milliseconds")
        time_ms, now_ms = int(stamp), int(now * 1000)
        if abs(time_ms - now_ms) > self._window_ms:
            raise ControlRefused(
                "UNAUTHENTICATED",
                f"signed {(now_ms - time_ms) / 1000:.0f} s from now; the window is "
                f"{self._window_ms / 1000:.0f} s (check both clocks)",
            )
        if not isinstance(nonce, str) or len(nonce) != 2 * NONCE_BYTES:
            raise ControlRefused("UNAUTHENTICATED", f"{NONCE_HEADER} is not {NONCE_BYTES} bytes")
        if not isinstance(signature, bytes) or not verify_signature(
            key, _signed_digest(method, self._address, time_ms, nonce), signature
        ):
            raise ControlRefused(
                "UNAUTHENTICATED", "the signature does not verify (for this method and node)"
            )
        if nonce in self._nonces:
            raise ControlRefused("UNAUTHENTICATED", "nonce already used: a replayed call")
        self._nonces.remember(nonce, now_ms)
