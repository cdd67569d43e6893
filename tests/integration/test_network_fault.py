"""Network faults injected by a real node over its real gRPC port: what SetNetworkFault does to
gossip in and out, that only the orchestrator can switch it, and that it leaves control alone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest

from node.protocol.events import MessageKind
from node.service.netfault import DROPPED, NetworkFault, NetworkFaults, OutgoingFaults
from node.service.peers import SENDER_METADATA, PeerClient
from proto.dfl.v1 import node_pb2
from tests.served import ServedNode, served_node

SENDER = "10.9.8.7:50051"
GARBAGE_RECORD = b"\xff\xff"  # refused by the engine when it gets that far (malformed)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedNode]:
    with served_node(tmp_path_factory.mktemp("netfault")) as served:
        yield served


def set_fault(node: ServedNode, **fields) -> node_pb2.NetworkFault:
    answer = node.call(
        "SetNetworkFault",
        node_pb2.NetworkFault(**fields).SerializeToString(),
        metadata=node.signed("SetNetworkFault"),
    )
    assert answer.code == grpc.StatusCode.OK, answer
    return node_pb2.NetworkFault.FromString(answer.response)


def gossip(node: ServedNode) -> tuple[grpc.StatusCode, str, float]:
    began = time.monotonic()
    answer = node.call("SubmitTransaction", GARBAGE_RECORD, metadata=((SENDER_METADATA, SENDER),))
    return answer.code, answer.details, time.monotonic() - began


def test_only_the_orchestrator_switches_a_fault(node: ServedNode) -> None:
    request = node_pb2.NetworkFault(loss=1.0).SerializeToString()
    assert node.call("SetNetworkFault", request).code == grpc.StatusCode.UNAUTHENTICATED
    assert node.node.network_faults.fault.healthy


def test_an_impossible_fault_is_refused_naming_the_field(node: ServedNode) -> None:
    bad = node_pb2.NetworkFault(delay_ms=10, jitter_ms=20).SerializeToString()
    answer = node.call("SetNetworkFault", bad, metadata=node.signed("SetNetworkFault"))
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT and "jitter_ms" in answer.details
    assert node.node.network_faults.fault.healthy


def test_a_cut_peer_is_dropped_and_healing_lets_it_through(node: ServedNode) -> None:
    set_fault(node, cut=[SENDER])
    try:
        code, details, _ = gossip(node)
        assert (code, details) == (grpc.StatusCode.UNAVAILABLE, DROPPED)
        assert node.counted("dfl_network_fault_messages_total", direction="in", fate="dropped") >= 1
        assert node.call("GetStatus", b"").code == grpc.StatusCode.OK  # control is untouched
    finally:
        set_fault(node)
    code, details, _ = gossip(node)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("malformed: ")


def test_latency_holds_incoming_gossip_back(node: ServedNode) -> None:
    _, _, healthy = gossip(node)
    set_fault(node, delay_ms=300, jitter_ms=50)
    try:
        code, _, delayed = gossip(node)
        status_began = time.monotonic()
        assert node.call("GetStatus", b"").code == grpc.StatusCode.OK
        status_took = time.monotonic() - status_began
    finally:
        set_fault(node)
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # delayed, then handled as ever
    assert delayed - healthy >= 0.24, (healthy, delayed)
    assert status_took < 0.2, "the orchestrator's calls are never delayed"


def test_loss_on_the_way_out_fails_the_send_as_unavailable(node: ServedNode) -> None:
    """A client of the node's own kind, with every message lost: the peer never sees them."""
    faults = NetworkFaults(seed=1, index=0)
    faults.fault = NetworkFault(loss=1.0)
    failures: list[str] = []

    async def send() -> bool:
        client = PeerClient(
            node.target,
            SENDER,
            timeout=5,
            retries=1,
            on_failure=lambda peer, code: failures.append(code),
            interceptors=[OutgoingFaults(faults, node.target)],
        )
        try:
            return await client.send(MessageKind.TRANSACTION, GARBAGE_RECORD)
        finally:
            await client.close()

    before = node.rejected("malformed")
    assert asyncio.run(send()) is False
    assert failures == ["UNAVAILABLE"]
    assert node.rejected("malformed") == before, "a lost message reached the node"
