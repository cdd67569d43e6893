"""`python -m node.healthcheck`: does the node in this container answer GetStatus?

Docker runs this every interval in every node container (two dozen containers on two cores), so
it is deliberately tiny: no grpc, no protobuf, nothing of the node is imported. It speaks just
enough HTTP/2 (h2c, prior knowledge, as gRPC's insecure channels do) on a plain socket to make one
unary call of `/dfl.v1.Node/GetStatus` with an empty `StatusRequest` and wait for the reply.

Healthy (exit 0): the server sent a response message (a length-prefixed gRPC message in a DATA
frame on our stream), which a gRPC server does only for a call that succeeded. Unhealthy (exit 1,
one line on stdout saying why): no connection, a reset or refused stream, a trailers-only
(error) answer, or no answer within the timeout.

The port is `$DFL_NODE_PORT` (default 50051); `--port` and `--timeout` override.
Importing grpc alone costs about 0.1 s of CPU; this costs about a third of that (mostly the
interpreter's own start).

The timeout is for a starved container, not an idle one: with fifty nodes on two cores, Docker's
exec plus this interpreter's start took up to 11 s of wall time while GetStatus itself answered
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

METHOD = "/dfl.v1.Node/GetStatus"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113, section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
STREAM = 1  # the one stream this client opens
DEFAULT_TIMEOUT = 20.0  # seconds; the Dockerfile's HEALTHCHECK --timeout is 30 s


class Unhealthy(Exception):
    """The node did not answer GetStatus; the message says why."""


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


def request(authority: str) -> bytes:
    headers = b"".join(
        literal(name, value)
        for name, value in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", METHOD),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )
    message = b"\x00" + struct.pack(">I", 0)  # uncompressed, empty StatusRequest
    return (
        PREFACE
        + frame(SETTINGS, 0, 0)
        + frame(HEADERS, END_HEADERS, STREAM, headers)
        + frame(DATA, END_STREAM, STREAM, message)
    )


def read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise Unhealthy("connection closed before GetStatus answered")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def check(host: str, port: int, timeout: float) -> None:
    """Returns when GetStatus answers; raises Unhealthy otherwise."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request(f"{host}:{port}"))
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
                    raise Unhealthy(f"server reset the GetStatus stream (error code {code})")
                elif kind == DATA:
                    body += payload
                    if len(body) >= 5 and len(body) >= 5 + int.from_bytes(body[1:5], "big"):
                        return
                elif kind == HEADERS and flags & END_STREAM:
                    raise Unhealthy("GetStatus failed: the server answered with an error status")
    except TimeoutError:
        raise Unhealthy(f"GetStatus did not answer within {timeout:g} s") from None
    except OSError as error:
        raise Unhealthy(f"cannot reach {host}:{port}: {error.strerror or error}") from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    port = int(os.environ.get("DFL_NODE_PORT") or 50051)
    timeout = DEFAULT_TIMEOUT
    try:
        while args:
            option, value, *args = args
            if option == "--port":
                port = int(value)
            elif option == "--timeout":
                timeout = float(value)
            else:
                raise ValueError(option)
    except ValueError:
        print("usage: python -m node.healthcheck [--port PORT] [--timeout SECONDS]")
        return 2
    try:
        check("127.0.0.1", port, timeout)
    except Unhealthy as problem:
        print(f"unhealthy: {problem}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
