"""The orchestrator's side of a load test: a Locust process beside a running experiment.

`dfl load` hands `LoadTest.alongside` to the driver (orchestrator/driver.py `drive`), which
starts it once every node answers and awaits it before the nodes stop. It then

1. asks each node for its genesis and model size, writes the plan (orchestrator/load/plan.py),
   a file of training samples for the inject task and, for a run's own key, the control key
   (owner-only) into DIR/load/;
2. scrapes every node's /metrics (orchestrator/load/scrape.py) once its ML queue is empty, so
   that every model it took by then has been answered;
3. runs `locust` headless on orchestrator/load/locustfile.py in a process of its own (its
   gevent patching must not meet this process's asyncio) until its run time is over or the
   run ends (SIGTERM: Locust then stops its users and exits). The locustfile writes the final
   DIR/load_stats.csv and DIR/load_failures.csv as Locust quits; Locust's own `--csv` files
   go to DIR/load/locust_*.csv, whose history becomes DIR/load_stats_history.csv;
4. scrapes the nodes again, once their ML queues are empty, and writes both scrapes with the
   load's settings into DIR/load.json: the counters' gains are what the load did.

While Locust runs, the run's orchestrator /metrics (where there is one: docker, a compose
stack) exports its requests (orchestrator/load/live.py). In the step mode Locust also loads
orchestrator/load/stepshape.py, each stage's figures are printed as its line reaches
DIR/load_steps.jsonl, and the end of the stages ends the run.

The Locust process stops when this one dies (it asks for Linux's PR_SET_PDEATHSIG itself), and
is killed if it outlives the run by more than STOP_GRACE, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
import numpy as np

from node.service.control import KEY_FILE, ControlSigner
from node.service.peers import CHANNEL_OPTIONS
from orchestrator.datasets import load_dataset
from orchestrator.endpoint import NodeEndpoint
from orchestrator.load.live import LIVE_FILE
from orchestrator.load.plan import PLAN_FILE, SAMPLES_FILE, LoadPlan, PlanNode
from orchestrator.load.scrape import scrape, settled
from orchestrator.load.steps import StepPlan, read_stages
from orchestrator.report.schema import (
    LOAD_CSV_PREFIX,
    LOAD_DIR,
    LOAD_FAILURES_FILE,
    LOAD_FILE,
    LOAD_HISTORY_FILE,
    LOAD_STATS_FILE,
)
from proto.dfl.v1 import node_pb2, node_pb2_grpc

if TYPE_CHECKING:
    from orchestrator.driver import Fleet
    from orchestrator.exporter import OrchestratorMetrics

log = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
STEP_SHAPE = Path(__file__).with_name("stepshape.py")
LOCUST_LOG = "locust.log"
LOCUST_CSV_PREFIX = "locust"  # Locust's own --csv files, in DIR/load/
SAMPLE_COUNT = 2048  # training samples the inject task draws its batches from
LOCUST_NICENESS = 10
STOP_GRACE = 20.0  # seconds Locust has to write its files after SIGTERM
SETTLE_TIMEOUT = 15.0  # how long the end scrape waits for empty ML queues
SCRAPE_EVERY = 0.25


@dataclass
class LoadTest:
    """A load test's settings, and what became of its Locust process."""

    out: Path
    users: int
    spawn_rate: float
    weights: Mapping[str, int]
    wait_seconds: float = 0.0
    user_rate: float = 0.0  # tasks per second per user; 0: as fast as --wait lets them
    control_key: Path | None = None  # the key file the nodes obey; None: save the run's own
    step: StepPlan | None = None  # the step mode's stages; None: --users for the whole run
    show_progress: bool = True  # print each stage as it ends
    niceness: int = LOCUST_NICENESS  # Locust's, above ours: the nodes' CPU comes first
    exit_code: int | None = None  # Locust's, once it has ended
    problem: str | None = None  # why there are no load figures, when there are none
    figures: dict[str, Any] = field(default_factory=dict)  # what load.json holds

    async def alongside(
        self, fleet: Fleet, ended: asyncio.Event, exporter: OrchestratorMetrics | None = None
    ) -> bool:
        """The driver's hook: the whole load test, from nodes that answer to the end scrape.
        True when its end is to end the run (the step mode's last stage)."""
        directory = self.out / LOAD_DIR
        directory.mkdir(parents=True, exist_ok=True)
        if exporter is not None:
            exporter.watch_load(directory / LIVE_FILE)
        process: subprocess.Popen[bytes] | None = None
        started = fleet.started_at or time.time()
        loop = asyncio.get_running_loop()
        try:
            plan = await self._plan(fleet, directory)
            before = await _settled_scrape(fleet.nodes, loop, started)
            log_file = (directory / LOCUST_LOG).open("wb")
            with log_file:
                begun = time.time()
                run_time = max(1, round(fleet.spec.duration_seconds - (begun - started)))
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                own = resource.getrusage(resource.RUSAGE_SELF)
                process = _start_locust(self._command(plan, run_time), log_file)
                follow = _StageFollower(self.step, self.show_progress)
                self.exit_code = await _until_done(process, ended, loop, follow)
                follow()
                finished = time.time()
                locust_cpu = _cpu_seconds(resource.getrusage(resource.RUSAGE_CHILDREN), children)
                orchestrator_cpu = _cpu_seconds(resource.getrusage(resource.RUSAGE_SELF), own)
            self._collect_csv(directory)
            after = await _settled_scrape(fleet.nodes, loop, started)
            # The driver injects until the run ends (its elapsed is set then): if that was
            # before a node's end scrape, the node's samples stopped coming there.
            run_end = fleet.elapsed if ended.is_set() else None
            self.figures = {
                "users": self.users,
                "spawn_rate": self.spawn_rate,
                "weights": dict(self.weights),
                "wait_seconds": self.wait_seconds,
                "user_rate": self.user_rate,
                "run_started_at": started,
                "started_s": begun - started,
                "ended_s": finished - started,
                "locust_cpu_seconds": locust_cpu,
                # This process's (injection, test-set evaluation, scrapes) over the same span.
                "orchestrator_cpu_seconds": orchestrator_cpu,
                "machine_cores": os.cpu_count(),
                "locust_exit_code": self.exit_code,
                "locust_niceness": self.niceness,
                "step": asdict(self.step) if self.step is not None else None,
                "batch_size": LoadPlan.read(plan).batch_size,
                "nodes": {
                    node.name: {
                        "injection_rate": fleet.spec.injection_rate_of(node.index),
                        "before": before[node.name].figures if node.name in before else None,
                        "after": after[node.name].figures if node.name in after else None,
                        "settled": node.name in after and after[node.name].settled,
                        "before_s": before[node.name].at if node.name in before else None,
                        "after_s": after[node.name].at if node.name in after else None,
                        "injection_ended_s": run_end,
                    }
                    for node in fleet.nodes
                },
            }
            if self.exit_code not in (0, None):
                self.problem = f"Locust exited with {self.exit_code}; see {LOAD_DIR}/{LOCUST_LOG}"
                self.figures["problem"] = self.problem
            (self.out / LOAD_FILE).write_text(json.dumps(self.figures, indent=2) + "\n")
        except (grpc.aio.AioRpcError, OSError) as error:
            self.problem = f"the load test failed: {error}"
            log.error("%s", self.problem)
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        return self.step is not None

    async def _plan(self, fleet: Fleet, directory: Path) -> Path:
        """The plan file, from what the nodes say of themselves and the run's dataset."""
        nodes = []
        for node in fleet.nodes:
            async with grpc.aio.insecure_channel(node.target, options=CHANNEL_OPTIONS) as channel:
                stub = node_pb2_grpc.NodeStub(channel)
                status = await stub.GetStatus(node_pb2.StatusRequest(), timeout=10.0)
                model = await stub.GetModel(
                    node_pb2.ModelRequest(),
                    timeout=30.0,
                    metadata=fleet.control.metadata("GetModel", status.address),
                )
            nodes.append(
                PlanNode(
                    name=node.name,
                    target=node.target,
                    address=status.address.hex(),
                    genesis=status.genesis_digest.hex(),
                    model_bytes=len(model.weights),
                )
            )
        samples = directory / SAMPLES_FILE
        await asyncio.get_running_loop().run_in_executor(None, _write_samples, fleet.spec, samples)
        plan = LoadPlan(
            nodes=tuple(nodes),
            weights=dict(self.weights),
            control_key=str(self._key_file(fleet.control, directory).resolve()),
            seed=fleet.spec.seed,
            samples=str(samples.resolve()),
            csv_prefix=str((self.out / LOAD_CSV_PREFIX).resolve()),
            parent_pid=os.getpid(),
            niceness=self.niceness,
            wait_seconds=self.wait_seconds,
            user_rate=self.user_rate,
            live_file=str((directory / LIVE_FILE).resolve()),
            step=asdict(self.step) if self.step is not None else None,
        )
        return plan.write(directory / PLAN_FILE)

    def _key_file(self, control: ControlSigner, directory: Path) -> Path:
        """The key the Locust process signs with: the one given, or the run's own saved
        (owner-only) beside the plan, as a run keeps its key."""
        if self.control_key is not None:
            return self.control_key
        path = directory / KEY_FILE
        return path if path.exists() else control.save(directory)

    def _collect_csv(self, directory: Path) -> None:
        """Locust's history file into the run directory; its statistics and failures too when
        the locustfile did not write the final ones (a Locust that was killed)."""
        for name in (LOAD_HISTORY_FILE, LOAD_STATS_FILE, LOAD_FAILURES_FILE):
            written = directory / name.replace(LOAD_CSV_PREFIX, LOCUST_CSV_PREFIX, 1)
            target = self.out / name
            if written.is_file() and (name == LOAD_HISTORY_FILE or not target.is_file()):
                if name != LOAD_HISTORY_FILE:
                    log.warning("Locust wrote no final %s: its last periodic one is used", name)
                shutil.copyfile(written, target)

    def _command(self, plan: Path, run_time: int) -> list[str]:
        """Locust's command line; in the step mode the shape sets the users (--run-time still
        caps the test at the run's end)."""
        files = str(LOCUSTFILE) if self.step is None else f"{LOCUSTFILE},{STEP_SHAPE}"
        users = ["--users", str(self.users)] if self.step is None else []
        return [
            sys.executable,
            "-m",
            "locust",
            "--locustfile",
            files,
            "--headless",
            "--dfl-plan",
            str(plan),
            *users,
            "--spawn-rate",
            f"{self.spawn_rate:g}",
            "--run-time",
            f"{run_time}s",
            "--csv",
            str(plan.parent / LOCUST_CSV_PREFIX),
            "--csv-full-history",
            "--only-summary",
            "--stop-timeout",
            "5",
            "--exit-code-on-error",
            "0",  # failures are figures here, not a reason to fail
            "--loglevel",
            "WARNING",
        ]


