"""The Locust side of `dfl load`: users that call a node's real gRPC, measured by Locust.

Run by the runner (orchestrator/load/runner.py) as

    locust -f orchestrator/load/locustfile.py --headless --dfl-plan PLAN.json -u N -r R ...

Locust's own gRPC pattern: each user holds gRPC channels whose interceptor times every call
and fires Locust's request event; Locust has patched the standard library for gevent by the
time it imports this file, and `init_gevent` then makes gRPC's core cooperate with it. Nothing
here runs in the orchestrator's process.

Users are spread over the plan's nodes in turn. Each has a connection of its own to its node
(the node rate-limits, budgets and scores per connection, so users must not share one) and is
one virtual peer (orchestrator/load/records.py). Each forged record goes over a connection of
its own (FORGED_PER_CONNECTION), as a flooder escaping the connection score would send it: each
scores its connection 20 and a ban comes at 100, and the node scores a connection by its peer
string (ip:port), so a later connection that happens to get the same local port inherits what
is left of the score. Four records per connection were measured to get one banned in a minute
this way (a reused port carried 40 points over); with one, a port would have to come back five
times within the score's decay. So every forged record reaches validation, which is what the
forged task measures (the node answers a banned connection before looking at its request).

Locust's `--csv` files are rewritten once a second while the users run, so the last version
can miss the last second's requests; the final statistics are written once more, complete,
when Locust quits (`_final_statistics`), to the plan's CSV prefix.

Every request is reported as `<task>:<rpc>` with the verdict of orchestrator/load/tasks.py: a
refusal that a forged record or an unsigned call must get is a success, anything else that is
not OK (or a forged record taken) is a failure named by the node's status and reason. The same
requests are counted for the orchestrator's /metrics (orchestrator/load/live.py), whose file is
rewritten once a second and once more at the end.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import User, constant, constant_throughput, events
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from node.service.control import ControlSigner
from node.service.peers import CHANNEL_OPTIONS, SERVICE
from orchestrator.load.live import OK_OUTCOME, LiveCounts
from orchestrator.load.plan import LoadPlan, PlanNode
from orchestrator.load.records import Forger, VirtualPeer, perturbed, virtual_peer_key
from orchestrator.load.tasks import (
    FORGED,
    FORGED_KINDS,
    INJECT,
    MODEL,
    STATUS,
    SUCCEEDS,
    TRANSACTION,
    UNAUTHENTICATED,
    UNSIGNED,
    UNSIGNED_METHODS,
    Expected,
    request_name,
    verdict,
)
from proto.dfl.v1 import node_pb2, node_pb2_grpc

# Locust imported gevent and patched the standard library before it imported this file.
grpc_gevent.init_gevent()

CALL_TIMEOUT = 30.0
FORGED_PER_CONNECTION = 1  # x 20 points, far below the default ban score of 100
HARMLESS_PEER = "127.0.0.1:1"  # what an unsigned RemovePeer names: never anyone's peer
LIVE_EVERY = 1.0  # seconds between two writes of the live totals
ACCEPTED = "ACCEPTED"  # the outcome of a request the node took but had to refuse

_environment: Environment | None = None
_plan: LoadPlan | None = None
_signer: ControlSigner | None = None
_samples: tuple[np.ndarray, np.ndarray] | None = None
_user_numbers = itertools.count()
_live = LiveCounts()


class NodeAnswer(Exception):
    """A request the node did not answer as it must; Locust's failures table shows the text."""

    def __repr__(self) -> str:
        return str(self)


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Times each call on its channel and fires Locust's request event with its verdict.

    The user names the next call and the answer it must get (`expect`) before making it; a
    user runs one task at a time, so the next intercepted call is that one.
    """

    def __init__(self, environment: Environment) -> None:
        self._environment = environment
        self._next: tuple[str, Expected] | None = None

    def expect(self, name: str, expected: Expected) -> None:
        self._next = (name, expected)

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return self._measured(details, lambda: continuation(details, request))

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Any
    ) -> Any:
        return self._measured(details, lambda: continuation(details, requests))

    def _measured(self, details: grpc.ClientCallDetails, call: Callable[[], Any]) -> Any:
        name, expected = self._next or (str(details.method), SUCCEEDS)
        self._next = None
        started = time.perf_counter()
        response = call()
        try:
            result = response.result()
            status, text = "OK", ""
            length = len(result) if isinstance(result, bytes) else result.ByteSize()
        except grpc.RpcError as error:
            status, text, length = error.code().name, error.details() or "", 0
        failure = verdict(expected, status, text)
        seconds = time.perf_counter() - started
        outcome = OK_OUTCOME if failure is None else ACCEPTED if status == "OK" else status
        _live.record(name, outcome, seconds)
        self._environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=seconds * 1000,
            response_length=length,
            exception=NodeAnswer(failure) if failure is not None else None,
            context={"status": status},
        )
        return response


def _identity(payload: bytes) -> bytes:
    return payload


def _own_connection(target: str) -> grpc.Channel:
    """A channel on a connection of its own (gRPC shares one per target by default)."""
    return grpc.insecure_channel(
        target, options=[*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    )


class NodeUser(User):
    """One load generator against one node; its tasks and their weights come from the plan
    (set in `_configure` before any user starts)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        assert _plan is not None and _signer is not None
        self.number = next(_user_numbers)
        self.node: PlanNode = _plan.nodes[self.number % len(_plan.nodes)]
        self.rng = np.random.default_rng([_plan.seed, self.number])
        self.interceptor = LocustInterceptor(self.environment)
        self.channel, self.stub, self.submit = self._connect()
        genesis = bytes.fromhex(self.node.genesis)
        self.peer = VirtualPeer(
            virtual_peer_key(_plan.seed, self.number),
            genesis,
            ttl=_plan.ttl,
            lifetime_ms=_plan.lifetime_ms,
        )
        self.model_at = float("-inf")
        self.forger = Forger(genesis, self.node.model_bytes, self.rng)
        self.forged_kinds = itertools.cycle(FORGED_KINDS)
        self.forged_sent = 0
        self.forged_channel: grpc.Channel | None = None
        self.forged_submit: Callable[..., Any] | None = None
        self.unsigned = itertools.cycle(UNSIGNED_METHODS)

    def on_stop(self) -> None:
        self.channel.close()
        if self.forged_channel is not None:
            self.forged_channel.close()

    def _connect(self) -> tuple[grpc.Channel, node_pb2_grpc.NodeStub, Callable[..., Any]]:
        """A new connection to the node, measured by this user's interceptor."""
        channel = grpc.intercept_channel(_own_connection(self.node.target), self.interceptor)
        submit = channel.unary_unary(
            f"/{SERVICE}/SubmitTransaction",
            request_serializer=_identity,
            response_deserializer=_identity,
        )
        return channel, node_pb2_grpc.NodeStub(channel), submit

    def _call(self, task: str, rpc: str, expected: Expected, call: Callable[[], Any]) -> Any:
        """Makes one measured call; its outcome is Locust's to record, not an error here."""
        self.interceptor.expect(request_name(task, rpc), expected)
        try:
            return call()
        except grpc.RpcError:
            return None

    def _signed(self, method: str) -> tuple[tuple[str, str | bytes], ...]:
        assert _signer is not None
        return _signer.metadata(method, bytes.fromhex(self.node.address))

    def _batches(self) -> Iterator[node_pb2.SampleBatch]:
        assert _plan is not None and _samples is not None
        images, labels = _samples
        picks = self.rng.integers(0, len(labels), size=_plan.batch_size)
        yield node_pb2.SampleBatch(
            samples=[
                node_pb2.Sample(pixels=images[i].tobytes(), label=int(labels[i])) for i in picks
            ]
        )

    # --- the tasks (orchestrator/load/tasks.py names them) --------------------------------------

    def inject(self) -> None:
        self._call(
            INJECT,
            "InjectSamples",
            SUCCEEDS,
            lambda: self.stub.InjectSamples(
                self._batches(), timeout=CALL_TIMEOUT, metadata=self._signed("InjectSamples")
            ),
        )

    def status(self) -> None:
        self._call(
            STATUS,
            "GetStatus",
            SUCCEEDS,
            lambda: self.stub.GetStatus(node_pb2.StatusRequest(), timeout=CALL_TIMEOUT),
        )

    def model(self) -> None:
        self._call(MODEL, "GetModel", SUCCEEDS, lambda: self._get_model(self.stub))

    def _get_model(self, stub: node_pb2_grpc.NodeStub) -> node_pb2.ModelWeights:
        return stub.GetModel(
            node_pb2.ModelRequest(), timeout=CALL_TIMEOUT, metadata=self._signed("GetModel")
        )

    def transaction(self) -> None:
        """A virtual peer's new transaction; its model follows the node's every so often (that
        fetch is measured too, as transaction:GetModel)."""
        assert _plan is not None
        now = time.monotonic()
        if now - self.model_at >= _plan.model_refresh_seconds:
            self.model_at = now
            answer = self._call(
                TRANSACTION, "GetModel", SUCCEEDS, lambda: self._get_model(self.stub)
            )
            if answer is not None:
                self.peer.use_model(perturbed(answer.weights, self.rng, _plan.perturbation))
        if not self.peer.has_model:
            return
        payload = self.peer.transaction(int(time.time() * 1000))
        self._call(
            TRANSACTION,
            "SubmitTransaction",
            SUCCEEDS,
            lambda: self.submit(payload, timeout=CALL_TIMEOUT),
        )

    def forged(self) -> None:
        if self.forged_submit is None or self.forged_sent % FORGED_PER_CONNECTION == 0:
            if self.forged_channel is not None:
                self.forged_channel.close()
            self.forged_channel, _, self.forged_submit = self._connect()
        self.forged_sent += 1
        kind = next(self.forged_kinds)
        payload = self.forger.record(kind, int(time.time() * 1000))
        submit = self.forged_submit
        self._call(FORGED, kind, FORGED_KINDS[kind], lambda: submit(payload, timeout=CALL_TIMEOUT))

    def unauthenticated(self) -> None:
        method = next(self.unsigned)
        calls: dict[str, Callable[[], Any]] = {
            "GetModel": lambda: self.stub.GetModel(node_pb2.ModelRequest(), timeout=CALL_TIMEOUT),
            "RemovePeer": lambda: self.stub.RemovePeer(
                node_pb2.PeerRequest(peer=HARMLESS_PEER), timeout=CALL_TIMEOUT
            ),
            "SetNetworkFault": lambda: self.stub.SetNetworkFault(
                node_pb2.NetworkFault(), timeout=CALL_TIMEOUT
            ),
            "InjectSamples": lambda: self.stub.InjectSamples(self._batches(), timeout=CALL_TIMEOUT),
        }
        self._call(UNAUTHENTICATED, method, UNSIGNED, calls[method])


