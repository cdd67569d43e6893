"""`python -m node.healthcheck`: does the node in this container say it is SERVING?

Docker runs this every interval in every node container (two dozen containers on two cores), so
it is deliberately tiny: no grpc, no protobuf, nothing of the node is imported. It speaks just
enough HTTP/2 on a plain socket (h2c, prior knowledge, as gRPC's insecure channels do; or over
the standard library's TLS) to make one unary call of the standard health service,
`/grpc.health.v1.Health/Check`, with an empty `HealthCheckRequest` (service "": the server as a
whole), and decode the one field of its answer. Any other client of that service (Kubernetes'
gRPC probe, grpc_health_probe, grpcurl) gets the same answer (node/service/health.py).

Healthy (exit 0): the response message says SERVING. Unhealthy (exit 1, one line on stdout saying
why): NOT_SERVING (the node is still verifying its chain store at start-up, or stopping), no
connection, a failed TLS handshake, a reset or refused stream, a trailers-only (error) answer, or
no answer within the timeout.

Where and how to call: the node writes `health-probe.json` into its data directory when it starts
listening (its port, and its TLS files or null); this reads `$DFL_NODE_DATA_DIR/health-probe.json`
when there is one, so that a node serving mutual TLS is checked over TLS with the node's own
certificate (the server is checked against the run's CA, not by name: it is this container's own
loopback). Without the file: `$DFL_NODE_PORT` (default 50051), plaintext. `--port`, `--timeout`
and `--tls DIR` (DIR holding ca.crt, node.crt and node.key) override. Importing grpc alone costs
about 0.1 s of CPU; this costs about a third of that (mostly the interpreter's own start), and
imports `ssl` only to speak TLS.

The timeout is for a starved container, not an idle one: with fifty nodes on two cores, Docker's
exec plus this interpreter's start took up to 11 s of wall time while the node itself answered
in under 2 s. A 5 s limit turned such waits into failed checks, and three in a row into an
"unhealthy" node that was serving all along. A node that does not answer in DEFAULT_TIMEOUT is
hung, not slow; the Dockerfile gives Docker's own limit some seconds more, so that this message,
not Docker's "exceeded timeout", says what went wrong.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from collections.abc import Mapping

METHOD = "/grpc.health.v1.Health/Check"
PROBE_FILE = "health-probe.json"  # in the node's data directory (node/service/health.py)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113, section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
STREAM = 1  # the one stream this client opens
DEFAULT_TIMEOUT = 20.0  # seconds; the Dockerfile's HEALTHCHECK --timeout is 30 s
DEFAULT_PORT = 50051
# HealthCheckResponse.ServingStatus (grpc/health/v1/health.proto)
STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
SERVING = 1
NOT_SERVING = 2


class Unhealthy(Exception):
    """The node did not say SERVING; the message says why."""


# The PEM files of the node's mutual TLS (CA, certificate, private key), as its config names
# them. Plain tuples: `typing` is one more import on every check.
Tls = tuple[str, str, str]


def tls_in(directory: str) -> Tls:
    """The layout of a node's `tls/` folder (orchestrator/certificates.py)."""
    ca, cert, key = (os.path.join(directory, name) for name in ("ca.crt", "node.crt", "node.key"))
    return ca, cert, key


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman (all short)."""
    raw_name, raw_value = name.encode(), value.encode()
    assert len(raw_name) < 127 and len(raw_value) < 127
    return b"\x00" + bytes([len(raw_name)]) + raw_name + bytes([len(raw_value)]) + raw_value


def request(authority: str, scheme: str = "http") -> bytes:
    headers = b"".join(
        literal(name, value)
        for name, value in (
            (":method", "POST"),
            (":scheme", scheme),
            (":path", METHOD),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )
    message = b"\x00" + struct.pack(">I", 0)  # uncompressed, empty HealthCheckRequest
    return (
        PREFACE
        + frame(SETTINGS, 0, 0)
        + frame(HEADERS, END_HEADERS, STREAM, headers)
        + frame(DATA, END_STREAM, STREAM, message)
    )


def varint(data: bytes, at: int) -> tuple[int, int]:
    """The protobuf varint at `at`, and where the next field starts."""
    value = shift = 0
    while True:
        if at >= len(data):
            raise Unhealthy("Health/Check answered with a truncated message")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def serving_status(message: bytes) -> int:
    """Field 1 (`status`, a varint) of a HealthCheckResponse; absent means UNKNOWN (0)."""
    status, at = 0, 0
    while at < len(message):
        key, at = varint(message, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = varint(message, at)
            if number == 1:
                status = value
        elif wire == 2:
            size, at = varint(message, at)
            at += size
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise Unhealthy(f"Health/Check answered with a malformed message (wire type {wire})")
    return status


def read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise Unhealthy("connection closed before Health/Check answered")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def over_tls(plain: socket.socket, tls: Tls) -> socket.socket:
    """A client of the node's own TLS: its CA trusted, its certificate shown, HTTP/2 offered.
    `ssl` is imported here: a plaintext check does not pay for loading OpenSSL."""
    import ssl

    ca, cert, key = tls
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False  # our own loopback; the CA is what is checked
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    return context.wrap_socket(plain)


def answer(sock: socket.socket, deadline: float) -> bytes:
    """The response message of our stream (without its 5-byte prefix)."""
    body = b""
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        header = read_exactly(sock, 9)
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        payload = read_exactly(sock, length)
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            sock.sendall(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            code = int.from_bytes(payload[4:8], "big") if len(payload) >= 8 else -1
            raise Unhealthy(f"server sent GOAWAY (error code {code})")
        elif stream != STREAM:
            continue
        elif kind == RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            raise Unhealthy(f"server reset the Health/Check stream (error code {code})")
        elif kind == DATA:
            body += payload
            if len(body) >= 5 and len(body) >= 5 + int.from_bytes(body[1:5], "big"):
                return body[5 : 5 + int.from_bytes(body[1:5], "big")]
        elif kind == HEADERS and flags & END_STREAM:
            raise Unhealthy("Health/Check failed: the server answered with an error status")


def check(host: str, port: int, timeout: float, tls: Tls | None = None) -> None:
    """Returns when the node says SERVING; raises Unhealthy otherwise. `tls`: speak TLS with
    these files."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as plain:
            sock = plain if tls is None else over_tls(plain, tls)
            sock.sendall(request(f"{host}:{port}", "http" if tls is None else "https"))
            status = serving_status(answer(sock, deadline))
    except TimeoutError:
        raise Unhealthy(f"Health/Check did not answer within {timeout:g} s") from None
    except OSError as error:
        if hasattr(error, "library"):  # ssl.SSLError, told apart without importing ssl
            reason = getattr(error, "reason", None) or error
            raise Unhealthy(f"TLS with {host}:{port} failed: {reason}") from None
        raise Unhealthy(f"cannot reach {host}:{port}: {error.strerror or error}") from None
    if status == NOT_SERVING:
        raise Unhealthy("NOT_SERVING (chain store still being verified, or the node is stopping)")
    if status != SERVING:
        raise Unhealthy(f"Health/Check answered {STATUSES.get(status, status)}")


