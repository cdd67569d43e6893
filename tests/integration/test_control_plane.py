"""The control plane and input hygiene of one real node, over its real gRPC port.

Every control call (InjectSamples, AddPeer, RemovePeer, GetModel) must carry the orchestrator's
signature; each way of getting that wrong is refused with its status, counted, and changes
nothing. Every RPC decodes its own request: a malformed one is INVALID_ARGUMENT, counted, never a
traceback; AddPeer takes only a real peer address; requests without a record are small.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.service.control import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIME_HEADER,
    WINDOW_MS,
    ControlSigner,
)
from orchestrator.runtimes.local import free_ports
from proto.dfl.v1 import node_pb2
from tests.served import ServedNode, served_node

CONTROL_CALLS = {
    "InjectSamples": node_pb2.SampleBatch(
        samples=[node_pb2.Sample(pixels=bytes(784), label=3)]
    ).SerializeToString(),
    "AddPeer": node_pb2.PeerRequest(peer="127.0.0.1:1").SerializeToString(),
    "RemovePeer": node_pb2.PeerRequest(peer="127.0.0.1:1").SerializeToString(),
    "GetModel": b"",
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    with served_node(tmp_path_factory.mktemp("control")) as served:
        yield served


def state(node: ServedNode) -> tuple:
    """What a control call could change: peers, samples received, chain height."""
    inner = node.node
    return (inner.engine.state.peers, inner.samples_injected, inner.store.height)


def replace_header(metadata, name: str, value) -> tuple:
    return tuple((k, value if k == name else v) for k, v in metadata)


def refusals(node: ServedNode, method: str, metadata) -> grpc.StatusCode:
    """Calls `method` with `metadata`; the status it got (asserting it changed nothing)."""
    before, counted = state(node), node.rejected("unauthenticated")
    answer = node.call(method, CONTROL_CALLS[method], metadata=metadata)
    assert state(node) == before, f"{method} changed the node: {answer}"
    assert node.rejected("unauthenticated") == counted + 1
    assert answer.details.startswith("unauthenticated: "), answer.details
    return answer.code


@pytest.mark.parametrize("method", sorted(CONTROL_CALLS))
def test_a_control_call_without_a_signature_is_unauthenticated(node: ServedNode, method) -> None:
    assert refusals(node, method, None) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", sorted(CONTROL_CALLS))
def test_a_control_call_signed_by_another_key_is_permission_denied(
    node: ServedNode, method: str
) -> None:
    stranger = ControlSigner.generate()
    assert refusals(node, method, node.signed(method, stranger)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


@pytest.mark.parametrize("method", sorted(CONTROL_CALLS))
def test_a_stale_control_call_is_unauthenticated(node: ServedNode, method: str) -> None:
    stale = node.control.metadata(method, node.address, now=time.time() - 2 * WINDOW_MS / 1000)
    assert refusals(node, method, stale) == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("method", sorted(CONTROL_CALLS))
def test_a_replayed_control_call_is_unauthenticated(node: ServedNode, method: str) -> None:
    metadata = node.signed(method)
    first = node.call(method, CONTROL_CALLS[method], metadata=metadata)
    assert first.code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), first  # RemovePeer
    assert refusals(node, method, metadata) == grpc.StatusCode.UNAUTHENTICATED
    if method == "AddPeer":  # undo, so the next cases start from the same peers
        node.call("RemovePeer", CONTROL_CALLS["RemovePeer"], metadata=node.signed("RemovePeer"))


@pytest.mark.parametrize(
    "tamper",
    [
        (SIGNATURE_HEADER, bytes(64)),
        (NONCE_HEADER, "0" * 32),
        (TIME_HEADER, "not-a-time"),
    ],
    ids=["signature", "nonce", "time"],
)
def test_a_tampered_control_call_is_unauthenticated(node: ServedNode, tamper) -> None:
    metadata = replace_header(node.signed("AddPeer"), *tamper)
    assert refusals(node, "AddPeer", metadata) == grpc.StatusCode.UNAUTHENTICATED


def test_a_signature_for_another_method_or_node_does_not_carry_over(node: ServedNode) -> None:
    assert refusals(node, "AddPeer", node.signed("GetModel")) == grpc.StatusCode.UNAUTHENTICATED
    elsewhere = node.control.metadata("AddPeer", bytes(32))
    assert refusals(node, "AddPeer", elsewhere) == grpc.StatusCode.UNAUTHENTICATED


def test_signed_control_calls_work(node: ServedNode) -> None:
    before = node.node.samples_injected
    answer = node.call(
        "InjectSamples", CONTROL_CALLS["InjectSamples"], metadata=node.signed("InjectSamples")
    )
    assert answer.code == grpc.StatusCode.OK, answer
    assert node_pb2.InjectSummary.FromString(answer.response).accepted == 1
    assert node.node.samples_injected == before + 1
    model = node.call("GetModel", b"", metadata=node.signed("GetModel"))
    assert model.code == grpc.StatusCode.OK
    assert len(node_pb2.ModelWeights.FromString(model.response).weights) > 1000


def test_gossip_and_status_stay_open(node: ServedNode) -> None:
    assert node.call("GetStatus", b"").code == grpc.StatusCode.OK
    assert node.call("ListPeers", b"").code == grpc.StatusCode.OK


# --- input hygiene -------------------------------------------------------------------------------

GARBAGE = b"\xff\xff\xff\xff"  # a field header with no field: no message parses from it


@pytest.mark.parametrize(
    "method",
    ["GetStatus", "GetModel", "StreamChain", "AddPeer", "RemovePeer", "ListPeers", "InjectSamples"],
)
def test_a_malformed_request_is_invalid_argument_counted_and_one_log_line(
    node: ServedNode, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    time.sleep(1.0)  # a fresh second of the log's rate limit
    before = node.rejected("malformed")
    with caplog.at_level(logging.INFO):
        answer = node.call(method, GARBAGE, metadata=node.signed(method))
        time.sleep(0.2)
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer
    assert answer.details.startswith("malformed: "), answer.details
    assert node.rejected("malformed") == before + 1
    # (a summary of refusals left unlogged earlier may come too: that is about other calls)
    lines = [r for r in caplog.records if r.getMessage().startswith("refused ")]
    assert len(lines) <= 1, [r.getMessage() for r in lines]
    assert all(r.exc_info is None for r in caplog.records), "a traceback was logged"


@pytest.mark.parametrize(
    "peer", ["", "127.0.0.1:notaport", "127.0.0.1:0", "127.0.0.1:70000", "no port", "self"]
)
def test_add_peer_refuses_a_bad_address(node: ServedNode, peer: str) -> None:
    if peer == "self":
        peer = node.target
    before = state(node)
    request = node_pb2.PeerRequest(peer=peer).SerializeToString()
    answer = node.call("AddPeer", request, metadata=node.signed("AddPeer"))
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT, answer
    assert answer.details.startswith("bad_peer_address: "), answer.details
    assert state(node) == before


def test_add_peer_refuses_a_duplicate(node: ServedNode) -> None:
    request = node_pb2.PeerRequest(peer="127.0.0.1:2").SerializeToString()
    assert node.call("AddPeer", request, metadata=node.signed("AddPeer")).code == (
        grpc.StatusCode.OK
    )
    again = node.call("AddPeer", request, metadata=node.signed("AddPeer"))
    assert again.code == grpc.StatusCode.ALREADY_EXISTS, again
    assert node.node.engine.state.peers.count("127.0.0.1:2") == 1
    removed = node.call("RemovePeer", request, metadata=node.signed("RemovePeer"))
    assert removed.code == grpc.StatusCode.OK
    assert "127.0.0.1:2" not in node.node.engine.state.peers


@pytest.mark.parametrize("method", ["GetStatus", "ListPeers", "AddPeer"])
def test_an_oversize_request_without_a_record_is_refused(node: ServedNode, method: str) -> None:
    padding = node_pb2.PeerRequest(peer="x" * (64 * 1024)).SerializeToString()
    before = node.rejected("message_too_large")
    answer = node.call(method, padding, metadata=node.signed(method))
    assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED, answer
    assert node.rejected("message_too_large") == before + 1
    beyond = node.call(method, bytes(17 * 1024 * 1024), metadata=node.signed(method))
    assert beyond.code == grpc.StatusCode.RESOURCE_EXHAUSTED, beyond  # gRPC's own bound


def test_a_node_without_a_control_key_obeys_nobody(tmp_path: Path) -> None:
    with served_node(tmp_path, control_key=[]) as lone:
        answer = lone.call("GetModel", b"", metadata=lone.signed("GetModel"))
        assert answer.code == grpc.StatusCode.PERMISSION_DENIED
        assert "control_key" in answer.details


# --- a node started by hand ----------------------------------------------------------------------


def wait_until_serving(channel: grpc.Channel, timeout: float) -> None:
    """Poll the node's health service until it says SERVING: its port opens while the chain
    store is still verified, and until then `dfl.v1.Node` calls are UNAVAILABLE by design. A
    poll, not a Watch: the server that answers during start-up hands the port over, ending its
    calls."""
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
        time.sleep(0.2)
    raise AssertionError(f"the node did not say SERVING within {timeout:.0f} s")


def test_a_hand_started_node_answers_malformed_calls_in_one_line_each(tmp_path: Path) -> None:
    """`python -m node` as a user starts it: configured by environment only, its own process,
    its log a file; seven malformed calls give seven INVALID_ARGUMENTs, seven counts, at most
    seven lines of log and no traceback."""
    control = ControlSigner.generate()
    port, metrics_port = free_ports(2)
    env = {
        **os.environ,
        "DFL_NODE_DATA_DIR": str(tmp_path / "data"),
        "DFL_NODE_PORT": str(port),
        "DFL_NODE_METRICS_PORT": str(metrics_port),
        "DFL_NODE_MODEL": "mlp",
        "DFL_NODE_CONTROL_KEY": control.public_hex,
    }
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "node"], stdout=log_file, stderr=subprocess.STDOUT, env=env
        )
    try:
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as ch:
            grpc.channel_ready_future(ch).result(timeout=90)
            wait_until_serving(ch, timeout=90)
            status = ch.unary_unary("/dfl.v1.Node/GetStatus")(b"", timeout=30)
            address = node_pb2.NodeStatus.FromString(status).address
            methods = ["GetStatus", "GetModel", "StreamChain", "AddPeer", "RemovePeer"]
            methods += ["ListPeers", "InjectSamples"]
            for method in methods:
                metadata = control.metadata(method, address)
                path = f"/dfl.v1.Node/{method}"
                with pytest.raises(grpc.RpcError) as error:
                    if method == "InjectSamples":
                        ch.stream_unary(path)(iter([GARBAGE]), metadata=metadata, timeout=10)
                    elif method == "StreamChain":
                        list(ch.unary_stream(path)(GARBAGE, metadata=metadata, timeout=10))
                    else:
                        ch.unary_unary(path)(GARBAGE, metadata=metadata, timeout=10)
                assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            metrics = reply.read().decode()
        assert 'dfl_rejected_total{reason="malformed"} 7.0' in metrics
    finally:
        process.terminate()
        process.wait(timeout=30)
    log = log_path.read_text()
    assert "Traceback" not in log, log
    assert len([line for line in log.splitlines() if " refused " in line]) <= len(methods), log
    assert f"listening on 127.0.0.1:{port}" in log, "a hand-started node listens on loopback"
