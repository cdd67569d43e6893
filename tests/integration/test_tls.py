"""Real node processes over mutual TLS (`transport: {tls: true}`, the local runtime).

Three nodes of the smoke experiment with the run's own CA: they gossip, finalize blocks and
learn as over plaintext, and the orchestrator drives them over TLS too. Then the network is
knocked on from outside: with the run's certificate a call gets an answer; with a certificate
of another CA (even one named as a node of the run), or without TLS, the connection fails
before any RPC, and the node's counters show that nothing reached it. A node whose private key
others can read does not start.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509

from node.service.config import TlsFiles
from node.service.peers import CHANNEL_OPTIONS
from orchestrator.certificates import RunAuthority
from orchestrator.report import SUMMARY_FILE, render_report
from orchestrator.runtimes.local import LocalNode, free_ports
from proto.dfl.v1 import node_pb2, node_pb2_grpc
from tests.integration.live import (
    LiveNetwork,
    alive,
    live_spec,
    rejected,
    running,
    scrape,
    submit,
    total,
    wait_for,
)
from tests.support import assert_audit_passes

pytestmark = pytest.mark.integration

MIN_ACCURACY = 0.3  # ten classes: chance is 0.1


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNetwork]:
    spec = live_spec({"transport.tls": True})
    with running(spec, tmp_path_factory.mktemp("tls-run")) as live:
        yield live


def secure(node: LocalNode, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    """A channel of its own (not shared with the test's other ones) to the node over TLS."""
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    return grpc.secure_channel(node.target, credentials, options=options)


def plaintext(node: LocalNode) -> grpc.Channel:
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    return grpc.insecure_channel(node.target, options=options)


def credentials_of(files: TlsFiles) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )


def get_status(ch: grpc.Channel) -> node_pb2.NodeStatus | grpc.RpcError:
    try:
        return node_pb2_grpc.NodeStub(ch).GetStatus(node_pb2.StatusRequest(), timeout=10)
    except grpc.RpcError as error:
        return error


def height(network: LiveNetwork, node: LocalNode) -> int:
    """The node's chain height, asked with the orchestrator's certificate."""
    assert network.run.client_tls is not None
    with secure(node, credentials_of(network.run.client_tls)) as ch:
        answer = get_status(ch)
    if isinstance(answer, grpc.RpcError):
        raise answer
    return answer.chain_height


def latest_accuracy(out: Path) -> dict[str, float]:
    """Each node's last test-set accuracy in metrics.csv (the orchestrator's, over TLS)."""
    found: dict[str, float] = {}
    with open(out / "metrics.csv", newline="") as rows:
        for row in csv.DictReader(rows):
            if row["metric"] == "accuracy_test":
                found[row["node"]] = float(row["value"])
    return found


# --- the certificates ----------------------------------------------------------------------------


def test_every_node_has_a_certificate_of_the_run_s_ca(network: LiveNetwork) -> None:
    run = network.run
    assert run.client_tls is not None
    ca = x509.load_pem_x509_certificate(run.client_tls.ca.read_bytes())
    for node in network.nodes:
        config = yaml.safe_load((node.data_dir / "node.yaml").read_text())
        files = TlsFiles(**config["tls"])
        assert files.key.parent == (node.data_dir / "tls").resolve()
        assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
        assert stat.S_IMODE(files.key.parent.stat().st_mode) == 0o700
        assert files.ca.read_bytes() == run.client_tls.ca.read_bytes()
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert node.name in names.get_values_for_type(x509.DNSName)


def test_nodes_gossip_finalize_and_learn_over_tls(network: LiveNetwork) -> None:
    wait_for(
        lambda: all(height(network, node) >= 2 for node in network.nodes),
        120,
        "every node to finalize two blocks over TLS",
        network,
    )
    for node in network.nodes:
        samples = scrape(node)
        assert total(samples, "dfl_transactions_received_total") > 0, node.name
        assert total(samples, "dfl_confirmations_total", direction="received") > 0, node.name
    wait_for(
        lambda: (
            (found := latest_accuracy(network.out)).keys() == {n.name for n in network.nodes}
            and min(found.values()) > MIN_ACCURACY
        ),
        120,
        f"every node above {MIN_ACCURACY} on the test set",
        network,
    )


# --- knocking from outside -----------------------------------------------------------------------


