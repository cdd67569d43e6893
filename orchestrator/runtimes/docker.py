"""The `docker` runtime: one container per node, on a network of the run's own.

Everything a run creates carries the label `dfl-testbed.run=<run id>`: a bridge network, a named
volume per node (its data directory: key, chain, profile), a container per node (the
`dfl-testbed` image, the spec's CPU and memory limits, its config copied in before it starts)
and a Prometheus container scraping every node. The orchestrator stays on the host and reaches
the containers at their addresses on the bridge, so driving them is the same code as for local
processes (orchestrator/driver.py). At the end, or on Ctrl-C, the nodes get SIGTERM (they close
their chains), their logs and data directories are copied into the run directory, and the
containers, network and volumes are removed unless `--keep`.

The spec's process faults act on the containers (orchestrator/faults.py ProcessFaults): a crash
is SIGKILL (`docker kill`), its restart starts the same container again on the same volume (key,
chain and model checkpoint survive), a pause freezes the container's cgroup (`docker pause`).
Every node has a fixed address on the run's network: Docker gives a stopped container's address
back to the pool, so a restarted container could come back at another one (two crashed nodes
even swap addresses when they restart in the other order), while the orchestrator's gRPC
channels are made once per run. The network's subnet is one Docker picked from its own pools.

Health: the image's HEALTHCHECK runs in every container; the run gives it a start period as long
as it waits for every node to answer (fifty containers importing torch on two cores take minutes,
not the image's 60 s), tallies the states it sees and keeps what each failed check said, so that
a report can tell a check that timed out on a starved host from a node that refused it.

Before the nodes start, one throwaway container of the image imports the node's modules: the
kernel charges a file's page cache to the cgroup that reads it first, so without that the first
node to start would be billed tens of MiB of the image's libraries and bytecode, which every
node shares, and its memory figure would say more about start order than about the node.

With `transport: {tls: true}` the run's CA issues each node a certificate, copied into its volume
before it starts (orchestrator/runtimes/tls_files.py); the health check then speaks TLS too.
"""

from __future__ import annotations

import io
import ipaddress
import itertools
import logging
import os
import secrets
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from node.service.config import TlsFiles
from node.service.control import ControlSigner
from orchestrator.driver import RunFailed, run_experiment
from orchestrator.endpoint import NodeEndpoint
from orchestrator.exporter import OrchestratorMetrics
from orchestrator.runtimes.container_run import finish_container_run
from orchestrator.runtimes.local import free_ports
from orchestrator.runtimes.settings import (
    container_ready_timeout,
    difficulty_for,
    experiment_settings,
    peer_names,
)
from orchestrator.runtimes.tls_files import ContainerCertificates, health_settings
from orchestrator.runtimes.tls_files import tar_of as _tar_of
from orchestrator.spec import ExperimentSpec

log = logging.getLogger(__name__)

IMAGE_ENV = "DFL_IMAGE"
DEFAULT_IMAGE = "dfl-testbed:latest"
PROMETHEUS_IMAGE_ENV = "DFL_PROMETHEUS_IMAGE"
# The offline build (dashboards/prometheus/Dockerfile) first, then the official image.
PROMETHEUS_IMAGES = ("dfl-prometheus:latest", "prom/prometheus:v2.53.0")
RUN_LABEL = "dfl-testbed.run"
NODE_LABEL = "dfl-testbed.node"
GRPC_PORT = 50051
METRICS_PORT = 9100
CONFIG_PATH = "/etc/dfl/node.yaml"
DATA_PATH = "/data"
STOP_GRACE = 15  # seconds between SIGTERM and SIGKILL
# What a node imports before it listens: reading it once fills the page cache (module docstring).
PRIME_COMMAND = ["python", "-c", "import node.service.server"]
PRIME_TIMEOUT = 120  # seconds; an import takes a few on an idle host
# Python 3.11.4's extraction filter, where there is one (the image's Debian Python is 3.11.2).
SAFE_EXTRACT = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
HEALTH_OUTPUT_CHARS = 200  # of a failed check's output, kept per distinct message
# As dashboards/prometheus.yml, with this run's nodes and the orchestrator on the host, which
# the containers reach at the bridge's gateway address.
PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: {targets}
    relabel_configs:
      - source_labels: [__address__]
        regex: "([^:]+):.*"
        target_label: node
  - job_name: orchestrator
    honor_labels: true
    static_configs:
      - targets: ["{orchestrator}"]
