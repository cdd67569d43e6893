"""The `swarm` runtime: the spec's nodes as Docker Swarm services, driven from the run's network.

This module is the orchestrator's side of the run and runs inside the orchestrator container,
which orchestrator/runtimes/swarm_launch.py starts on the run's overlay network with the
manager's engine socket: the nodes are reached by their names on that network, which only a
member of it can resolve, from any host of the swarm.

One service per node (replicated, one task, restart policy none: a node that died is part of
what the run observes), so that each keeps its name, its volume and its peers; `endpoint_mode:
dnsrr`, because the kernels here have no IPVS for Swarm's virtual IPs, and because a peer must
reach the task itself. Each service has the alias `nodeN` on the run's network, and the name
`tasks.<service>` resolves to its task, which is how Prometheus (a service of its own) finds
every node. A node's configuration and TLS certificates are Swarm configs, its TLS private key
a Swarm secret (held in the managers' encrypted Raft log, mounted owner-only for the node's
user, never written to a volume). Every service runs the image by its ID, so that every host
runs the same bytes; a one-shot global job checks first that every host has that image.

At the end the services are scaled to zero (SIGTERM: chains closed, profiles written), each
node's log is read through the manager (`docker service logs`, from any host) and its data
directory from the stopped task container on this engine; then services, configs, secrets and
volumes are removed, unless `--keep`.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from node.service.config import TlsFiles
from node.service.control import ControlSigner
from orchestrator.certificates import RunAuthority, tls_paths, write_tls_files
from orchestrator.driver import RunFailed, run_experiment
from orchestrator.endpoint import NodeEndpoint
from orchestrator.exporter import OrchestratorMetrics
from orchestrator.faults import PROCESS_KINDS
from orchestrator.runtimes.container_run import finish_container_run
from orchestrator.runtimes.docker import (
    CONFIG_PATH,
    DATA_PATH,
    GRPC_PORT,
    METRICS_PORT,
    NODE_LABEL,
    RUN_LABEL,
    STOP_GRACE,
    _extract_into,
    _quietly,
    prometheus_image,
)
from orchestrator.runtimes.settings import (
    container_ready_timeout,
    difficulty_for,
    experiment_settings,
    peer_names,
)
from orchestrator.spec import ExperimentSpec

log = logging.getLogger(__name__)

EXPORTER_PORT = 9464  # the orchestrator's /metrics, inside its own container
# The certificates (Swarm configs) and the private key (a Swarm secret), as the local and
# docker runtimes lay them out in a data directory (orchestrator/certificates.py tls_paths).
TLS_DIR = "/etc/dfl"
NODE_UID = "10001"  # the image's user (Dockerfile), who alone may read the key
SETTLE_TIMEOUT = 180.0  # seconds for a task to reach a state it stays in
PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: node
    dns_sd_configs:
      - names: {names}
        type: A
        port: {metrics_port}
        refresh_interval: 5s
    relabel_configs:
      - source_labels: [__meta_dns_name]
        regex: "tasks\\\\.{prefix}-(.+)"
        target_label: node
  - job_name: orchestrator
    honor_labels: true
    static_configs:
      - targets: ["{orchestrator}"]
"""
TERMINAL = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}


def memory_bytes(text: str) -> int:
    """Docker's notation (768m, 2g) in bytes: what Swarm's resource limits take."""
    number, unit = re.fullmatch(r"(\d+)([bkmg]?)", text).groups()  # type: ignore[union-attr]
    return int(number) * 1024 ** "bkmg".index(unit or "b")


def health_interval(count: int) -> float:
    """Seconds between a node's health checks: Swarm's DNS lists a task only once it is
    healthy, so the first check (one interval after the start) is when peers and the
    orchestrator can first reach it; the image's 60 s would leave a small run waiting a
    minute. A check costs about 80 ms of CPU, so a large run checks less often: 2.5 s per
    node keeps the checks near 3 % of one core, between 10 s and the image's 60 s."""
    return min(max(2.5 * count, 10.0), 60.0)