def test_only_a_certificate_of_the_run_s_ca_gets_through(network: LiveNetwork) -> None:
    """Another CA's certificate, even one for `node0` at 127.0.0.1, or no TLS at all: the
    handshake fails (UNAVAILABLE) and the node counts nothing, where the same bytes with the
    run's certificate are answered and counted."""
    run = network.run
    assert run.client_tls is not None
    node = network.nodes[0]
    garbage = random.Random(20250101).randbytes(2048)  # refused as malformed, when it arrives
    own_ca = run.client_tls.ca.read_bytes()
    impostor = RunAuthority("someone else's run").issue("node0", ip_addresses=["127.0.0.1"])
    knocks: dict[str, grpc.ChannelCredentials | None] = {
        # Trusts the run's CA (its certificate is no secret) but shows its own CA's.
        "another CA's certificate": grpc.ssl_channel_credentials(
            root_certificates=own_ca,
            private_key=impostor.key_pem,
            certificate_chain=impostor.cert_pem,
        ),
        # A network of its own: its CA all the way.
        "another CA altogether": grpc.ssl_channel_credentials(
            root_certificates=impostor.ca_pem,
            private_key=impostor.key_pem,
            certificate_chain=impostor.cert_pem,
        ),
        "TLS without a client certificate": grpc.ssl_channel_credentials(own_ca),
        "plaintext": None,
    }
    log = node.data_dir / "node.log"
    logged = log.stat().st_size
    before = rejected(scrape(node))
    for what, credentials in knocks.items():
        for _ in range(2):  # a second try must not fare better
            with secure(node, credentials) if credentials else plaintext(node) as ch:
                answer = get_status(ch)
                assert isinstance(answer, grpc.RpcError), f"{what}: GetStatus answered"
                assert answer.code() == grpc.StatusCode.UNAVAILABLE, (what, answer.details())
                refused = submit(ch, "SubmitTransaction", garbage, timeout=10)
                assert refused is not None and refused.code() == grpc.StatusCode.UNAVAILABLE, what
    assert rejected(scrape(node)) == before, "a refused connection's request reached the node"
    # What the node saw of them: handshakes gRPC's TLS refused (its own log lines), no RPC.
    refusals = log.read_bytes()[logged:].decode(errors="replace")
    assert "CERTIFICATE_VERIFY_FAILED" in refusals  # another CA's certificate
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in refusals  # none at all
    assert alive(node)

    with secure(node, credentials_of(run.client_tls)) as ch:
        answer = get_status(ch)
        assert isinstance(answer, node_pb2.NodeStatus) and answer.address.hex() == node.address
        refused = submit(ch, "SubmitTransaction", garbage)
    assert refused is not None and refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.details().startswith("malformed: ")
    after = rejected(scrape(node))
    assert after["malformed"] == before["malformed"] + 1


def test_the_health_check_speaks_tls_with_the_node_s_own_certificate(
    network: LiveNetwork,
) -> None:
    node = network.nodes[1]
    command = [sys.executable, "-m", "node.healthcheck", "--port", str(node.port)]
    over_tls = subprocess.run(
        [*command, "--tls", str(node.data_dir / "tls")], capture_output=True, text=True, timeout=30
    )
    assert over_tls.returncode == 0, over_tls.stdout + over_tls.stderr
    plain = subprocess.run([*command, "--timeout", "5"], capture_output=True, text=True, timeout=30)
    assert plain.returncode == 1 and plain.stdout.startswith("unhealthy:"), plain.stdout


def test_a_key_others_can_read_stops_the_node_at_start(
    network: LiveNetwork, tmp_path: Path
) -> None:
    source = network.nodes[0]
    config = yaml.safe_load((source.data_dir / "node.yaml").read_text())
    copied = tmp_path / "tls"
    shutil.copytree(source.data_dir / "tls", copied)
    key = copied / "node.key"
    key.chmod(0o644)
    config.update(
        data_dir=str(tmp_path / "data"),
        port=free_ports(1)[0],
        metrics_port=0,
        peers=[],
        tls={"ca": str(copied / "ca.crt"), "cert": str(copied / "node.crt"), "key": str(key)},
    )
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(config))
    started = subprocess.run(
        [sys.executable, "-m", "node", "--config", str(tmp_path / "node.yaml")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert started.returncode == 2, started.stdout + started.stderr
    assert f"{key}: the TLS private key is open to group or others (mode 0644)" in started.stderr
    assert f"chmod 600 {key}" in started.stderr
    assert "Traceback" not in started.stderr


# --- the run directory ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def summary(network: LiveNetwork) -> dict[str, Any]:
    wait_for(lambda: network.elapsed >= 40, 60, "the run to last 40 s", network)
    network.finish()
    network.check()
    assert_audit_passes(network.out)
    render_report(network.out)
    return json.loads((network.out / SUMMARY_FILE).read_text())


def test_the_run_records_tls_and_its_chains_verify(
    network: LiveNetwork, summary: dict[str, Any]
) -> None:
    assert json.loads((network.out / "run.json").read_text())["tls"] is True
    for node in network.nodes:
        figures = summary["nodes"][node.name]
        assert figures["blocks"] >= 2, node.name
        assert figures["chain_verifies"] is True, (node.name, figures["chain_problem"])
        assert figures["final_test_accuracy"] > MIN_ACCURACY, (node.name, figures)