"""


class DockerUnavailable(Exception):
    """No engine answers, or the image is missing; the message says what to run."""


@dataclass(kw_only=True)
class ContainerNode(NodeEndpoint):
    """`host` is the container's address on the run's network, known once it started."""

    port: int = GRPC_PORT
    metrics_port: int = METRICS_PORT
    data_dir: Path  # in the run directory, filled when the run ends
    container: Any = None  # docker.models.containers.Container


@dataclass
class DockerRun:
    """The containers of one run and what became of them."""

    spec: ExperimentSpec
    out: Path
    image: str
    client: Any  # docker.DockerClient
    keep: bool = False
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))
    nodes: list[ContainerNode] = field(default_factory=list)
    started_at: float = 0.0
    elapsed: float | None = None
    tolerate_exits: bool = False
    pow_difficulty: float | None = None
    network: Any = None
    prometheus: Any = None
    prometheus_url: str | None = None
    exporter: OrchestratorMetrics = field(default_factory=OrchestratorMetrics)
    control: ControlSigner = field(default_factory=ControlSigner.generate)  # the run's own key
    down: set[str] = field(default_factory=set)  # crashed or paused by the spec's faults
    health: dict[str, Counter[str]] = field(default_factory=dict)
    # Failed checks by what they said (Docker keeps the last five; each is counted once).
    health_failures: dict[str, Counter[str]] = field(default_factory=dict)
    ready_timeout: float = 60.0  # how long the driver waits for every node to answer
    certificates: ContainerCertificates | None = None  # the run's CA, when it uses TLS
    client_tls: TlsFiles | None = None  # the orchestrator's certificate from it
    _checks_seen: dict[str, set[str]] = field(default_factory=dict)

    # --- the spec's process faults (orchestrator/faults.py ProcessFaults) ----------------------

    def peer_address(self, index: int) -> str:
        """What the other nodes' configs list it as (and what it advertises)."""
        return f"node{index}:{GRPC_PORT}"

    def crash(self, index: int) -> None:
        """SIGKILL, as a power cut: nothing is flushed that was not already."""
        node = self.nodes[index]
        status = self._status(node)
        if status != "running":  # died on its own: left to failure_of to report
            log.warning("%s: not crashed, its container is %s", node.name, status or "gone")
            return
        self.down.add(node.name)
        node.container.kill()
        _quietly(node.container.wait, timeout=STOP_GRACE)  # exited before a restart can come

    def restart(self, index: int) -> None:
        """The same container again: same volume (key, chain, model), same fixed address."""
        node = self.nodes[index]
        node.container.start()
        self._take_address(node)
        self.down.discard(node.name)

    def pause(self, index: int) -> None:
        """The container's processes frozen (cgroup freezer): memory and sockets kept."""
        node = self.nodes[index]
        if self._status(node) == "running":
            self.down.add(node.name)
            node.container.pause()

    def resume(self, index: int) -> None:
        node = self.nodes[index]
        if self._status(node) == "paused":
            node.container.unpause()
        self.down.discard(node.name)

    def _status(self, node: ContainerNode) -> str | None:
        try:
            node.container.reload()
        except Exception as error:
            log.warning("%s: container gone (%s)", node.name, error)
            return None
        return node.container.attrs["State"]["Status"]

    def _take_address(self, node: ContainerNode) -> None:
        """node.host from the started container; the one it was given, or RunFailed."""
        node.container.reload()
        found = node.container.attrs["NetworkSettings"]["Networks"][self.network.name]["IPAddress"]
        if node.host != found:
            raise RunFailed(
                f"{node.name} came up at {found}, not at its fixed address {node.host}: the "
                "orchestrator's channels would reach another node"
            )

    @property
    def prefix(self) -> str:
        return f"dfl-{self.spec.name}-{self.run_id}"

    @property
    def labels(self) -> dict[str, str]:
        return {RUN_LABEL: self.run_id, "dfl-testbed.experiment": self.spec.name}

    def node_config(self, node: ContainerNode, peers: list[str]) -> dict[str, Any]:
        return {
            "name": node.name,
            "data_dir": DATA_PATH,
            "listen": "0.0.0.0",
            "port": GRPC_PORT,
            "advertise": f"{node.name}:{GRPC_PORT}",
            "metrics_port": METRICS_PORT,
            "peers": [f"{peer}:{GRPC_PORT}" for peer in peers],
            "control_key": [self.control.public_hex],
            **(self.certificates.setting() if self.certificates else {}),
            **experiment_settings(self.spec, node.index, self.pow_difficulty),
        }

    def peer_names(self) -> dict[str, list[str]]:
        return peer_names(self.spec)

    def create(self) -> None:
        """Network, volumes and containers (created, not started), configs copied in."""
        spec = self.spec
        if spec.blade is not None and self.pow_difficulty is None:
            self.pow_difficulty = difficulty_for(spec)
        if spec.transport.tls_or(False):
            self.certificates = ContainerCertificates(self.prefix, self.out, DATA_PATH)
            self.client_tls = self.certificates.client_tls
        self.network, addresses = self._create_network()
        peers = self.peer_names()
        limits: dict[str, Any] = {}
        if spec.resources.cpus is not None:
            limits["nano_cpus"] = int(spec.resources.cpus * 1e9)
        if spec.resources.memory is not None:
            limits["mem_limit"] = spec.resources.memory
        for index in range(spec.nodes.count):
            name = f"node{index}"
            node = ContainerNode(
                index=index, name=name, host=addresses[index], data_dir=self.out / "nodes" / name
            )
            volume = self.client.volumes.create(
                f"{self.prefix}-{name}", labels={**self.labels, NODE_LABEL: name}
            )
            node.container = self.client.containers.create(
                self.image,
                ["python", "-m", "node", "--config", CONFIG_PATH],
                name=f"{self.prefix}-{name}",
                hostname=name,
                labels={**self.labels, NODE_LABEL: name},
                volumes={volume.name: {"bind": DATA_PATH, "mode": "rw"}},
                network=self.network.name,
                networking_config={
                    self.network.name: self.client.api.create_endpoint_config(
                        aliases=[name], ipv4_address=node.host
                    )
                },
                stop_signal="SIGTERM",
                # The image's check, interval and timeout (over TLS if the run uses it); only the
                # start period is the run's.
                healthcheck=health_settings(self.certificates, self.ready_timeout),
                **limits,
            )
            config = yaml.safe_dump(self.node_config(node, peers[name]))
            node.container.put_archive("/", _tar_of(CONFIG_PATH, config))
            if self.certificates is not None:
                node.container.put_archive(DATA_PATH, self.certificates.archive(name, node.host))
            self.nodes.append(node)
        self._create_prometheus()

    def _create_network(self, attempts: int = 5) -> tuple[Any, list[str]]:
        """The run's bridge, on a subnet Docker picks from its own pools, and the nodes' fixed
        addresses in it (the lower half; anything else, Prometheus, gets one of the upper).

        Docker hands out fixed addresses only on a network created with its subnet spelled out,
        so a first network finds a free subnet and the real one is created on it; should
        another network take that subnet in between, the next attempt finds another.
        """
        import docker.errors
        from docker.types import IPAMConfig, IPAMPool

        count = self.spec.nodes.count
        for attempt in range(attempts):
            probe = self.client.networks.create(
                f"{self.prefix}-probe", driver="bridge", labels=self.labels
            )
            try:
                probe.reload()
                config = probe.attrs["IPAM"]["Config"][0]
            finally:
                probe.remove()
            subnet = ipaddress.ip_network(config["Subnet"])
            lower, upper = subnet.subnets(prefixlen_diff=1)
            gateway = config.get("Gateway") or str(next(lower.hosts()))
            hosts = (str(host) for host in lower.hosts() if str(host) != gateway)
            addresses = list(itertools.islice(hosts, count))
            if len(addresses) < count:
                raise RunFailed(
                    f"Docker's subnet {subnet} has room for {len(addresses)} fixed addresses, "
                    f"not {count}: give the engine larger default-address-pools"
                )
            pool = IPAMPool(subnet=str(subnet), gateway=gateway, iprange=str(upper))
            try:
                network = self.client.networks.create(
                    self.prefix,
                    driver="bridge",
                    labels=self.labels,
                    ipam=IPAMConfig(pool_configs=[pool]),
                )
            except docker.errors.APIError as error:
                if attempt + 1 == attempts:
                    raise
                log.debug("subnet %s taken meanwhile (%s); again", subnet, error)
                continue
            return network, addresses
        raise AssertionError("unreachable")

    def _create_prometheus(self) -> None:
        image = prometheus_image(self.client)
        if image is None:
            log.warning(
                "no Prometheus image (%s); the run goes on without one",
                " or ".join(PROMETHEUS_IMAGES),
            )
            return
        targets = [f"{node.name}:{METRICS_PORT}" for node in self.nodes]
        self.network.reload()
        gateway = self.network.attrs["IPAM"]["Config"][0]["Gateway"]
        port = free_ports(1)[0]
        self.exporter.serve(port, host=gateway)
        self.prometheus = self.client.containers.create(
            image,
            name=f"{self.prefix}-prometheus",
            labels={**self.labels, NODE_LABEL: "prometheus"},
            network=self.network.name,
            ports={"9090/tcp": ("127.0.0.1", None)},
        )
        config = PROMETHEUS_CONFIG.format(targets=targets, orchestrator=f"{gateway}:{port}")
        self.prometheus.put_archive("/", _tar_of("/etc/prometheus/prometheus.yml", config))

    def prime_page_cache(self) -> None:
        """Imports the node's modules once in a throwaway container (module docstring).

        Only the memory figures depend on it, so a failure is logged and the run goes on.
        """
        container = None
        try:
            container = self.client.containers.create(
                self.image,
                PRIME_COMMAND,
                name=f"{self.prefix}-prime",
                labels={**self.labels, NODE_LABEL: "prime"},
                network_disabled=True,
                healthcheck={"test": ["NONE"]},
            )
            container.start()
            status = container.wait(timeout=PRIME_TIMEOUT).get("StatusCode")
            if status != 0:
                log.warning("priming the page cache exited with %s: %s", status, container.logs())
        except Exception as error:  # the engine's errors, or the wait's timeout
            log.warning("could not prime the page cache (%s); memory figures may differ", error)
        finally:
            if container is not None:
                _quietly(container.remove, force=True)

    def start(self) -> None:
        for node in self.nodes:
            node.container.start()
        for node in self.nodes:
            self._take_address(node)
            self.health[node.name] = Counter()
            self.health_failures[node.name] = Counter()
            self._checks_seen[node.name] = set()
        if self.prometheus is not None:
            self.prometheus.start()
            self.prometheus.reload()
            bound = self.prometheus.attrs["NetworkSettings"]["Ports"]["9090/tcp"][0]
            self.prometheus_url = f"http://127.0.0.1:{bound['HostPort']}"

    def failure_of(self, node: ContainerNode) -> str | None:
        """None while the container runs, or is down by a fault (killed or paused on purpose);
        its health is tallied on the way."""
        if node.name in self.down:
            return None
        try:
            node.container.reload()
        except Exception as error:  # the engine lost it: as good as dead
            return f"container gone ({error})"
        state = node.container.attrs["State"]
        health = state.get("Health") or {}
        self.health.setdefault(node.name, Counter())[health.get("Status", "none")] += 1
        self._tally_failed_checks(node.name, health.get("Log") or [])
        if state["Status"] != "running":
            return (
                f"container {state['Status']} with exit code {state.get('ExitCode')}; see "
                f"{node.data_dir / 'node.log'}"
            )
        return None

    def _tally_failed_checks(self, name: str, checks: list[dict[str, Any]]) -> None:
        """Counts each failed check of Docker's log once, by the first line of its output."""
        seen = self._checks_seen.setdefault(name, set())
        failures = self.health_failures.setdefault(name, Counter())
        for check in checks:
            key = str(check.get("Start"))
            if key in seen:
                continue
            seen.add(key)
            if check.get("ExitCode") != 0:
                output = (check.get("Output") or "").strip().splitlines()
                failures[(output[0] if output else "no output")[:HEALTH_OUTPUT_CHARS]] += 1

    def stop_and_collect(self) -> None:
        """SIGTERM every node (chains closed), then copy logs and data directories out.

        A container still paused (a run that ended inside a pause the fault runner did not get
        to resume) is thawed first, so that it gets the SIGTERM and closes its chain whatever
        the engine does with a frozen container's stop signal.
        """
        for node in self.nodes:
            if self._status(node) == "paused":
                _quietly(node.container.unpause)
                self.down.discard(node.name)
        for node in self.nodes:
            _quietly(node.container.stop, timeout=STOP_GRACE)
        for node in self.nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            logs = _quietly(node.container.logs, stdout=True, stderr=True)
            (node.data_dir / "node.log").write_bytes(logs or b"")
            archive = _quietly(node.container.get_archive, DATA_PATH)
            if archive is not None:
                _extract_into(archive[0], node.data_dir)
        if self.prometheus is not None:
            _quietly(self.prometheus.stop, timeout=5)

    def remove(self) -> None:
        """Containers, network and volumes of this run, whatever state they are in."""
        if self.keep:
            return
        remove_run(self.client, self.run_id)


