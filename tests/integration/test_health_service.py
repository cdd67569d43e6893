"""The standard health service and server reflection on a real node's port, and the probe on it.

What grpcurl, grpc_health_probe, Kubernetes and Swarm see: a running node says SERVING and
lists `dfl.v1.Node` by reflection; a node still building itself (its chain store being
verified) says NOT_SERVING and turns `dfl.v1.Node` calls away as UNAVAILABLE, then serves on
the same port without the port ever closing, and says NOT_SERVING again once it is told to
stop. The container's probe (node/healthcheck.py) runs as Docker runs it, a process of its own
that finds the node through its data directory, over plaintext and over mutual TLS.

The start-up window is held open by the node's test hook `hold_start` (NodeConfig), set only
in the node's own config, so the test does not race a verification that takes milliseconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from node.healthcheck import PROBE_FILE
from node.service.config import TlsFiles
from node.service.health import STARTING
from orchestrator.certificates import RunAuthority, write_tls_files
from orchestrator.runtimes.local import free_ports
from proto.dfl.v1 import node_pb2, node_pb2_grpc
from tests.served import NODE_SETTINGS, served_node

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
Status = health_pb2.HealthCheckResponse
START_TIMEOUT = 120.0  # seconds: torch's import and the model on a busy two-core machine


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without node settings of its own, plus `extra`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DFL_NODE_")}
    return {**clean, **extra}


def probe(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The container's health check, as Docker runs it: its own process, the node's data
    directory in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "node.healthcheck", "--timeout", "10", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(DFL_NODE_DATA_DIR=str(data_dir)),
    )


def check(channel: grpc.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.2)


def reflected_services(channel: grpc.Channel) -> list[str]:
    return list(ProtoReflectionDescriptorDatabase(channel).get_services())


# --- a running node ------------------------------------------------------------------------------


def test_a_running_node_is_serving_and_describes_itself(tmp_path: Path) -> None:
    with served_node(tmp_path) as node, grpc.insecure_channel(node.target) as channel:
        assert check(channel) == Status.SERVING
        assert check(channel, "dfl.v1.Node") == Status.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            check(channel, "no.such.Service")
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        assert {"dfl.v1.Node", "grpc.health.v1.Health"} <= set(reflected_services(channel))
        # What grpcurl does next: the service's methods, from the descriptors served.
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        methods = pool.FindServiceByName("dfl.v1.Node").methods_by_name
        assert {"GetStatus", "SubmitTransaction", "StreamChain"} <= set(methods)
        assert methods["GetStatus"].output_type.full_name == "dfl.v1.NodeStatus"

        answer = probe(tmp_path)
        assert answer.returncode == 0, answer.stdout + answer.stderr
        assert answer.stdout == ""


def test_the_probe_speaks_the_node_s_mutual_tls_from_its_probe_file(tmp_path: Path) -> None:
    authority = RunAuthority("health-test")
    tls = write_tls_files(tmp_path / "node", authority.issue("node0", ip_addresses=["127.0.0.1"]))
    client: TlsFiles = write_tls_files(tmp_path / "client", authority.orchestrator())
    with served_node(tmp_path / "node", tls=tls) as node:
        answer = probe(tmp_path / "node")
        assert answer.returncode == 0, answer.stdout + answer.stderr

        plain = probe(tmp_path / "elsewhere", "--port", str(node.node.port))  # no probe file
        assert plain.returncode == 1 and plain.stdout.startswith("unhealthy:"), plain.stdout

        credentials = grpc.ssl_channel_credentials(
            client.ca.read_bytes(), client.key.read_bytes(), client.cert.read_bytes()
        )
        with grpc.secure_channel(node.target, credentials) as channel:
            assert check(channel) == Status.SERVING


# --- a node starting up --------------------------------------------------------------------------


@pytest.fixture
def starting_node(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, Path, int]]:
    """`python -m node` held at start-up: (process, data directory, hold file, port)."""
    port = free_ports(1)[0]
    data_dir, hold = tmp_path / "data", tmp_path / "hold"
    config = tmp_path / "node.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                **NODE_SETTINGS,
                "name": "starting",
                "data_dir": str(data_dir),
                "port": port,
                "hold_start": str(hold),
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "node", "--config", str(config)],
        cwd=REPO_ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: hold.exists() or process.poll() is not None, 60, "start-up hold")
        assert process.poll() is None, process.communicate()[0]
        yield process, data_dir, hold, port
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_a_node_verifying_its_chain_is_not_serving_until_it_serves(
    starting_node: tuple[subprocess.Popen[str], Path, Path, int],
) -> None:
    process, data_dir, hold, port = starting_node
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert check(channel) == Status.NOT_SERVING
        assert check(channel, "dfl.v1.Node") == Status.NOT_SERVING
        assert "dfl.v1.Node" in reflected_services(channel)
        node = node_pb2_grpc.NodeStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            node.GetStatus(node_pb2.StatusRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE  # what callers retry
        assert refused.value.details() == STARTING

        held = probe(data_dir)
        assert held.returncode == 1, held.stdout + held.stderr
        assert held.stdout.startswith("unhealthy: NOT_SERVING (chain store still being verified")
        assert (data_dir / PROBE_FILE).exists()

        # Released: the same port (and this same channel) reaches the node's own server.
        hold.unlink()
        wait_until(lambda: probe(data_dir).returncode == 0, START_TIMEOUT, "SERVING")
        assert check(channel) == Status.SERVING
        status = node.GetStatus(node_pb2.StatusRequest(), timeout=10)
        assert status.chain_height == 0 and len(status.address) > 0

        # A watcher (as a balancer is) hears NOT_SERVING once the node is told to stop.
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == Status.SERVING
        process.send_signal(signal.SIGTERM)
        assert next(watch).status == Status.NOT_SERVING  # before the server goes away
        watch.cancel()
    assert process.wait(timeout=60) == 0, process.communicate()[0]
