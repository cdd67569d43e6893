"""The run's CA and its certificates, the files a node reads them from, and mutual TLS itself.

A certificate must say what a node is called (its name, the names and addresses it is dialled
at), be good for both ends of a connection and only for a few days; its private key must be
written owner-only and refused otherwise. The last tests take one in-process gRPC server over
mutual TLS and knock on it with the run's certificate, with another CA's and with none.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import ipaddress
import stat
import tarfile
from pathlib import Path, PurePosixPath

import grpc
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.service import tls
from node.service.config import TlsFiles
from orchestrator.certificates import (
    ORCHESTRATOR_NAME,
    Issued,
    RunAuthority,
    tls_paths,
    write_tls_files,
)
from orchestrator.runtimes.tls_files import (
    NODE_UID,
    ContainerCertificates,
    health_settings,
    tar_of,
    tls_archive,
)
from orchestrator.spec import (
    ExperimentSpec,
    SpecError,
    canonical_spec_json,
    load_spec,
    spec_digest,
    with_overrides,
)

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke-dfl.yaml"


@pytest.fixture(scope="module")
def authority() -> RunAuthority:
    return RunAuthority("smoke-dfl-1a2b3c")


@pytest.fixture(scope="module")
def smoke_spec() -> ExperimentSpec:
    return load_spec(SMOKE)


def certificate(issued: Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificate(issued.cert_pem)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the authority and what it issues ------------------------------------------------------------


def test_the_ca_is_named_after_the_run_and_signs_only_certificates(
    authority: RunAuthority,
) -> None:
    ca = x509.load_pem_x509_certificate(authority.ca_pem)
    common_name = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert "smoke-dfl-1a2b3c" in str(common_name)
    assert ca.issuer == ca.subject
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and not usage.digital_signature
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    ca.verify_directly_issued_by(ca)


def test_a_node_certificate_names_the_node_and_serves_both_ends(authority: RunAuthority) -> None:
    issued = authority.issue("node3", ["dfl-smoke-node3"], ["127.0.0.1", "172.18.0.5"])
    cert = certificate(issued)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(authority.ca_pem))
    assert issued.ca_pem == authority.ca_pem
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "node3"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["node3", "dfl-smoke-node3"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("172.18.0.5"),
    ]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=1) < life < datetime.timedelta(days=7)
    assert cert.not_valid_before_utc < datetime.datetime.now(datetime.UTC)
    key = serialization.load_pem_private_key(issued.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_every_certificate_has_its_own_key_and_serial(authority: RunAuthority) -> None:
    first, again = authority.issue("node0"), authority.issue("node0")
    assert first.key_pem != again.key_pem
    assert certificate(first).serial_number != certificate(again).serial_number
    orchestrator = certificate(authority.orchestrator())
    names = orchestrator.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [ORCHESTRATOR_NAME]


def test_two_runs_have_two_authorities() -> None:
    one, other = RunAuthority("run-a"), RunAuthority("run-a")
    stranger = certificate(other.issue("node0"))
    with pytest.raises(InvalidSignature):
        stranger.verify_directly_issued_by(x509.load_pem_x509_certificate(one.ca_pem))


# --- the files -----------------------------------------------------------------------------------


def test_the_files_are_written_owner_only_where_the_node_reads_them(
    authority: RunAuthority, tmp_path: Path
) -> None:
    issued = authority.issue("node0", ip_addresses=["127.0.0.1"])
    files = write_tls_files(tmp_path / "node0", issued)
    folder = tmp_path / "node0" / "tls"
    assert files == TlsFiles(
        ca=folder.resolve() / "ca.crt",
        cert=folder.resolve() / "node.crt",
        key=folder.resolve() / "node.key",
    )
    assert mode(folder) == 0o700 and mode(files.key) == 0o600 and mode(files.cert) == 0o644
    assert files.key.read_bytes() == issued.key_pem and files.ca.read_bytes() == authority.ca_pem
    assert tls.read_files(files) == (issued.ca_pem, issued.cert_pem, issued.key_pem)
    # A restart of the same run writes them again over the old ones.
    again = write_tls_files(tmp_path / "node0", authority.issue("node0"))
    assert again == files and mode(files.key) == 0o600


def test_a_container_sees_the_files_under_its_own_data_path(
    authority: RunAuthority, tmp_path: Path
) -> None:
    files = write_tls_files(tmp_path, authority.issue("node1"), seen_as=PurePosixPath("/data"))
    assert files == tls_paths("/data")
    assert str(files.key) == "/data/tls/node.key" and str(files.ca) == "/data/tls/ca.crt"


def test_a_container_gets_its_key_owned_by_the_node_user_and_owner_only(
    authority: RunAuthority, tmp_path: Path
) -> None:
    issued = authority.issue("node2")
    with tarfile.open(fileobj=io.BytesIO(tls_archive(issued))) as archive:
        members = {member.name: member for member in archive.getmembers()}
        key = archive.extractfile(members["tls/node.key"])
        assert key is not None and key.read() == issued.key_pem
    assert {name: (m.mode, m.uid, m.gid) for name, m in members.items()} == {
        "tls": (0o700, NODE_UID, NODE_UID),
        "tls/ca.crt": (0o644, NODE_UID, NODE_UID),
        "tls/node.crt": (0o644, NODE_UID, NODE_UID),
        "tls/node.key": (0o600, NODE_UID, NODE_UID),
    }
    with tarfile.open(fileobj=io.BytesIO(tar_of("/etc/dfl/node.yaml", "a: 1\n"))) as archive:
        config = {m.name: (m.mode, m.uid, m.isdir()) for m in archive.getmembers()}
    assert config == {
        "etc": (0o755, 0, True),
        "etc/dfl": (0o755, 0, True),
        "etc/dfl/node.yaml": (0o644, 0, False),
    }
    run = ContainerCertificates("dfl-smoke-1a2b3c", tmp_path, "/data")
    assert run.setting() == {"tls": tls_paths("/data").model_dump(mode="json")}
    assert mode(run.client_tls.key) == 0o600
    node = certificate(
        Issued(run.authority.issue("node0", ip_addresses=["10.0.0.2"]).cert_pem, b"")
    )
    assert node.issuer == x509.load_pem_x509_certificate(run.authority.ca_pem).subject
    assert health_settings(None, 90) == {"start_period": 90_000_000_000}  # the image's check
    assert health_settings(run, 90) == {
        "start_period": 90_000_000_000,
        "test": ["CMD", "python", "-m", "node.healthcheck", "--tls", "/data/tls"],
    }


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_a_key_others_can_read_is_refused_naming_the_file_and_the_fix(
    authority: RunAuthority, tmp_path: Path, loose: int
) -> None:
    files = write_tls_files(tmp_path, authority.issue("node0"))
    files.key.chmod(loose)
    with pytest.raises(tls.TlsFileError) as refused:
        tls.server_credentials(files)
    message = str(refused.value)
    assert str(files.key) in message and f"chmod 600 {files.key}" in message
    assert f"{loose:04o}" in message
    with pytest.raises(tls.TlsFileError):
        tls.channel_credentials(files)
    files.key.chmod(0o400)  # a Swarm secret's mode: owner-only, fine
    assert tls.read_key(files.key) == files.key.read_bytes()


def test_a_missing_file_is_named(authority: RunAuthority, tmp_path: Path) -> None:
    files = write_tls_files(tmp_path, authority.issue("node0"))
    files.ca.unlink()
    with pytest.raises(tls.TlsFileError, match=f"{files.ca}: cannot read the run's CA"):
        tls.server_credentials(files)
    with pytest.raises(tls.TlsFileError, match="cannot read the TLS private key"):
        tls.read_key(tmp_path / "nowhere.key")


# --- the spec ------------------------------------------------------------------------------------


def test_transport_left_out_keeps_the_canonical_spec_and_its_digest(
    smoke_spec: ExperimentSpec,
) -> None:
    assert smoke_spec.transport.tls is None
    assert "transport" not in canonical_spec_json(smoke_spec)
    assert smoke_spec.transport.tls_or(False) is False
    assert smoke_spec.transport.tls_or(True) is True
    on = with_overrides(smoke_spec, {"transport.tls": True})
    assert on.transport.tls_or(False) is True
    assert '"transport":{"tls":true}' in canonical_spec_json(on)
    assert spec_digest(on) != spec_digest(smoke_spec)
    assert "transport:\n  tls: true" in on.to_yaml()
    off = with_overrides(smoke_spec, {"transport.tls": False})
    assert off.transport.tls_or(True) is False


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_transport_tls_is_a_boolean(smoke_spec: ExperimentSpec, value: object) -> None:
    with pytest.raises(SpecError, match=r"transport\.tls: Input should be a valid boolean"):
        with_overrides(smoke_spec, {"transport.tls": value})


def test_transport_has_no_other_keys(smoke_spec: ExperimentSpec) -> None:
    with pytest.raises(SpecError, match=r"transport\.mtls: unknown key"):
        with_overrides(smoke_spec, {"transport.mtls": True})


# --- mutual TLS on the wire ----------------------------------------------------------------------


def _echo_server(files: TlsFiles | None) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"pong:" + request)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Ping": handler}),)
    )
    return server, tls.add_port(server, "127.0.0.1:0", files)


async def _ping(channel: grpc.aio.Channel) -> str:
    try:
        answer = await channel.unary_unary("/test.Echo/Ping")(b"x", timeout=5)
        return answer.decode()
    except grpc.aio.AioRpcError as error:
        return error.code().name
    finally:
        await channel.close()


def test_only_a_client_of_the_run_s_ca_is_served(authority: RunAuthority, tmp_path: Path) -> None:
    node = write_tls_files(tmp_path / "node", authority.issue("node0", ip_addresses=["127.0.0.1"]))
    client = write_tls_files(tmp_path / "client", authority.orchestrator())
    other = RunAuthority("someone-else").issue("node0", ip_addresses=["127.0.0.1"])

    async def main() -> dict[str, str]:
        server, port = _echo_server(node)
        await server.start()
        here, by_name = f"127.0.0.1:{port}", f"localhost:{port}"
        # Trusts the run's CA (public), but shows a certificate of its own CA.
        rogue = grpc.ssl_channel_credentials(
            root_certificates=authority.ca_pem,
            private_key=other.key_pem,
            certificate_chain=other.cert_pem,
        )
        answers = {
            "run's certificate, by IP": await _ping(tls.channel(here, client)),
            "run's certificate, name override": await _ping(
                tls.channel(by_name, client, server_name="node0")
            ),
            "run's certificate, a name it lacks": await _ping(tls.channel(by_name, client)),
            "another CA's certificate": await _ping(grpc.aio.secure_channel(here, rogue)),
            "plaintext": await _ping(tls.channel(here, None)),
        }
        await server.stop(0)
        plain, plain_port = _echo_server(None)
        await plain.start()
        answers["plaintext server"] = await _ping(tls.channel(f"127.0.0.1:{plain_port}", None))
        answers["TLS to a plaintext server"] = await _ping(
            tls.channel(f"127.0.0.1:{plain_port}", client)
        )
        await plain.stop(0)
        return answers

    assert asyncio.run(main()) == {
        "run's certificate, by IP": "pong:x",
        "run's certificate, name override": "pong:x",
        "run's certificate, a name it lacks": "UNAVAILABLE",
        "another CA's certificate": "UNAVAILABLE",
        "plaintext": "UNAVAILABLE",
        "plaintext server": "pong:x",
        "TLS to a plaintext server": "UNAVAILABLE",
    }