def remove_run(client: Any, run_id: str) -> None:
    """Everything labelled with the run: also what a crashed orchestrator left behind."""
    selector = {"label": f"{RUN_LABEL}={run_id}"}
    for container in client.containers.list(all=True, filters=selector):
        _quietly(container.remove, force=True, v=True)
    for network in client.networks.list(filters=selector):
        _quietly(network.remove)
    for volume in client.volumes.list(filters=selector):
        _quietly(volume.remove, force=True)


def leftovers(client: Any, run_id: str) -> list[str]:
    """Names of what is still there of a run (empty after a clean end)."""
    selector = {"label": f"{RUN_LABEL}={run_id}"}
    return [
        *(c.name for c in client.containers.list(all=True, filters=selector)),
        *(n.name for n in client.networks.list(filters=selector)),
        *(v.name for v in client.volumes.list(filters=selector)),
    ]


def prometheus_image(client: Any) -> str | None:
    """$DFL_PROMETHEUS_IMAGE, else the first of PROMETHEUS_IMAGES present, else pull the last."""
    import docker.errors

    wanted = os.environ.get(PROMETHEUS_IMAGE_ENV)
    for image in [wanted] if wanted else PROMETHEUS_IMAGES:
        try:
            client.images.get(image)
            return image
        except docker.errors.ImageNotFound:
            continue
    try:
        client.images.pull(wanted or PROMETHEUS_IMAGES[-1])
        return wanted or PROMETHEUS_IMAGES[-1]
    except docker.errors.APIError:
        return None