TASK_METHODS: dict[str, Callable[[NodeUser], None]] = {
    INJECT: NodeUser.inject,
    STATUS: NodeUser.status,
    MODEL: NodeUser.model,
    TRANSACTION: NodeUser.transaction,
    FORGED: NodeUser.forged,
    UNAUTHENTICATED: NodeUser.unauthenticated,
}


def _stop_with(parent: int) -> None:
    """SIGTERM (Locust's orderly stop) when the orchestrator that started us dies: Linux's
    PR_SET_PDEATHSIG, asked for here rather than in a preexec_fn, and a check that it is not
    already gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(f"the orchestrator (pid {parent}) is gone")


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--dfl-plan", default="", help="the load plan (orchestrator/load/plan.py)")


@events.init.add_listener
def _configure(environment: Environment, **_: Any) -> None:
    """The plan's tasks, weights and pause, before the first user starts."""
    global _environment, _plan, _signer, _samples
    _environment = environment
    path = getattr(environment.parsed_options, "dfl_plan", "")
    if not path:
        raise SystemExit("this locustfile needs --dfl-plan FILE (dfl load writes one)")
    _plan = LoadPlan.read(Path(path))
    if _plan.parent_pid:
        _stop_with(_plan.parent_pid)
    if _plan.niceness:
        os.nice(_plan.niceness)
    _signer = ControlSigner.load(Path(_plan.control_key))
    with np.load(_plan.samples) as samples:
        _samples = (samples["images"], samples["labels"])
    NodeUser.tasks = [
        TASK_METHODS[name] for name, weight in _plan.weights.items() for _ in range(weight)
    ]
    NodeUser.wait_time = (
        constant_throughput(_plan.user_rate) if _plan.user_rate else constant(_plan.wait_seconds)
    )
    if _plan.live_file:
        gevent.spawn(_keep_writing_live, environment, Path(_plan.live_file))


