"""Faults on the in-memory network: what the simulator's crash, pause and network faults do to
the messages and events a node would see.

The engines here only record what reaches them and, on SamplesCollected, send one message to
every peer through the real dispatcher and transport: what is under test is the transport.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.host.dispatch import DflModelHost
from node.protocol.events import (
    MessageKind,
    PeersChanged,
    SamplesCollected,
    Send,
    Tick,
    TransactionReceived,
)
from node.service.netfault import NetworkFault
from orchestrator.runtimes.memory import MemoryNetwork, MemoryNode

LATENCY = 0.01


@dataclass
class RecordingEngine:
    """Sends b"m<n>" to its peers on every SamplesCollected; remembers what it was handed."""

    seen: list[tuple[float, Any]] = field(default_factory=list)
    peers: tuple[str, ...] = ()
    sent: int = 0

    def handle(self, event: Any, now: float) -> list[Any]:
        self.seen.append((now, event))
        if isinstance(event, PeersChanged):
            self.peers = event.peers
        if isinstance(event, SamplesCollected):
            self.sent += 1
            return [Send(self.peers, MessageKind.TRANSACTION, b"m%d" % self.sent)]
        return []

    def received(self) -> list[tuple[float, bytes]]:
        return [(t, e.payload) for t, e in self.seen if isinstance(e, TransactionReceived)]

    def ticks(self) -> int:
        return sum(isinstance(e, Tick) for _, e in self.seen)


class NoModel(DflModelHost):
    def train(self, batch_size: int) -> bytes:
        raise AssertionError("no ML here")

    def evaluate(self, model: bytes) -> float:
        raise AssertionError("no ML here")

    def aggregate(self, models: Any) -> None:
        raise AssertionError("no ML here")


def network(count: int = 2, seed: int = 7) -> tuple[MemoryNetwork, list[RecordingEngine]]:
    net = MemoryNetwork(latency=LATENCY, seed=seed)
    engines = [RecordingEngine() for _ in range(count)]
    for index, engine in enumerate(engines):
        net.add(MemoryNode(f"n{index}", engine, NoModel()))
    net.connect([(f"n{a}", f"n{b}") for a in range(count) for b in range(a + 1, count)])
    return net, engines


def send_at(net: MemoryNetwork, times: list[float], name: str = "n0") -> None:
    for at in times:
        net.schedule(at, name, SamplesCollected(1))


def test_latency_holds_each_message_back_by_the_delay_and_counts_it() -> None:
    net, (_, receiver) = network()
    net.set_network_fault("n0", NetworkFault(delay=0.2))
    send_at(net, [1.0, 2.0])
    net.run(5.0)
    arrivals = [t for t, _ in receiver.received()]
    assert [round(t - s, 6) for t, s in zip(arrivals, [1.0, 2.0], strict=True)] == [0.21, 0.21]
    assert net.nodes["n0"].fault_messages["delayed"] == 2
    net.set_network_fault("n0", NetworkFault())  # healed
    send_at(net, [6.0])
    net.run(7.0)
    assert round(receiver.received()[-1][0] - 6.0, 6) == LATENCY


def test_loss_is_drawn_from_the_seed_and_fails_the_send() -> None:
    def fates(seed: int) -> list[bytes]:
        net, (_, receiver) = network(seed=seed)
        net.set_network_fault("n1", NetworkFault(loss=0.5))  # on the way in
        send_at(net, [float(t) for t in range(1, 41)])
        net.run(50.0)
        lost = net.nodes["n0"].send_failures
        assert lost == net.nodes["n1"].fault_messages["dropped"] == 40 - len(receiver.received())
        return [payload for _, payload in receiver.received()]

    first = fates(3)
    assert 8 < len(first) < 32  # about half of 40 got through
    assert fates(3) == first  # the same seed draws the same fate for the n-th message
    assert fates(4) != first


def test_a_partition_cuts_both_ways_and_heals() -> None:
    net, engines = network(3)
    for name in ("n0", "n1"):
        net.set_network_fault(name, NetworkFault(cut=frozenset({"n2"} if name == "n0" else ())))
    net.set_network_fault("n2", NetworkFault(cut=frozenset({"n0"})))
    send_at(net, [1.0], "n0")
    send_at(net, [1.0], "n2")
    net.run(2.0)
    assert [p for _, p in engines[1].received()] == [b"m1", b"m1"]  # n1 hears both
    assert engines[2].received() == [] and engines[0].received() == []
    for name in ("n0", "n2"):
        net.set_network_fault(name, NetworkFault())
    send_at(net, [3.0], "n0")
    net.run(4.0)
    assert len(engines[2].received()) == 1


def test_a_crashed_node_gets_nothing_and_a_restarted_one_starts_afresh() -> None:
    net, (sender, crashed) = network()
    send_at(net, [1.0])
    net.run(1.5)
    net.crash("n1")
    ticks_before = crashed.ticks()
    send_at(net, [2.0, 3.0])
    net.schedule(4.0, "n1", Tick(), net.nodes["n1"].incarnation - 1)  # its earlier run's own
    net.run(5.0)
    assert len(crashed.received()) == 1 and crashed.ticks() == ticks_before
    assert net.nodes["n0"].send_failures == 2  # sends to a node that is down fail

    fresh = RecordingEngine()
    net.restart("n1", fresh, NoModel())
    assert isinstance(fresh.seen[0][1], PeersChanged) and fresh.peers == ("n0",)
    send_at(net, [6.0])
    net.run(7.0)
    assert [p for _, p in fresh.received()] == [b"m4"]
    assert fresh.ticks() == 2  # its clock runs again
    assert sender.sent == 4


def test_a_paused_node_holds_what_reaches_it_until_it_resumes() -> None:
    net, (_, paused) = network()
    net.pause("n1")
    send_at(net, [1.0, 2.0])
    net.run(3.0)
    assert paused.received() == [] and net.nodes["n0"].send_failures == 0
    ticks = paused.ticks()
    net.resume("n1")
    assert [p for _, p in paused.received()] == [b"m1", b"m2"]
    assert all(t == 3.0 for t, _ in paused.received())  # handled on resuming
    assert paused.ticks() == ticks  # no tick fired while it was stopped