def connect(image: str) -> Any:
    """A client for a running engine that has `image`, or DockerUnavailable saying what to do."""
    import docker
    import docker.errors

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise DockerUnavailable(
            f"no Docker engine answers ({error}); start one (scripts/docker-engine) or use "
            "--runtime local"
        ) from None
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise DockerUnavailable(
            f"image {image} not found; build it: docker build -t {image} . (offline machines: "
            "scripts/docker-setup)"
        ) from None
    return client


def _extract_into(chunks: Any, target: Path) -> None:
    """A `get_archive` stream of DATA_PATH, unpacked into target (without the top folder)."""
    buffer = io.BytesIO(b"".join(chunks))
    with tarfile.open(fileobj=buffer) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts[1:]
            if not parts or member.issym() or member.islnk():
                continue
            member.name = str(Path(*parts))
            archive.extract(member, target, **SAFE_EXTRACT)


def _quietly(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Teardown goes on past what is already gone."""
    try:
        return call(*args, **kwargs)
    except Exception as error:
        log.debug("%s: %s", getattr(call, "__name__", call), error)
        return None


def run_docker(
    spec: ExperimentSpec,
    out: Path,
    *,
    progress: bool = True,
    keep: bool = False,
    image: str | None = None,
    control: ControlSigner | None = None,
    **options: Any,
) -> DockerRun:
    """Runs the experiment in containers to its end (or Ctrl-C); leaves everything in `out`.
    `options` go to the driver's `drive` (`alongside`: `dfl load`'s Locust process)."""
    import docker.errors

    image = image or os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
    client = connect(image)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.yaml").write_text(spec.to_yaml())
    run = DockerRun(
        spec,
        out,
        image,
        client,
        keep=keep,
        control=control or ControlSigner.generate(),
        ready_timeout=container_ready_timeout(spec.nodes.count),
    )

    try:
        try:
            run.create()
            run.prime_page_cache()
            run.start()
        except docker.errors.APIError as error:
            raise RunFailed(f"Docker refused: {error.explanation or error}") from None
        if progress:
            print(f"run {run.run_id}: {len(run.nodes)} containers on network {run.prefix}")
            if run.prometheus_url:
                print(f"Prometheus: {run.prometheus_url}", flush=True)
        run_experiment(
            run,
            out,
            progress=progress,
            exporter=run.exporter,
            ready_timeout=run.ready_timeout,
            **options,
        )
    finally:
        run.stop_and_collect()
        failures = {name: dict(counts) for name, counts in run.health_failures.items() if counts}
        extra = {"run_id": run.run_id, "image": image, "health_failures": failures}
        finish_container_run(run, out, "docker", {**extra, "tls": run.certificates is not None})
        if keep and progress:
            print(f"kept: containers, network and volumes labelled {RUN_LABEL}={run.run_id}")
    return run
