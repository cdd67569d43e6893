"""Hypothesis fuzzing of every RPC of a real node, over its real gRPC port.

Why: the RPCs are a node's attack surface. Every method takes raw bytes from anyone (control
calls from the orchestrator only) and passes the gate (node/service/rpc.py), a handler, the
engine and gRPC itself; a bug anywhere on that path shows to a peer only as the status it gets.
So each call's outcome is predicted here, independently of the node (requests re-parsed, records
decoded and validated against the node's own policy and state), and the node's answer must
agree: the same refusal label, with that label's status, or OK exactly when the input is valid.
On every call: never UNKNOWN, INTERNAL or DEADLINE_EXCEEDED, no traceback in the log, and no
effect without an OK (chain height, counters, samples, peers). After every test the node's
thread is alive and GetStatus answers.

Inputs: random bytes (0..8 KB), requests at exactly their size bound and one byte above, and
structured mutations of valid requests (field ops at any depth, optionally re-signed and re-mined
so they reach the checks behind the signature, then wire-level byte ops). One DFL node and one
BLADE-FL node serve the whole module; their limits are lifted so that rate limits and bans do
not mask the handlers. Deterministic (derandomize, no database), about 2,000 examples per RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import example, given
from hypothesis import strategies as st

from node.ledger import records
from node.ledger import validation as v
from node.ledger.errors import RecordRejected, RejectReason
from node.service.admission import Limits
from node.service.base import MAX_PEERS
from node.service.blade_server import BladeNode
from node.service.control import ControlSigner
from proto.dfl.v1 import node_pb2
from proto.dfl.v1 import records_pb2 as pb
from tests.fuzz import rpc_strategies as rs
from tests.served import NODE_SETTINGS, Answer, ServedNode, served_node

LIMITS = {"ban_score": 1e12, "requests_per_second": 1e9, "request_burst": 1e9}
LIMITS |= {"evaluations_per_minute": 1e9, "max_pending_ml": 1_000_000}
BLADE = {"clients": 3, "rounds": 3, "local_iterations": 1, "difficulty": 1000}
SMALL, SAMPLE_BYTES = Limits().max_request_bytes, Limits().max_sample_batch_bytes
RECORD = v.DEFAULT_MAX_MESSAGE_BYTES
Code = grpc.StatusCode
NEVER = {Code.UNKNOWN, Code.INTERNAL, Code.DEADLINE_EXCEEDED}
STATUS_OF = {r.label: {Code[r.grpc_status]} for r in RejectReason}
STATUS_OF["bad_peer_address"] |= {Code.ALREADY_EXISTS, Code.NOT_FOUND}
STATUS_OF["unauthenticated"] |= {Code.PERMISSION_DENIED}
ANY: frozenset[str | None] = frozenset([None, *STATUS_OF])  # the oracle cannot tell
PEER = re.compile(r"(?:[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):([0-9]+)", re.ASCII)
CONTROL = ("InjectSamples", "AddPeer", "RemovePeer", "GetModel", "SetNetworkFault")


# --- the nodes -----------------------------------------------------------------------------------


class Tracebacks(logging.Handler):
    """Every ERROR or traceback the node logs (gRPC logs a handler's exception this way)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.found.append(self.format(record))


@dataclass
class Fuzzed:
    """One node under fuzzing, what its seeds need, and what it has accepted."""

    served: ServedNode
    thread: str
    weights: bytes = b""
    accepted: set[bytes] = field(default_factory=set)  # digests the node said OK to
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def node(self) -> Any:
        return self.served.node

    @property
    def engine(self) -> Any:
        return self.served.node.engine


@dataclass
class Nodes:
    dfl: Fuzzed
    blade: Fuzzed
    log: Tracebacks


@contextlib.contextmanager
def served_blade_node(directory: Path, **settings: Any) -> Iterator[ServedNode]:
    """tests/served.py's served_node, building a BladeNode (protocol blade-fl, BLADE) instead."""
    from node.service.config import load_node_config
    from orchestrator.runtimes.local import free_ports

    control = ControlSigner.generate()
    fields = {"control_key": [control.public_hex], **NODE_SETTINGS, "protocol": "blade-fl"}
    fields |= {"blade": BLADE, **settings}
    config = load_node_config(
        None, environ={}, name="blade", data_dir=directory, port=free_ports(1)[0], **fields
    )
    loop, started, made = asyncio.new_event_loop(), threading.Event(), []

    def serve() -> None:  # the node's thread: its SQLite connection must live here
        asyncio.set_event_loop(loop)
        try:
            made.append(BladeNode(config))
            loop.run_until_complete(made[0].start())
        finally:
            started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="served-blade-node", daemon=True)
    thread.start()
    started.wait(60)
    assert made and made[0].port, "the BLADE-FL node did not start"
    served = ServedNode(made[0], loop, control)  # type: ignore[arg-type]
    try:
        yield served
    finally:
        served.close()
        asyncio.run_coroutine_threadsafe(made[0].stop(grace=0.5), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def prepared(served: ServedNode, thread: str) -> Fuzzed:
    """The node's own model (valid weights for seeds) and, on a DFL node, 32 samples to
    evaluate received models on (fewer than a training batch)."""
    model = served.call("GetModel", b"", metadata=served.signed("GetModel"))
    assert model.code == Code.OK, model
    if thread == "served-node":
        rng = random.Random(1)
        batch = node_pb2.SampleBatch(
            samples=[
                node_pb2.Sample(pixels=rng.randbytes(rs.PIXELS), label=i % 10) for i in range(32)
            ]
        )
        answer = served.call(
            "InjectSamples", batch.SerializeToString(), metadata=served.signed("InjectSamples")
        )
        assert answer.code == Code.OK, answer
    return Fuzzed(served, thread, node_pb2.ModelWeights.FromString(model.response).weights)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    log = Tracebacks()
    logging.getLogger().addHandler(log)
    try:
        with (
            served_node(tmp_path_factory.mktemp("fuzz-dfl"), limits=LIMITS) as dfl,
            served_blade_node(tmp_path_factory.mktemp("fuzz-blade"), limits=LIMITS) as blade,
        ):
            yield Nodes(prepared(dfl, "served-node"), prepared(blade, "served-blade-node"), log)
    finally:
        logging.getLogger().removeHandler(log)


@pytest.fixture(autouse=True)
def alive(nodes: Nodes) -> Iterator[None]:
    """After each test: both nodes' threads and loops run, GetStatus answers, peers are sane."""
    yield
    for fz in (nodes.dfl, nodes.blade):
        assert any(t.name == fz.thread and t.is_alive() for t in threading.enumerate())
        assert fz.served.loop.is_running()
        assert fz.served.call("GetStatus", b"").code == Code.OK
        assert_peers_sane(fz)


def assert_peers_sane(fz: Fuzzed) -> None:
    for peer in fz.engine.state.peers:
        match = PEER.fullmatch(peer)
        assert match and 1 <= int(match[1]) <= 65535, f"engine.state.peers holds {peer!r}"


# --- outcomes and oracles ------------------------------------------------------------------------


def outcome(method: str, answer: Answer, shown: str = "") -> str | None:
    """The refusal label of an answer (None: OK), asserting its status is one the code defines."""
    what = f"{method}: {answer.code.name}: {answer.details}; {shown}"
    assert answer.code not in NEVER, what
    if answer.code == Code.OK:
        return None
    label = answer.details.split(": ", 1)[0]
    assert answer.code in STATUS_OF.get(label, ()), what
    return label


def verdict(check: Callable[[], frozenset[str | None] | None]) -> frozenset[str | None]:
    """What `check` predicts: its own set, {None} (OK) when it returns, or its refusal label."""
    try:
        return check() or frozenset([None])
    except RecordRejected as rejected:
        return frozenset([rejected.reason.label])


def request(message_type: type[Message], data: bytes, bound: int = SMALL) -> Any:
    """A request as the gate reads it, refusals raised as the gate names them."""
    if len(data) > bound:
        raise RecordRejected(RejectReason.MESSAGE_TOO_LARGE, "")
    try:
        return message_type.FromString(data)
    except DecodeError:
        raise RecordRejected(RejectReason.MALFORMED, "") from None


def rejected(reason: RejectReason) -> RecordRejected:
    return RecordRejected(reason, "")


def dfl_transaction(fz: Fuzzed, data: bytes, now: float) -> frozenset[str | None] | None:
    engine = fz.engine
    tx = v.decode(pb.Transaction, data, engine.policy.max_message_bytes)
    generator = tx.body.generator.address
    if generator in engine.state.refused:
        raise rejected(RejectReason.REFUSED_GENERATOR)
    if generator == engine.address or tx.digest in fz.accepted:
        return ANY  # its own receipts or a relay: state this oracle does not model
    v.validate_transaction(tx, engine.policy, now_ms=int(now * 1000), weights="optional")
    if not tx.model:
        raise rejected(RejectReason.MODEL_SHAPE_MISMATCH)
    if records.received_at_ttl(tx) < 0:
        raise rejected(RejectReason.TTL_MISMATCH)
    return None


def dfl_draft(fz: Fuzzed, data: bytes, now: float) -> frozenset[str | None] | None:
    engine = fz.engine
    block = v.decode(pb.Block, data, engine.policy.max_message_bytes)
    v.validate_draft_block(block, engine.policy, contents=False)
    if block.body.creator.address == engine.address:
        raise rejected(RejectReason.WRONG_CREATOR)
    mine_too = (r.body.creator.address for t in block.body.transactions for r in t.receipts)
    return ANY if engine.address in mine_too else None


def dfl_confirmations(fz: Fuzzed, data: bytes, now: float) -> frozenset[str | None] | None:
    v.decode(pb.ConfirmationBatch, data, fz.engine.policy.max_message_bytes)
    if fz.engine.state.draft is None:  # this node never drafts: it has no peers
        raise rejected(RejectReason.BAD_LINK)
    return ANY


def blade_pool_model(fz: Fuzzed, data: bytes, now: float) -> frozenset[str | None] | None:
    engine, state = fz.engine, fz.engine.state
    tx = v.decode(pb.Transaction, data, engine.config.max_message_bytes)
    if tx.body.generator.address in state.refused:
        raise rejected(RejectReason.REFUSED_GENERATOR)
    v.validate_pool_model(tx, engine.policy)
    if not state.height < tx.body.round <= state.height + 2:
        raise rejected(RejectReason.WRONG_ROUND)
    if tx.body.generator.address in state.pool.get(tx.body.round, {}):
        raise rejected(RejectReason.DUPLICATE)
    return None


def blade_block(fz: Fuzzed, data: bytes, now: float) -> frozenset[str | None] | None:
    engine, state = fz.engine, fz.engine.state
    block = v.decode(pb.PowBlock, data, engine.config.max_message_bytes)
    height, chain = block.header.height, state.chain
    if height > state.height + 1:
        v.validate_pow_block(block, engine.policy, previous_hash=None)
    elif height <= state.height:
        if height >= 1 and block.hash == chain[height]:
            raise rejected(RejectReason.DUPLICATE)
        v.validate_pow_block(block, engine.policy, previous_hash=chain[height - 1])
    else:
        votes = state.heights.get(height)
        if votes is not None and block.hash in votes.blocks:
            raise rejected(RejectReason.DUPLICATE)
        pool = {tx.digest: tx.signature for tx in state.pool.get(height, {}).values()}
        v.validate_pow_block(block, engine.policy, previous_hash=chain[-1], pool=pool)
    return None


def blade_vote(fz: Fuzzed, data: bytes, now: float) -> frozenset[str | None] | None:
    engine, state = fz.engine, fz.engine.state
    vote = v.decode(pb.BlockVote, data, engine.config.max_message_bytes)
    v.validate_vote(vote, engine.policy)
    votes = state.heights.get(vote.body.height)
    if vote.body.height > state.height and votes and vote.body.voter.address in votes.voters:
        raise rejected(RejectReason.DUPLICATE)
    return None


def own_addresses(fz: Fuzzed) -> set[str]:
    port, config = fz.node.port, fz.node.config
    hosts = (config.listen, "127.0.0.1", "localhost", socket.gethostname())
    return {config.address, *(f"{host}:{port}" for host in hosts)}


def add_peer(fz: Fuzzed, data: bytes, now: float) -> frozenset[str | None] | None:
    peer, peers = request(node_pb2.PeerRequest, data).peer, fz.engine.state.peers
    match = PEER.fullmatch(peer)  # host:port in ASCII, as check_peer_address documents
    if not match or not 1 <= int(match[1]) <= 65535 or peer in own_addresses(fz):
        raise rejected(RejectReason.BAD_PEER_ADDRESS)
    if peer in peers or len(peers) >= MAX_PEERS:
        raise rejected(RejectReason.BAD_PEER_ADDRESS)
    return None


def network_fault(fz: Fuzzed, data: bytes, now: float) -> frozenset[str | None] | None:
    fault = request(node_pb2.NetworkFault, data)
    if not 0.0 <= fault.loss <= 1.0 or fault.jitter_ms > fault.delay_ms:
        raise rejected(RejectReason.MALFORMED)
    return None


def remove_peer(fz: Fuzzed, data: bytes, now: float) -> frozenset[str | None] | None:
    if request(node_pb2.PeerRequest, data).peer not in fz.engine.state.peers:
        raise rejected(RejectReason.BAD_PEER_ADDRESS)
    return None


def samples(chunks: list[bytes]) -> tuple[str | None, int]:
    """InjectSamples, batch by batch: (refusal label or None, samples taken before it)."""
    taken = 0
    for data in chunks:
        try:
            batch = request(node_pb2.SampleBatch, data, SAMPLE_BYTES)
        except RecordRejected as refused:
            return refused.reason.label, taken
        if any(len(s.pixels) != rs.PIXELS or s.label > 9 for s in batch.samples):
            return "malformed", taken  # every sample is 28x28 with a digit's label
        taken += len(batch.samples)
    return None, taken


Oracle = Callable[[Fuzzed, bytes, float], frozenset[str | None] | None]


@dataclass(frozen=True)
class Rpc:
    """One method under fuzzing: on which node, its request, its oracle (None: the request
    parses, or InjectSamples' `samples`) and its size bound."""

    node: str
    message: type[Message]
    oracle: Oracle | None = None
    bound: int = SMALL


RPCS: dict[str, Rpc] = {
    "SubmitTransaction": Rpc("dfl", pb.Transaction, dfl_transaction, RECORD),
    "SubmitDraftBlock": Rpc("dfl", pb.Block, dfl_draft, RECORD),
    "SubmitConfirmations": Rpc("dfl", pb.ConfirmationBatch, dfl_confirmations, RECORD),
    "InjectSamples": Rpc("dfl", node_pb2.SampleBatch, bound=SAMPLE_BYTES),
    "GetStatus": Rpc("dfl", node_pb2.StatusRequest),
    "GetModel": Rpc("dfl", node_pb2.ModelRequest),
    "StreamChain": Rpc("dfl", node_pb2.ChainRequest),
    "AddPeer": Rpc("dfl", node_pb2.PeerRequest, add_peer),
    "RemovePeer": Rpc("dfl", node_pb2.PeerRequest, remove_peer),
    "ListPeers": Rpc("dfl", node_pb2.PeerRequest),
    "SetNetworkFault": Rpc("dfl", node_pb2.NetworkFault, network_fault),
    "SubmitPowBlock": Rpc("blade", pb.PowBlock, blade_block, RECORD),
    "SubmitBlockVote": Rpc("blade", pb.BlockVote, blade_vote, RECORD),
    "GetRoundModels": Rpc("blade", node_pb2.RoundRequest),
    "SubmitPoolModel": Rpc("blade", pb.Transaction, blade_pool_model, RECORD),
}


def wire_name(method: str) -> str:
    return "SubmitTransaction" if method == "SubmitPoolModel" else method


def observe(fz: Fuzzed) -> dict[str, Any]:
    counters = fz.engine.state.counters
    return {
        "height": fz.node.store.height,
        "received": counters["transactions_received"] + counters["models_received"],
        "samples": fz.node.samples_injected,
        "peers": fz.engine.state.peers,
    }


def exercise(nodes: Nodes, method: str, payload: bytes | list[bytes]) -> str | None:
    """Calls `method` with `payload` (signed, for a control method) and checks the node's answer
    and its effects against the oracle; returns the refusal label (None: OK). A peer added is
    removed again at once, so every example starts from the same peers."""
    rpc = RPCS[method]
    fz = nodes.blade if rpc.node == "blade" else nodes.dfl
    chunks = payload if isinstance(payload, list) else [payload]
    before, now, logged = observe(fz), time.time(), len(nodes.log.found)
    if method == "InjectSamples":
        expected, taken = samples(chunks)
        allowed = frozenset([expected])
    else:
        oracle = rpc.oracle or (lambda fz, data, now: request(rpc.message, data) and None)
        allowed = verdict(lambda: oracle(fz, chunks[0], now))
        if method == "SubmitTransaction":  # the only verdict that depends on the time
            allowed |= verdict(lambda: oracle(fz, chunks[0], now + 2.0))
    name = wire_name(method)
    metadata = fz.served.signed(name) if name in CONTROL else None
    answer = fz.served.call(name, payload, metadata=metadata, timeout=30)
    peers = fz.engine.state.peers
    if method == "AddPeer" and answer.code == Code.OK:
        undo = fz.served.call("RemovePeer", chunks[0], metadata=fz.served.signed("RemovePeer"))
        assert undo.code == Code.OK, undo
    if method == "SetNetworkFault" and answer.code == Code.OK:  # heal before the next example
        healed = fz.served.call("SetNetworkFault", b"", metadata=fz.served.signed(name))
        assert healed.code == Code.OK, healed
        assert fz.node.network_faults.fault.healthy
    log = "\n".join(nodes.log.found[logged:])
    shown = f"input {bytes(chunks[0][:200]).hex() if chunks else '(no message)'}\n{log}"
    label = outcome(method, answer, shown)
    assert label in allowed, (
        f"{method}: answered {label or 'OK'} ({answer.details}); "
        f"expected {sorted(map(str, allowed))}; {shown}"
    )
    after = observe(fz)
    if after["height"] != before["height"]:  # a block appended: the ML thread aggregates it
        settle(fz.served)
        log = "\n".join(nodes.log.found[logged:])
    assert not log, f"{method}: the node logged an error: {shown}\n{log}"
    assert after["height"] == before["height"] or label is None, f"{method} moved the chain"
    if method in ("SubmitTransaction", "SubmitPoolModel"):
        assert after["received"] - before["received"] == (label is None), (method, label)
        if label is None:
            fz.accepted.add(pb.Transaction.FromString(chunks[0]).digest)
    if method == "InjectSamples":
        assert after["samples"] - before["samples"] == taken, (label, taken, shown)
        if label is None:
            assert node_pb2.InjectSummary.FromString(answer.response).accepted == taken
    else:
        assert after["samples"] == before["samples"]
    changed_peers(fz, method, chunks[0] if chunks else b"", label, before["peers"], peers)
    if label is None:
        responded(fz, method, chunks[0] if chunks else b"", answer)
    return label


def changed_peers(
    fz: Fuzzed, method: str, data: bytes, label: str | None, before: tuple, peers: tuple
) -> None:
    """Only an OK AddPeer adds its peer (a host:port) and an OK RemovePeer removes its own."""
    if label is not None or method not in ("AddPeer", "RemovePeer"):
        assert peers == before, f"{method} changed the peers: {before} -> {peers}"
        return
    peer = node_pb2.PeerRequest.FromString(data).peer
    if method == "AddPeer":
        assert peers == (*before, peer), (before, peers)
        match = PEER.fullmatch(peer)
        assert match and 1 <= int(match[1]) <= 65535, f"AddPeer took {peer!r}"
    else:
        assert peers == tuple(p for p in before if p != peer), (before, peers)


def responded(fz: Fuzzed, method: str, data: bytes, answer: Answer) -> None:
    """What an OK answer must hold."""
    if method == "GetStatus":
        status = node_pb2.NodeStatus.FromString(answer.response)
        assert status.address == fz.node.key.address
        assert status.chain_height == fz.node.store.height
    elif method == "ListPeers":
        peers = node_pb2.PeerList.FromString(answer.response).peers
        assert tuple(peers) == fz.engine.state.peers
    elif method == "StreamChain":
        start = max(1, node_pb2.ChainRequest.FromString(data).from_height)
        assert len(answer.response) == max(0, fz.node.store.height - start + 1)
    elif method == "GetModel":
        weights = node_pb2.ModelWeights.FromString(answer.response)
        assert weights.genesis_digest == fz.node.genesis.digest
        assert len(weights.weights) == len(fz.weights)
    elif method == "GetRoundModels":
        batch = pb.TransactionBatch.FromString(answer.response)
        round = node_pb2.RoundRequest.FromString(data).round
        assert len(batch.transactions) == len(fz.engine.state.pool.get(round, {}))


def settle(served: ServedNode, seconds: float = 5.0) -> None:
    """Waits until the node's ML worker has reported back everything it was given."""
    deadline = time.monotonic() + seconds
    while served.node._ml_pending and time.monotonic() < deadline:
        time.sleep(0.02)


def node_of(nodes: Nodes, method: str) -> Fuzzed:
    return nodes.blade if RPCS[method].node == "blade" else nodes.dfl


# --- the tests -----------------------------------------------------------------------------------

SCALE = float(os.environ.get("RPC_FUZZ_SCALE", "1"))  # < 1 for a quick local run
EXAMPLES = {m: int(SCALE * 1000) for m in RPCS} | {"SubmitPoolModel": int(SCALE * 300)}
CONTROL_EXAMPLES = {
    k: int(SCALE * n) for k, n in {"raw": 600, "mutated": 700, "unsigned": 700}.items()
}
ONE = node_pb2.PeerRequest(peer="127.0.0.1:1").SerializeToString()  # RemovePeer's seed 0


@pytest.mark.parametrize("method", sorted(RPCS))
def test_random_bytes(nodes: Nodes, method: str) -> None:
    """Bytes from nowhere: refused with a label (mostly malformed), never a crash."""
    examples = CONTROL_EXAMPLES["raw"] if method in CONTROL else EXAMPLES[method]

    @rs.fuzz(examples)
    @given(payload=st.lists(rs.RAW, max_size=3) if method == "InjectSamples" else rs.RAW)
    def run(payload: bytes | list[bytes]) -> None:
        exercise(nodes, method, payload)

    run()


@pytest.mark.parametrize("method", sorted(RPCS))
def test_mutated_valid_requests(nodes: Nodes, method: str) -> None:
    """Valid requests mutated field by field and byte by byte: the node's verdict is the
    independent validation's, so a mutation that broke a signature is never OK."""
    fz = node_of(nodes, method)
    examples = CONTROL_EXAMPLES["mutated"] if method in CONTROL else EXAMPLES[method]

    @rs.fuzz(examples)
    @given(plan=rs.PLANS)
    def run(plan: rs.Plan) -> None:
        existing = method == "RemovePeer" and plan.variant % 2 == 0
        if existing:  # a peer for the seed to name
            added = fz.served.call("AddPeer", ONE, metadata=fz.served.signed("AddPeer"))
            assert added.code == Code.OK, added
        try:
            exercise(nodes, method, rs.mutated(fz, method, plan))
        finally:
            if existing and "127.0.0.1:1" in fz.engine.state.peers:
                fz.served.call("RemovePeer", ONE, metadata=fz.served.signed("RemovePeer"))

    run()


@pytest.mark.parametrize("method", ["SubmitPowBlock", "SubmitBlockVote", "GetRoundModels"])
def test_blade_methods_are_unimplemented_on_a_dfl_node(nodes: Nodes, method: str) -> None:
    @rs.fuzz(int(SCALE * 200))
    @given(payload=rs.RAW)
    def run(payload: bytes) -> None:
        answer = nodes.dfl.served.call(method, payload)
        assert answer.code == Code.UNIMPLEMENTED, answer

    run()


@pytest.mark.parametrize("method", CONTROL)
def test_unsigned_control_calls_are_refused(nodes: Nodes, method: str) -> None:
    """Without the orchestrator's signature of this very call: refused, counted, no effect,
    whatever the request."""
    fz, calls = nodes.dfl, []
    counted = fz.served.rejected("unauthenticated")

    @rs.fuzz(CONTROL_EXAMPLES["unsigned"])
    @given(data=st.data(), raw=rs.RAW, plan=rs.PLANS)
    def run(data: st.DataObject, raw: bytes, plan: rs.Plan) -> None:
        payload = raw if data.draw(st.booleans()) else rs.mutated(fz, method, plan)
        metadata = data.draw(rs.forged_metadata(fz.served, method))
        before = observe(fz)
        answer = fz.served.call(method, payload, metadata=metadata)
        calls.append(answer)
        assert outcome(method, answer) == "unauthenticated", answer
        assert observe(fz) == before, f"{method} changed the node: {answer}"

    run()
    assert fz.served.rejected("unauthenticated") == counted + len(calls)  # each one counted


def test_add_peer_takes_only_host_port(nodes: Nodes) -> None:
    """AddPeer (signed) near the edges of host:port: it must take an ASCII host:port with a port
    in 1-65535 (what check_peer_address documents) and refuse anything else with a label."""

    @rs.fuzz(int(SCALE * 800))
    @given(host=rs.HOSTS, port=rs.PORTS, colon=st.sampled_from([":", ":", "::", ""]))
    @example(host="127.0.0.1", port="\u00b2", colon=":")  # '²'.isdigit(), int('²') raises
    @example(host="127.0.0.1", port="\u0661", colon=":")  # ARABIC-INDIC ONE: int() is 1
    def run(host: str, port: str, colon: str) -> None:
        exercise(
            nodes, "AddPeer", node_pb2.PeerRequest(peer=host + colon + port).SerializeToString()
        )

    run()


BOUNDARY = [
    *((m, SMALL) for m in RPCS if RPCS[m].bound == SMALL),
    *((m, RECORD) for m in RPCS if RPCS[m].bound == RECORD and m != "SubmitPoolModel"),
    ("InjectSamples", SAMPLE_BYTES),
]


@pytest.mark.parametrize(("method", "bound"), BOUNDARY)
@pytest.mark.parametrize("beyond", [0, 1], ids=["at", "above"])
def test_requests_at_and_beyond_their_size_bound(
    nodes: Nodes, method: str, bound: int, beyond: int
) -> None:
    """A valid request padded (one unknown field) to exactly its method's bound is served as the
    request it is; one byte more is message_too_large."""
    variant = 13 if method == "SubmitBlockVote" else 1  # a vote far ahead: no block appended
    messages, _ = rs.seed(node_of(nodes, method), method, variant)
    payload = rs.pad(messages[0].SerializeToString(), bound + beyond)
    label = exercise(nodes, method, [payload] if method == "InjectSamples" else payload)
    assert (label == "message_too_large") == bool(beyond), label


def test_a_block_without_models_is_refused(nodes: Nodes, tmp_path: Path) -> None:
    """What the fuzzer found in BLADE-FL, replayed on a fresh node: a valid block with no models
    (mined by any key) used to win its vote with one more voter, and the round's aggregation
    then failed on the ML thread. A block holds its round's models, so it is malformed."""
    with served_blade_node(tmp_path, limits=LIMITS) as blade:
        fz, logged = Fuzzed(blade, "served-blade-node"), len(nodes.log.found)
        genesis = blade.node.genesis.digest
        header = records.pow_header(
            height=1, previous_hash=genesis, transactions=[], miner=rs.KEYS[3].address, time_ms=0
        )
        block = records.make_pow_block(rs.KEYS[3], header, 0, [])
        rs.remine(block, rs.KEY_OF, fz.engine.target, rs.KEYS[3])
        answer = blade.call("SubmitPowBlock", block.SerializeToString())
        assert answer.code == Code.INVALID_ARGUMENT and answer.details.startswith("malformed: ")
        assert blade.node.store.height == 0
        assert blade.call("GetStatus", b"").code == Code.OK
        assert not nodes.log.found[logged:], "\n".join(nodes.log.found[logged:])
