"""A real node served in this process, for the tests that talk to one node's gRPC port.

The node is the real DflNode (gRPC server, SQLite chain, ML thread) on its own asyncio loop in a
background thread, listening on 127.0.0.1; tests reach it over a real channel and read its
counters from its Prometheus registry. Its orchestrator key is made here, so tests can sign
control calls as the orchestrator would, or sign them wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from node.service.control import ControlSigner, Metadata
from node.service.peers import CHANNEL_OPTIONS, SERVICE
from node.service.server import DflNode
from orchestrator.runtimes.local import free_ports

# A small, fast node: the MLP model, no peers, nothing it must reach.
NODE_SETTINGS: dict[str, Any] = {"model": "mlp", "seed": 5, "identity": "derived"}


@dataclass
class Answer:
    """What a call came back with: its status code and details (OK: the response bytes)."""

    code: grpc.StatusCode
    details: str
    response: bytes | list[bytes] | None = None


class ServedNode:
    """One running node; `call` sends raw bytes to any of its methods."""

    def __init__(self, node: DflNode, loop: asyncio.AbstractEventLoop, control: ControlSigner):
        self.node = node
        self.loop = loop
        self.control = control
        self.target = f"127.0.0.1:{node.port}"
        self.address = node.key.address
        self._channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)

    def signed(self, method: str, signer: ControlSigner | None = None) -> Metadata:
        return (signer or self.control).metadata(method, self.address)

    def channel(self, *, own_connection: bool = False) -> grpc.Channel:
        """A new channel; `own_connection`: its own TCP connection, a peer of its own."""
        options = list(CHANNEL_OPTIONS)
        if own_connection:
            options.append(("grpc.use_local_subchannel_pool", 1))
        return grpc.insecure_channel(self.target, options=options)

    def call(
        self,
        method: str,
        payload: bytes | list[bytes],
        *,
        metadata: Metadata | None = None,
        channel: grpc.Channel | None = None,
        timeout: float = 10.0,
    ) -> Answer:
        """A raw call of `method`: a list payload streams (InjectSamples); StreamChain's
        responses come back as a list."""
        ch = channel or self._channel
        path = f"/{SERVICE}/{method}"
        identity = {"request_serializer": bytes, "response_deserializer": bytes}
        try:
            if method == "InjectSamples":
                chunks = payload if isinstance(payload, list) else [payload]
                response: Any = ch.stream_unary(path, **identity)(
                    iter(chunks), metadata=metadata, timeout=timeout
                )
            elif method == "StreamChain":
                response = list(
                    ch.unary_stream(path, **identity)(payload, metadata=metadata, timeout=timeout)
                )
            else:
                response = ch.unary_unary(path, **identity)(
                    payload, metadata=metadata, timeout=timeout
                )
        except grpc.RpcError as error:
            return Answer(error.code(), error.details() or "")
        return Answer(grpc.StatusCode.OK, "", response)

    def counted(self, name: str, **labels: str) -> float:
        """A sample of the node's own registry (0 when absent)."""
        value = self.node.metrics.registry.get_sample_value(name, labels or None)
        return value or 0.0

    def rejected(self, reason: str) -> float:
        return self.counted("dfl_rejected_total", reason=reason)

    def run(self, coroutine_function: Any, *args: Any) -> Any:
        """Runs `coroutine_function(*args)` on the node's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine_function(*args), self.loop).result(30)

    def close(self) -> None:
        self._channel.close()


@contextlib.contextmanager
def served_node(directory: Path, **settings: Any) -> Iterator[ServedNode]:
    """A DflNode in `directory` (data), trusting a control key made here; stopped on exit.
    `settings` are node config fields (e.g. limits={...})."""
    from node.service.config import load_node_config

    control = ControlSigner.generate()
    port = free_ports(1)[0]
    config = load_node_config(
        None,
        environ={},
        name="served",
        data_dir=directory,
        port=port,
        **{"control_key": [control.public_hex], **NODE_SETTINGS, **settings},
    )
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []
    made: list[DflNode] = []

    def serve() -> None:  # the node's thread: its SQLite connection must live here
        asyncio.set_event_loop(loop)
        try:
            made.append(DflNode(config))
            loop.run_until_complete(made[0].start())
        except BaseException as error:  # reported to the test below
            failure.append(error)
            started.set()
            return
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="served-node", daemon=True)
    thread.start()
    started.wait(60)
    if failure:
        raise failure[0]
    node = made[0]
    served = ServedNode(node, loop, control)
    try:
        yield served
    finally:
        served.close()
        asyncio.run_coroutine_threadsafe(node.stop(grace=0.5), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
