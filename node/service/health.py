"""The standard gRPC health service and server reflection on a node's port, from before it serves.

Docker's HEALTHCHECK, grpc_health_probe, Kubernetes' gRPC probes, Swarm and grpcurl all speak
`grpc.health.v1.Health` and server reflection; a node that answered only its own GetStatus
would need a probe of its own for each of them. So every node serves both next to `dfl.v1.Node`,
and reports NOT_SERVING until it serves (and again from the moment it begins to stop).

Start-up is the long part. Building a node opens its chain store, which re-verifies every
block (links, digests, signatures): seconds to minutes on a long chain. The node's own asyncio
server cannot answer meanwhile: the constructor runs on the thread that then runs the node's
loop (the store's SQLite connection belongs to that thread), so that loop is busy until the
node exists. Hence two servers, one after the other, on the same port:

- `StartingServer`, before the node is built: a small threaded (synchronous) gRPC server whose
  handlers run while the main thread verifies the chain. It answers Health with NOT_SERVING,
  serves reflection, and refuses every `dfl.v1.Node` call with UNAVAILABLE (what peers and the
  orchestrator retry) without reading its request.
- `NodeHealth`, on the node's own server: NOT_SERVING until `NodeBase.start` is done, SERVING
  then, NOT_SERVING again once the node begins to stop (the servicer's graceful shutdown).

The node's server binds the port while the starting server still listens (gRPC sets
SO_REUSEPORT), and only once the node serves does the starting server of that port let go
(`NodeHealth.serving`), so that a client never finds the port closed during the hand-over.

Both also write `health-probe.json` into the data directory (node/healthcheck.py reads it): the
port bound and the TLS files, so that the container's probe speaks the node's transport without
importing the node's configuration (YAML, pydantic) every few seconds in every container.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from node.datadir import replace_text
from node.healthcheck import PROBE_FILE
from node.service.config import NodeConfig
from node.service.peers import SERVICE
from node.service.tls import add_port
from proto.dfl.v1 import node_pb2

log = logging.getLogger(__name__)

# Health answers for the server as a whole ("") and for the node's service by name.
SERVICES = (health.OVERALL_HEALTH, SERVICE)
REFLECTED = (
    node_pb2.DESCRIPTOR.services_by_name["Node"].full_name,
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STARTING = "the node is starting (verifying its chain store); try again shortly"
STARTING_WORKERS = 2  # health checks and refusals only: each takes microseconds
HANDOVER_GRACE = 0.2  # seconds the starting server's calls in flight get to finish
HOLD_LIMIT = 60.0  # seconds the start-up test hook waits at most

# The starting servers of this process by port: the node that serves on a port takes it over.
_holding: dict[int, StartingServer] = {}


def write_probe_file(config: NodeConfig, port: int) -> None:
    """`health-probe.json`: where and how the probe reaches this node, replaced atomically (a
    probe never reads half a file). Paths are absolute: the probe may run elsewhere."""
    tls = config.tls
    probe: dict[str, Any] = {
        "port": port,
        "tls": None
        if tls is None
        else {name: os.path.abspath(getattr(tls, name)) for name in ("ca", "cert", "key")},
    }
    config.data_dir.mkdir(parents=True, exist_ok=True)
    replace_text(config.data_dir / PROBE_FILE, json.dumps(probe))


def _add_standard_services(server: Any, servicer: health_pb2_grpc.HealthServicer) -> None:
    """Health and reflection on `server` (a threaded or an asyncio one)."""
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(REFLECTED, server)


class NodeHealth:
    """The health of a node's own (asyncio) server; `await NodeHealth.install(...)` before the
    server starts, `serving` once the node serves, `stop` to stop the server."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self._servicer = health.aio.HealthServicer()

    @classmethod
    async def install(
        cls, server: grpc.aio.Server, node_handler: grpc.GenericRpcHandler
    ) -> NodeHealth:
        """The node's RPCs, health (NOT_SERVING for now) and reflection on `server`."""
        installed = cls(server)
        server.add_generic_rpc_handlers((node_handler,))
        _add_standard_services(server, installed._servicer)
        for service in SERVICES:
            await installed._servicer.set(service, NOT_SERVING)
        return installed

    async def serving(self, config: NodeConfig, port: int) -> None:
        """SERVING; whatever held the port while the node was built lets go of it now."""
        write_probe_file(config, port)
        for service in SERVICES:
            await self._servicer.set(service, SERVING)
        starting = _holding.get(port)
        if starting is not None:
            await asyncio.to_thread(starting.stop)

    async def stop(self, grace: float) -> None:
        """NOT_SERVING first, so that probes and balancers stop sending before calls fail."""
        await self._servicer.enter_graceful_shutdown()
        await self._server.stop(grace)


def _refuse(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    context.abort(grpc.StatusCode.UNAVAILABLE, STARTING)  # raises: the call ends here


class _NotYet(grpc.GenericRpcHandler):
    """Every `dfl.v1.Node` method, refused as UNAVAILABLE. Stream-stream whatever the method's
    kind: the answer does not depend on the request, so its bytes are never read."""

    _handler = grpc.stream_stream_rpc_method_handler(_refuse)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if handler_call_details.method.startswith(f"/{SERVICE}/"):
            return self._handler
        return None


class StartingServer:
    """The node's port while the node is being built (module docstring). A context manager:
    it stops on exit, unless `stop` came first (once the node's own server listens)."""

    def __init__(self, config: NodeConfig) -> None:
        self._pool = ThreadPoolExecutor(STARTING_WORKERS, thread_name_prefix="starting")
        self._server = grpc.server(self._pool, handlers=(_NotYet(),))
        self._health = health.HealthServicer()
        for service in SERVICES:
            self._health.set(service, NOT_SERVING)
        _add_standard_services(self._server, self._health)
        address = f"{config.listen}:{config.port}"
        try:
            self.port = add_port(self._server, address, config.tls)
        except RuntimeError:  # the threaded server raises where the asyncio one returns 0
            self.port = 0
        if not self.port:
            self._pool.shutdown(wait=False)
            raise OSError(f"cannot listen on {address}")
        self._server.start()
        self._stopped = False
        _holding[self.port] = self
        write_probe_file(config, self.port)
        log.info("listening on %s, not serving until the chain store is verified", address)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if _holding.get(self.port) is self:
            del _holding[self.port]
        self._health.enter_graceful_shutdown()
        self._server.stop(HANDOVER_GRACE).wait()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> StartingServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def hold_start(path: Path | None, limit: float = HOLD_LIMIT) -> None:
    """The start-up test hook (NodeConfig.hold_start): writes `path`, then waits while it
    exists, so that a test sees the node NOT_SERVING for as long as it needs to."""
    if path is None:
        return
    path.write_text(str(os.getpid()))
    deadline = time.monotonic() + limit
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