def _keep_writing_live(environment: Environment, path: Path) -> None:
    """The live totals for the orchestrator's /metrics, once a second until Locust quits."""
    while True:
        _write_live(environment, path)
        gevent.sleep(LIVE_EVERY)


def _write_live(environment: Environment, path: Path) -> None:
    _live.users = environment.runner.user_count if environment.runner is not None else 0
    with contextlib.suppress(OSError):
        _live.write(path)


@events.quit.add_listener
def _final_statistics(**_: Any) -> None:
    """The plan's PREFIX_stats.csv and PREFIX_failures.csv, in Locust's own layout, once every
    user has stopped. Locust's `--csv` files are rewritten once a second while users still run,
    so their last version can miss the requests of the last second; this event comes after the
    users stopped (and so after their last request was recorded) and before Locust exits."""
    if _environment is None or _plan is None:
        return
    if _plan.live_file:
        _write_live(_environment, Path(_plan.live_file))
    writer = StatsCSV(_environment, PERCENTILES_TO_REPORT)
    for suffix, write in (
        ("_stats.csv", writer.requests_csv),
        ("_failures.csv", writer.failures_csv),
    ):
        path = Path(_plan.csv_prefix + suffix)
        part = path.with_name(path.name + ".part")
        with part.open("w", newline="") as handle:
            write(csv.writer(handle))
        os.replace(part, path)