def _write_samples(spec: Any, path: Path) -> None:
    """SAMPLE_COUNT training samples, drawn uniformly with the experiment's seed."""
    dataset = load_dataset(spec.dataset)
    rng = np.random.default_rng([spec.seed, 0x10AD])
    picks = rng.choice(len(dataset.train_labels), size=SAMPLE_COUNT, replace=False)
    np.savez(path, images=dataset.train_images[picks], labels=dataset.train_labels[picks])


def _cpu_seconds(after: resource.struct_rusage, before: resource.struct_rusage) -> float:
    """User + system CPU of the children reaped between two getrusage(RUSAGE_CHILDREN) calls:
    Locust's own, as no node process is reaped while it runs (they stop after it)."""
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _start_locust(command: list[str], log_file: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        # Ctrl-C reaches the orchestrator, which stops Locust itself. No preexec_fn: a fork
        # while gRPC runs here makes gRPC log that it skipped its fork handlers; the Locust
        # process asks for its own death signal instead (locustfile.py, the plan's parent_pid).
        start_new_session=True,
    )


class _StageFollower:
    """Prints each stage of the step mode once its line is in DIR/load_steps.jsonl."""

    def __init__(self, step: StepPlan | None, enabled: bool) -> None:
        self.step = step if enabled else None
        self.shown = 0

    def __call__(self) -> None:
        if self.step is None:
            return
        stages = read_stages(Path(self.step.steps_file))
        for stage in stages[self.shown :]:
            p99 = "n/a" if stage.p99_ms is None else f"{stage.p99_ms:.0f} ms"
            print(
                f"  stage {stage.stage}: {stage.users} users, {stage.throughput:.1f} req/s of "
                f"{self.step.judged} ({stage.failure_ratio:.1%} failed), p50 "
                f"{stage.p50_ms or 0:.0f} ms, p99 {p99}"
                + (f"; stops: {stage.over}" if stage.over else ""),
                flush=True,
            )
        self.shown = max(self.shown, len(stages))


