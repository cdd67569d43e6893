"""How the orchestrator reaches a node, whoever started it (a process, a container, Compose).

Kept apart from the driver so that the command line can name nodes without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(kw_only=True)
class NodeEndpoint:
    """Where the driver reaches a node: gRPC at host:port, /metrics at host:metrics_port."""

    index: int  # the node's place in the spec: its partition, its rate
    name: str
    host: str = "127.0.0.1"
    port: int
    metrics_port: int  # 0: the node serves no /metrics
    address: str = ""  # filled in by the driver from GetStatus
    # The name its TLS certificate carries, when the driver dials an address the certificate
    # does not list (None: `host` itself is in it).
    tls_name: str | None = None

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str | None:
        return f"http://{self.host}:{self.metrics_port}/metrics" if self.metrics_port else None
