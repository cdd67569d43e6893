"""A certificate authority of the run's own, and the certificates it issues to nodes.

Every run with `transport: {tls: true}` gets a fresh CA, named after the run, whose private key
never leaves this process's memory: once the run is over nobody can issue another certificate
it trusts, and a node of one run cannot talk to a node of another (their CAs differ), which is
what mutual TLS between nodes is for. Each node gets a certificate for its name (the one its
peers dial), plus whatever other names or addresses it is reached at (a container's address on
the run's network, 127.0.0.1 for local processes), and the orchestrator gets one of its own to
call the nodes with. Every certificate is good for both ends of a connection (serverAuth and
clientAuth), since every node is a server to its peers and a client of them.

The keys are EC P-256, as the ledger's: small, fast to make (a fifty-node run issues fifty), and
what every TLS stack speaks. `write_tls_files` lays a node's three PEM files out in its data
directory the way node/service/tls.py reads them, the private key owner-only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.service.config import TlsFiles

VALIDITY = datetime.timedelta(days=3)  # longer than any run; short enough not to matter after
CLOCK_SKEW = datetime.timedelta(minutes=5)  # certificates start a little in the past
ORCHESTRATOR_NAME = "orchestrator"
TLS_DIR = "tls"  # in a node's data directory
CA_FILE = "ca.crt"
CERT_FILE = "node.crt"
KEY_FILE = "node.key"


@dataclass(frozen=True)
class Issued:
    """One holder's certificate and private key (PEM), and the CA certificate it trusts."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes = b""


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class RunAuthority:
    """The run's CA: made in memory, named after the run, issuing node and orchestrator
    certificates until the process ends."""

    def __init__(
        self,
        run_name: str,
        *,
        validity: datetime.timedelta = VALIDITY,
        now: datetime.datetime | None = None,
    ) -> None:
        self.run_name = run_name
        self._not_before = (now or datetime.datetime.now(datetime.UTC)) - CLOCK_SKEW
        self._not_after = self._not_before + CLOCK_SKEW + validity
        self._key = _new_key()
        self._name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dfl-testbed"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"dfl-testbed run {run_name}"[:64]),
            ]
        )
        public = self._key.public_key()
        self.certificate = (
            self._builder(self._name, public)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def _builder(
        self, subject: x509.Name, public: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._not_before)
            .not_valid_after(self._not_after)
        )

    def issue(
        self, name: str, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = ()
    ) -> Issued:
        """A certificate for `name` (its CN and first DNS name, e.g. `node3`), also valid for
        `dns_names` and `ip_addresses`, as a server and as a client, with a fresh key."""
        key = _new_key()
        names: list[x509.GeneralName] = [
            x509.DNSName(dns) for dns in dict.fromkeys([name, *dns_names])
        ]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ip_addresses)]
        public = key.public_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
        certificate = (
            self._builder(subject, public)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return Issued(
            certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key), self.ca_pem
        )

    def orchestrator(self, dns_names: Sequence[str] = ()) -> Issued:
        """The orchestrator's client certificate: what its calls to the nodes present."""
        return self.issue(ORCHESTRATOR_NAME, dns_names)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Created with `mode` from the start (never readable by others, not even for a moment);
    an existing file is replaced, as after a restart of the same run."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # whatever the umask took away, nothing it added


def write_tls_files(
    directory: Path, issued: Issued, *, seen_as: PurePosixPath | str | None = None
) -> TlsFiles:
    """`issued` as DIRECTORY/tls/{ca.crt,node.crt,node.key} (folder 0700, key 0600).

    The paths returned are the ones the node will open: under `seen_as` in place of
    `directory` when it sees that folder elsewhere (a container's /data), else the written
    ones, absolute.
    """
    folder = directory / TLS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    _write(folder / CA_FILE, issued.ca_pem, 0o644)
    _write(folder / CERT_FILE, issued.cert_pem, 0o644)
    _write(folder / KEY_FILE, issued.key_pem, 0o600)
    return tls_paths(directory.resolve() if seen_as is None else seen_as)


def tls_paths(directory: Path | PurePosixPath | str) -> TlsFiles:
    """Where `write_tls_files` puts a node's files under `directory` (its data directory)."""
    base = PurePosixPath(directory) if isinstance(directory, str) else directory
    folder = base / TLS_DIR
    return TlsFiles(
        ca=Path(folder / CA_FILE), cert=Path(folder / CERT_FILE), key=Path(folder / KEY_FILE)
    )
