"""The container's probe (node/healthcheck.py) against real gRPC health servers in this process.

The probe hand-rolls HTTP/2 and decodes one protobuf field itself, so it is checked here
against grpcio's own health servicer and message encoding, in both states a node reports, and
it must find the node's port and transport where the node wrote them (`health-probe.json`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node import healthcheck
from node.service.config import NodeConfig, TlsFiles
from node.service.health import write_probe_file

Status = health_pb2.HealthCheckResponse


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    """A real gRPC server with the standard health servicer; the test sets its status."""
    servicer = health.HealthServicer()
    server = grpc.server(ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None).wait()


@pytest.mark.parametrize(
    ("status", "name"),
    [(Status.SERVING, "SERVING"), (Status.NOT_SERVING, "NOT_SERVING"), (Status.UNKNOWN, "")],
)
def test_the_probe_decodes_grpcio_s_own_encoding_of_every_status(status: int, name: str) -> None:
    message = Status(status=status).SerializeToString()
    assert healthcheck.serving_status(message) == status
    assert healthcheck.STATUSES[status] == (name or "UNKNOWN")


def test_fields_the_probe_does_not_know_are_skipped() -> None:
    """A later health.proto may add fields; only field 1 decides."""
    unknown = b"\x12\x03abc" + b"\x18\x96\x01" + b"\x25\x00\x00\x00\x00"  # 2: bytes, 3, 4: fixed32
    assert healthcheck.serving_status(unknown + b"\x08\x01") == Status.SERVING
    with pytest.raises(healthcheck.Unhealthy, match="truncated"):
        healthcheck.serving_status(b"\x08")


def test_a_serving_server_passes_the_check(
    health_server: tuple[int, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    port, _ = health_server
    assert healthcheck.main(["--port", str(port), "--timeout", "5"]) == 0
    assert capsys.readouterr().out == ""


def test_not_serving_fails_the_check_and_says_so(
    health_server: tuple[int, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    port, servicer = health_server
    servicer.set(health.OVERALL_HEALTH, Status.NOT_SERVING)
    assert healthcheck.main(["--port", str(port), "--timeout", "5"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("unhealthy: NOT_SERVING (chain store still being verified"), out


def test_a_server_without_the_health_service_fails_the_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = grpc.server(ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert healthcheck.main(["--port", str(port), "--timeout", "5"]) == 1
    finally:
        server.stop(None).wait()
    assert capsys.readouterr().out.startswith("unhealthy: Health/Check failed"), "UNIMPLEMENTED"


def test_the_probe_finds_port_and_tls_where_the_node_wrote_them(tmp_path: Path) -> None:
    tls = TlsFiles(ca=Path("tls/ca.crt"), cert=Path("tls/node.crt"), key=Path("tls/node.key"))
    write_probe_file(NodeConfig(data_dir=tmp_path, port=50999, tls=tls), 50999)
    port, files = healthcheck.target({"DFL_NODE_DATA_DIR": str(tmp_path)})
    assert port == 50999
    assert files is not None and all(Path(path).is_absolute() for path in files)
    assert [Path(path).name for path in files] == ["ca.crt", "node.crt", "node.key"]

    write_probe_file(NodeConfig(data_dir=tmp_path, port=50998), 50998)  # a restart without TLS
    assert healthcheck.target({"DFL_NODE_DATA_DIR": str(tmp_path)}) == (50998, None)
    assert json.loads((tmp_path / healthcheck.PROBE_FILE).read_text())["tls"] is None


def test_without_a_probe_file_the_probe_keeps_its_defaults(tmp_path: Path) -> None:
    assert healthcheck.target({}) == (healthcheck.DEFAULT_PORT, None)
    assert healthcheck.target({"DFL_NODE_PORT": "50100"}) == (50100, None)
    empty = {"DFL_NODE_DATA_DIR": str(tmp_path), "DFL_NODE_PORT": "50101"}
    assert healthcheck.target(empty) == (50101, None)


def test_a_probe_file_that_does_not_parse_is_an_unhealthy_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / healthcheck.PROBE_FILE).write_text("{not json")
    monkeypatch.setenv("DFL_NODE_DATA_DIR", str(tmp_path))
    assert healthcheck.main([]) == 1
    assert capsys.readouterr().out.startswith(
        f"unhealthy: cannot read the node's {healthcheck.PROBE_FILE}"
    )