def target(environ: Mapping[str, str]) -> tuple[int, Tls | None]:
    """(port, TLS files or None): what the node wrote into its data directory's probe file,
    else `$DFL_NODE_PORT` in plaintext."""
    port = int(environ.get("DFL_NODE_PORT") or DEFAULT_PORT)
    data_dir = environ.get("DFL_NODE_DATA_DIR")
    if not data_dir:
        return port, None
    try:
        with open(os.path.join(data_dir, PROBE_FILE), "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return port, None
    import json  # only where there is a file to read

    probe = json.loads(raw)
    tls = probe.get("tls")
    return int(probe.get("port") or port), (tls["ca"], tls["cert"], tls["key"]) if tls else None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    timeout = DEFAULT_TIMEOUT
    try:
        port, tls = target(os.environ)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"unhealthy: cannot read the node's {PROBE_FILE}: {error}")
        return 1
    try:
        while args:
            option, value, *args = args
            if option == "--port":
                port = int(value)
            elif option == "--timeout":
                timeout = float(value)
            elif option == "--tls":
                tls = tls_in(value)
            else:
                raise ValueError(option)
    except ValueError:
        print("usage: python -m node.healthcheck [--port PORT] [--timeout SECONDS] [--tls DIR]")
        return 2
    try:
        check("127.0.0.1", port, timeout, tls)
    except Unhealthy as problem:
        print(f"unhealthy: {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