@dataclass
class SwarmRun:
    """The services of one run and what became of them."""

    spec: ExperimentSpec
    out: Path
    image: str
    client: Any  # docker.DockerClient of a manager
    network: str  # the run's overlay network, made by the launcher
    run_id: str
    orchestrator_host: str  # this container's name on the network
    keep: bool = False
    tls: bool = True
    nodes: list[NodeEndpoint] = field(default_factory=list)
    services: dict[str, Any] = field(default_factory=dict)
    prometheus: Any = None
    started_at: float = 0.0
    elapsed: float | None = None
    tolerate_exits: bool = False
    pow_difficulty: float | None = None
    exporter: OrchestratorMetrics = field(default_factory=OrchestratorMetrics)
    control: ControlSigner = field(default_factory=ControlSigner.generate)
    down: set[str] = field(default_factory=set)
    health: dict[str, Counter[str]] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)  # testbed node -> Swarm node hostname
    client_tls: TlsFiles | None = None  # the orchestrator's own certificate
    ready_timeout: float = 60.0
    _image_id: str = ""
    _private: tempfile.TemporaryDirectory[str] | None = None

    @property
    def prefix(self) -> str:
        return f"dfl-{self.spec.name}-{self.run_id}"

    @property
    def labels(self) -> dict[str, str]:
        return {RUN_LABEL: self.run_id, "dfl-testbed.experiment": self.spec.name}

    def peer_address(self, index: int) -> str:
        return f"node{index}:{GRPC_PORT}"

    def peer_names(self) -> dict[str, list[str]]:
        return peer_names(self.spec)

    # --- before anything is created ------------------------------------------------------------

    def check_spec(self) -> None:
        kinds = sorted({fault.kind for fault in self.spec.faults if fault.kind in PROCESS_KINDS})
        if kinds:
            raise RunFailed(
                f"faults: the swarm runtime does not crash or pause nodes yet ({', '.join(kinds)}"
                "); run this spec with --runtime docker, or keep to latency, loss and partition"
            )

    def check_images(self) -> None:
        """Every host that may run a node has the image, by ID; RunFailed names those without.

        A global job (one task per host, `true`) on the image's ID: a host without that image
        rejects its task, since there is no registry to pull an ID from.
        """
        from docker.types import ServiceMode

        self._image_id = self.client.images.get(self.image).id
        job = self.client.services.create(
            self._image_id,
            ["true"],
            name=f"{self.prefix}-image-check",
            labels=self.labels,
            mode=ServiceMode("global-job"),
            healthcheck={"test": ["NONE"]},
        )
        try:
            tasks = self._settled_tasks(job, expected=len(self.client.nodes.list()))
            missing = sorted(
                self._hostname(task["NodeID"])
                for task in tasks
                if task["Status"]["State"] != "complete"
            )
        finally:
            _quietly(job.remove)
        if missing:
            raise RunFailed(
                f"image {self.image} ({self._image_id[:19]}) is missing on {', '.join(missing)}: "
                f"push it to a registry every host reaches, or copy it: docker save {self.image} "
                f"| ssh HOST docker load (README, 'Swarm: more than one machine')"
            )

    def _settled_tasks(self, service: Any, expected: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            tasks = service.tasks()
            if len(tasks) >= expected and all(t["Status"]["State"] in TERMINAL for t in tasks):
                return tasks
            time.sleep(1.0)
        raise RunFailed(f"{service.name}: its tasks did not finish in {SETTLE_TIMEOUT:.0f} s")

    def _hostname(self, node_id: str) -> str:
        try:
            return self.client.nodes.get(node_id).attrs["Description"]["Hostname"]
        except Exception:  # a node that left meanwhile
            return node_id[:12]

    # --- creating ------------------------------------------------------------------------------

    def create(self) -> None:
        """Configs, secrets and a service per node, and Prometheus; they start at once."""
        spec = self.spec
        if spec.blade is not None and self.pow_difficulty is None:
            self.pow_difficulty = difficulty_for(spec)
        authority = None
        if self.tls:
            authority = RunAuthority(self.prefix)
            self._private = tempfile.TemporaryDirectory(prefix="dfl-orchestrator-tls-")
            self.client_tls = write_tls_files(Path(self._private.name), authority.orchestrator())
        peers = self.peer_names()
        for index in range(spec.nodes.count):
            name = f"node{index}"
            node = NodeEndpoint(
                index=index, name=name, host=name, port=GRPC_PORT, metrics_port=METRICS_PORT
            )
            self.nodes.append(node)
            self.services[name] = self._create_node(node, peers[name], authority)
        self._create_prometheus()

    def _create_node(
        self, node: NodeEndpoint, peers: list[str], authority: RunAuthority | None
    ) -> Any:
        from docker.types import (
            ConfigReference,
            EndpointSpec,
            Mount,
            NetworkAttachmentConfig,
            Resources,
            RestartPolicy,
            SecretReference,
        )

        service_name = f"{self.prefix}-{node.name}"
        labels = {**self.labels, NODE_LABEL: node.name}
        config: dict[str, Any] = {
            "name": node.name,
            "data_dir": DATA_PATH,
            "listen": "0.0.0.0",
            "port": GRPC_PORT,
            "advertise": self.peer_address(node.index),
            "metrics_port": METRICS_PORT,
            "peers": [self.peer_address(int(peer[4:])) for peer in peers],
            "control_key": [self.control.public_hex],
            **experiment_settings(self.spec, node.index, self.pow_difficulty),
        }
        configs, secrets = [], []
        if authority is not None:
            files = authority.issue(node.name, dns_names=[service_name])
            paths = tls_paths(TLS_DIR)
            config["tls"] = {"ca": str(paths.ca), "cert": str(paths.cert), "key": str(paths.key)}
            for path, data in ((paths.ca, files.ca_pem), (paths.cert, files.cert_pem)):
                made = self._config(f"{service_name}-{path.name}", data, labels)
                configs.append(ConfigReference(made.id, made.name, str(path)))
            secret = self.client.secrets.create(
                name=f"{service_name}-key", data=files.key_pem, labels=labels
            )
            secrets.append(
                SecretReference(
                    secret.id,
                    f"{service_name}-key",
                    filename=str(paths.key),
                    uid=NODE_UID,
                    gid=NODE_UID,
                    mode=0o400,
                )
            )
        made = self._config(f"{service_name}-config", yaml.safe_dump(config).encode(), labels)
        configs.append(ConfigReference(made.id, made.name, CONFIG_PATH))
        resources = self.spec.resources
        constraints = self.spec.placement.constraints_of(node.index) if self.spec.placement else []
        return self.client.services.create(
            self._image_id,
            ["python", "-m", "node", "--config", CONFIG_PATH],
            name=service_name,
            hostname=node.name,
            labels=labels,
            container_labels=labels,
            networks=[NetworkAttachmentConfig(self.network, aliases=[node.name])],
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            mounts=[
                Mount(DATA_PATH, f"{service_name}-data", type="volume", labels=labels),
            ],
            configs=configs,
            secrets=secrets,
            resources=Resources(
                cpu_limit=int(resources.cpus * 1e9) if resources.cpus else None,
                mem_limit=memory_bytes(resources.memory) if resources.memory else None,
            ),
            restart_policy=RestartPolicy(condition="none"),
            constraints=constraints,
            stop_grace_period=int(STOP_GRACE * 1e9),
            stop_signal="SIGTERM",
            healthcheck={
                "start_period": int(self.ready_timeout * 1e9),
                "interval": int(health_interval(self.spec.nodes.count) * 1e9),
            },
        )

    def _config(self, name: str, data: bytes, labels: dict[str, str]) -> Any:
        return self.client.configs.create(name=name, data=data, labels=labels)

    def _create_prometheus(self) -> None:
        from docker.types import ConfigReference, EndpointSpec, NetworkAttachmentConfig

        image = prometheus_image(self.client)
        if image is None:
            log.warning("no Prometheus image; the run goes on without one")
            return
        self.exporter.serve(EXPORTER_PORT)
        names = [f"tasks.{self.prefix}-{node.name}" for node in self.nodes]
        text = PROMETHEUS_CONFIG.format(
            names=json.dumps(names),
            metrics_port=METRICS_PORT,
            prefix=re.escape(self.prefix).replace("\\", "\\\\"),
            orchestrator=f"{self.orchestrator_host}:{EXPORTER_PORT}",
        )
        labels = {**self.labels, NODE_LABEL: "prometheus"}
        made = self._config(f"{self.prefix}-prometheus", text.encode(), labels)
        self.prometheus = self.client.services.create(
            image,
            name=f"{self.prefix}-prometheus",
            labels=labels,
            container_labels=labels,
            networks=[NetworkAttachmentConfig(self.network, aliases=["prometheus"])],
            endpoint_spec=EndpointSpec(mode="dnsrr"),
            configs=[ConfigReference(made.id, made.name, "/etc/prometheus/prometheus.yml")],
            # Beside the orchestrator: its image need not be on every host, only the node's.
            constraints=["node.role==manager"],
        )

    # --- while it runs -------------------------------------------------------------------------

    def _task(self, name: str) -> dict[str, Any] | None:
        """The node's newest task (a service of one replica has one, unless it was rejected)."""
        tasks = self.services[name].tasks()
        return max(tasks, key=lambda task: task["CreatedAt"]) if tasks else None

    def failure_of(self, node: NodeEndpoint) -> str | None:
        """None while the node's task runs; its health (where this engine sees the container)
        and its host are noted on the way."""
        task = self._task(node.name)
        if task is None:
            return "no task: Swarm could not place it (see docker service ps)"
        status = task["Status"]
        self.hosts.setdefault(node.name, self._hostname(task["NodeID"]))
        container_id = (status.get("ContainerStatus") or {}).get("ContainerID")
        if container_id:
            health = self._container_health(container_id)
            if health is not None:
                self.health.setdefault(node.name, Counter())[health] += 1
        if status["State"] in TERMINAL:
            return f"task {status['State']}: {status.get('Err') or status.get('Message')}"
        return None

    def _container_health(self, container_id: str) -> str | None:
        try:
            attrs = self.client.api.inspect_container(container_id)
        except Exception:  # on another host: Swarm's task state is all there is
            return None
        return (attrs["State"].get("Health") or {}).get("Status", "none")

    def prometheus_targets(self) -> dict[str, str]:
        """What Prometheus found through DNS: each node's scrape health (up, down, unknown)."""
        if self.prometheus is None:
            return {}
        url = "http://prometheus:9090/api/v1/targets"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                targets = json.load(answer)["data"]["activeTargets"]
        except (OSError, ValueError, KeyError) as error:
            log.warning("could not ask Prometheus for its targets: %s", error)
            return {}
        return {
            target["labels"].get("node", "?"): target["health"]
            for target in targets
            if target["labels"].get("job") == "node"
        }

    # --- at the end ----------------------------------------------------------------------------

    def stop_and_collect(self) -> None:
        """Every node stopped (SIGTERM), its log and data directory copied into the run.

        A task container on this engine is stopped as a container: its task then ends and,
        with no restart policy, stays with its container, whose data directory can be read.
        Scaling to zero would remove the task and its container with it; that is only for
        nodes on other hosts, whose containers this engine cannot reach anyway.
        """
        remote = []
        for node in self.nodes:
            container_id = self._container_of(node.name)
            if (
                container_id is None
                or _quietly(self.client.api.inspect_container, container_id) is None
            ):
                remote.append(node.name)
            else:
                _quietly(self.client.api.stop, container_id, timeout=STOP_GRACE)
        for name in remote:
            _quietly(self.services[name].scale, 0)
        deadline = time.monotonic() + STOP_GRACE + 30
        for name in remote:
            while time.monotonic() < deadline:
                tasks = _quietly(self.services[name].tasks) or []
                if all(task["Status"]["State"] in TERMINAL for task in tasks):
                    break
                time.sleep(1.0)
        for node in self.nodes:
            self._collect(node)
        if self.prometheus is not None:
            _quietly(self.prometheus.scale, 0)

    def _container_of(self, name: str) -> str | None:
        task = _quietly(self._task, name)
        return (
            None
            if task is None
            else (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
        )

    def _collect(self, node: NodeEndpoint) -> None:
        target = self.out / "nodes" / node.name
        target.mkdir(parents=True, exist_ok=True)
        service = self.services[node.name]
        logs = _quietly(service.logs, stdout=True, stderr=True, timestamps=False)
        (target / "node.log").write_bytes(b"".join(logs) if logs is not None else b"")
        container_id = self._container_of(node.name)
        archive = container_id and _quietly(self.client.api.get_archive, container_id, DATA_PATH)
        if archive:
            _extract_into(archive[0], target)
            return
        log.warning(
            "%s ran on %s, whose engine this orchestrator cannot read: its chain and profile "
            "stay in volume %s-data there",
            node.name,
            self.hosts.get(node.name, "another host"),
            service.name,
        )

    def remove(self) -> None:
        if self._private is not None:
            self._private.cleanup()
        if not self.keep:
            remove_services(self.client, self.run_id)


def remove_services(client: Any, run_id: str) -> None:
    """Services, configs, secrets and (on this engine) volumes labelled with the run."""
    selector = {"label": f"{RUN_LABEL}={run_id}"}
    for service in _quietly(client.services.list, filters=selector) or []:
        _quietly(service.remove)
    # A removed service's containers go a moment later; their volumes only after them.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not client.containers.list(all=True, filters=selector):
            break
        time.sleep(1.0)
    for kind in (client.secrets, client.configs):
        for item in _quietly(kind.list, filters=selector) or []:
            _quietly(item.remove)
    for volume in client.volumes.list(filters=selector):
        _quietly(volume.remove, force=True)


def leftovers(client: Any, run_id: str) -> list[str]:
    """What is still there of a run on this engine (empty after a clean end)."""
    selector = {"label": f"{RUN_LABEL}={run_id}"}
    kinds = (client.services, client.configs, client.secrets, client.networks, client.volumes)
    found = [item.name for kind in kinds for item in kind.list(filters=selector)]
    return found + [c.name for c in client.containers.list(all=True, filters=selector)]


def run_swarm_inside(
    spec: ExperimentSpec,
    out: Path,
    *,
    network: str,
    run_id: str,
    orchestrator_host: str,
    image: str,
    keep: bool = False,
    progress: bool = True,
    control: ControlSigner | None = None,
    **options: Any,
) -> SwarmRun:
    """The orchestrator's part, in its container on the run's network (module docstring)."""
    import docker
    import docker.errors

    client = docker.from_env()
    run = SwarmRun(
        spec,
        out,
        image,
        client,
        network,
        run_id,
        orchestrator_host,
        keep=keep,
        tls=spec.transport.tls is not False,  # on unless the spec says tls: false
        control=control or ControlSigner.generate(),
        ready_timeout=container_ready_timeout(spec.nodes.count),
    )
    (out / "spec.yaml").write_text(spec.to_yaml())
    try:
        run.check_spec()
        try:
            run.check_images()
            run.create()
        except docker.errors.APIError as error:
            raise RunFailed(f"Swarm refused: {error.explanation or error}") from None
        if progress:
            print(f"run {run_id}: {len(run.nodes)} services on network {network}", flush=True)
        run_experiment(
            run,
            out,
            progress=progress,
            exporter=run.exporter,
            ready_timeout=run.ready_timeout,
            **options,
        )
    finally:
        targets = run.prometheus_targets()
        for node in run.nodes:
            _quietly(run.failure_of, node)  # the hosts of nodes that never got sampled
        run.stop_and_collect()
        extra: dict[str, Any] = {
            "run_id": run_id,
            "image": image,
            "image_id": run._image_id,
            "tls": run.tls,
            "hosts": run.hosts,
            "prometheus_targets": targets,
        }
        finish_container_run(run, out, "swarm", extra)
    return run