async def _until_done(
    process: subprocess.Popen[bytes],
    ended: asyncio.Event,
    loop: asyncio.AbstractEventLoop,
    on_poll: Callable[[], None] = lambda: None,
) -> int:
    """Locust's exit code, once its run time is over or, the run having ended, it was told to
    stop (and killed if it does not within STOP_GRACE)."""
    while process.poll() is None and not ended.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), timeout=0.5)
        on_poll()
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            await loop.run_in_executor(None, lambda: process.wait(timeout=STOP_GRACE))
        except subprocess.TimeoutExpired:
            log.warning("Locust did not stop within %.0f s of SIGTERM: killed", STOP_GRACE)
            process.kill()
    return await loop.run_in_executor(None, process.wait)


async def _scrape_one(
    node: NodeEndpoint, loop: asyncio.AbstractEventLoop
) -> dict[str, float] | None:
    url = node.metrics_url
    if url is None:
        return None
    try:
        return await loop.run_in_executor(None, scrape, url)
    except OSError as error:
        log.warning("could not scrape %s: %s", node.name, error)
        return None


class Scrape(NamedTuple):
    """One node's figures, whether its ML queue was empty, and when (run seconds)."""

    figures: dict[str, float]
    settled: bool
    at: float


async def _settled_scrape(
    nodes: Any, loop: asyncio.AbstractEventLoop, started: float
) -> dict[str, Scrape]:
    """Each node's figures at its first scrape with an empty ML queue (or its last within
    SETTLE_TIMEOUT, marked not settled)."""
    found: dict[str, Scrape] = {}
    deadline = loop.time() + SETTLE_TIMEOUT
    for node in nodes:
        while True:
            at = time.time() - started
            figures = await _scrape_one(node, loop)
            if figures is None:
                break
            found[node.name] = Scrape(figures, settled(figures), at)
            if settled(figures) or loop.time() > deadline:
                break
            await asyncio.sleep(SCRAPE_EVERY)
    return found
