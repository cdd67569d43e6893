"""gRPC over mutual TLS, or plaintext: one place that decides how a node listens and dials.

With `TlsFiles` in the node's config every connection is TLS both ways: the node's server asks
each client for a certificate of the run's CA (`require_client_auth`) and refuses the handshake
without one, so nothing of another run, and nothing that merely reached the port, gets as far
as an RPC; its channels to peers present the node's own certificate and accept only a server
the same CA signed, for the name they dial (a DNS name, or an IP address the certificate
carries, as 127.0.0.1 for local processes). Without TlsFiles both are plaintext (h2c), as
before TLS existed.

The private key is refused when its file is open to group or others, as ssh refuses an
identity file: a key that others can read is as good as published, and a node had better stop
at start than run a whole experiment on it.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path

import grpc

from node.service.config import TlsFiles

TARGET_NAME_OPTION = "grpc.ssl_target_name_override"


class TlsFileError(Exception):
    """A TLS file cannot be used: missing, unreadable, or a private key others can read.

    The message names the file and what to do about it."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise TlsFileError(f"{path}: cannot read the {what}: {error.strerror or error}") from None


def read_key(path: Path) -> bytes:
    """The private key's PEM, if only its owner may read it (TlsFileError otherwise)."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise TlsFileError(
            f"{path}: cannot read the TLS private key: {error.strerror or error}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TlsFileError(
            f"{path}: the TLS private key is open to group or others (mode "
            f"{stat.S_IMODE(mode):04o}); make it owner-only: chmod 600 {path}"
        )
    return _read(path, "TLS private key")


def read_files(tls: TlsFiles) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, own certificate, private key) as PEM, the key checked as above."""
    key = read_key(tls.key)
    return _read(tls.ca, "run's CA certificate"), _read(tls.cert, "TLS certificate"), key


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """A server that serves only clients with a certificate of the run's CA."""
    ca, cert, key = read_files(tls)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """A client that presents its own certificate and trusts only the run's CA."""
    ca, cert, key = read_files(tls)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def add_port(server: grpc.aio.Server, address: str, tls: TlsFiles | None) -> int:
    """Listens on `address` (host:port), over TLS when `tls` is given; the port bound (0 when
    it could not bind, as gRPC's own add_*_port)."""
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(tls))


def channel(
    target: str,
    tls: TlsFiles | None,
    options: Sequence[tuple[str, object]] = (),
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    *,
    server_name: str | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to `target`, over TLS when `tls` is given.

    `server_name`: the name the server's certificate must carry, when it is not the host of
    `target` (an address that the certificate does not list).
    """
    if tls is None:
        return grpc.aio.insecure_channel(
            target, options=list(options), interceptors=list(interceptors)
        )
    extra = [(TARGET_NAME_OPTION, server_name)] if server_name else []
    return grpc.aio.secure_channel(
        target,
        channel_credentials(tls),
        options=[*options, *extra],
        interceptors=list(interceptors),
    )
