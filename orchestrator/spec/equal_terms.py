"""One experiment under another protocol, everything else equal: what `dfl compare SPEC
--protocols ...` runs.

A protocol comparison is only worth reading when the protocols are the one thing that differs.
`under_protocol` keeps every field that is not a protocol's own: model, dataset, partition
(`nodes.distribution` and the experiment seed, so every node draws from the same seeded
streams, node/seeds.py), node count, behaviours, injection rates, duration, evaluation,
resources, transport, identity and faults. It changes only what a protocol must have:

- `protocol` itself;
- the topology: DFL keeps the spec's graph; BLADE-FL broadcasts to every client (full mesh);
  FedAvg is a server and its clients (star, centre node 0);
- the protocol's own section: a section of another protocol is removed (validation refuses it),
  one the spec has is kept as written, and one it lacks is derived by the rule below. BLADE-FL's
  lazy clients (`blade.lazy_clients`) would leave with its section, so they are written out as
  `nodes.behaviours` first: every node keeps the behaviour in effect.

The rule: **the same local training per node.** Every protocol gets the DFL node's batch size
and the same number of local SGD steps over the run. A DFL node takes one step per
`dfl.batch_size` newly arrived samples, so over the run it takes

    S = duration x injection_rate / batch_size            (local, docker: real seconds)
    S = duration / mean(sim.training_interval)            (sim: one batch per 8-12 ticks)

steps. A round-based protocol (BLADE-FL, FedAvg) instead trains for tau local epochs per round
over a local dataset collected once, early in the run. Its dataset holds E batches (E = the
largest divisor of S from 4 to 8, so that S splits into whole epochs; 8 when S has none: 512
samples at batch 64, the BLADE-FL paper's |D_i|, collected in 8 s at 64 samples/s), so one epoch
is E steps and the run's steps are K x tau x E. (K, tau) is the pair closest to S whose time
budget fits the run: BLADE-FL's eq. 4, t_sum = K (tau alpha + beta), must fit the duration less
the time the dataset takes to arrive, with alpha = 1 s per epoch and beta = 2 s per block (the
smoke-blade values); among pairs equally close, the most rounds, because a DFL node aggregates
every few steps and fewer rounds would hand it a head start in mixing. BLADE-FL and FedAvg get
the same K, tau, |D| and batch: FedAvg is then BLADE-FL without the chain. When the spec has a
section for one round-based protocol, the other copies its K, tau, |D| and batch rather than
deriving its own, so the two stay on one schedule.

Why steps and not time or samples: equal wall time would let the faster protocol train more and
make accuracy a statement about speed; equal samples would give a round-based protocol, which
reuses its dataset every epoch, a fraction of DFL's gradient steps. Equal steps at equal batch
size is the same ML work per node, so the differences left in accuracy, CPU, bytes and time are
the protocols': how models mix, and what the ledger costs.

Every derived spec goes through the spec's own validation (`with_overrides`), so a spec that
cannot run under a protocol is a SpecError naming the field, never a half-made run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.spec.errors import Problem, SpecError
from orchestrator.spec.experiment import PROTOCOL_ALIASES, PROTOCOLS, ExperimentSpec
from orchestrator.spec.overrides import with_overrides

RUNTIMES = ("sim", "local", "docker")
ROUND_BASED = ("blade-fl", "fedavg")
# Each protocol's own section; only PROTOCOLS that exist in this tree are used.
SECTIONS = {"dfl": "dfl", "blade-fl": "blade", "fedavg": "fedavg"}
TOPOLOGY = {"blade-fl": {"kind": "full"}, "fedavg": {"kind": "star"}}
TOPOLOGY_WHY = {
    "dfl": "the spec's own graph",
    "blade-fl": "full mesh: a BLADE-FL client broadcasts its model to every client",
    "fedavg": "star with centre node 0: FedAvg's server is node 0",
}
ALPHA_S = 1.0  # time per local epoch in BLADE-FL's budget (smoke-blade)
BETA_S = 2.0  # mining time per block (BladeSection's default)
EPOCH_BATCHES = (8, 7, 6, 5, 4)  # E, tried from the largest
EQUAL_FIELDS = (
    "model",
    "dataset",
    "seed",
    "identity",
    "duration",
    "nodes",  # count, distribution, injection rates
    "behaviours",  # each node's behaviour in effect, BLADE-FL's lazy clients included
    "evaluation",
    "resources",
    "transport",
    "faults",
)


class UnknownProtocol(ValueError):
    """A protocol name that is not one of PROTOCOLS (nor an alias of one)."""


def known_protocols() -> tuple[str, ...]:
    """The protocols this tree's spec accepts (a protocol added to the spec appears here)."""
    return tuple(PROTOCOLS)


def canonical_protocol(name: str) -> str:
    """`name` (or an alias, `blade`) as the spec writes it; UnknownProtocol lists the known."""
    protocol = PROTOCOL_ALIASES.get(name.strip(), name.strip())
    if protocol not in PROTOCOLS:
        raise UnknownProtocol(
            f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}"
            + (f" (aliases: {', '.join(sorted(PROTOCOL_ALIASES))})" if PROTOCOL_ALIASES else "")
        )
    return protocol


@dataclass(frozen=True)
class Schedule:
    """A round-based protocol's local training: K rounds of tau epochs over |D| samples."""

    rounds: int  # K
    local_epochs: int  # tau
    dataset_size: int  # |D|
    batch_size: int
    steps_per_epoch: int  # E = |D| / batch size

    @property
    def steps(self) -> int:
        """Local SGD steps per node over the run: K tau E."""
        return self.rounds * self.local_epochs * self.steps_per_epoch

    def seconds(self, alpha: float = ALPHA_S, beta: float = BETA_S) -> float:
        """BLADE-FL's eq. 4, t_sum = K (tau alpha + beta)."""
        return self.rounds * (self.local_epochs * alpha + beta)


@dataclass(frozen=True)
class Terms:
    """What the derivation did for one protocol: the reader's side of `under_protocol`."""

    protocol: str
    runtime: str
    dfl_steps: int  # S: a DFL node's local SGD steps over the run
    schedule: Schedule | None  # for a round-based protocol
    steps: int  # this protocol's local SGD steps per node
    section: str  # the protocol's section name
    derived: bool  # True: the section was made by the rule; False: as the spec wrote it
    source: str  # where the section came from, in words
    topology: str


def dfl_steps(spec: ExperimentSpec, runtime: str) -> int:
    """S: the local SGD steps a DFL node takes over the run (see the module docstring)."""
    if runtime == "sim":
        low, high = spec.sim.training_interval
        return max(1, math.floor(spec.duration_seconds / ((low + high) / 2)))
    return max(
        1, math.floor(spec.duration_seconds * spec.nodes.injection_rate / spec.dfl.batch_size)
    )


def derive_schedule(
    spec: ExperimentSpec, runtime: str, source: str = "the equal-terms rule"
) -> Schedule:
    """The round-based schedule with S steps at the DFL batch size that fits the duration."""
    steps, batch = dfl_steps(spec, runtime), spec.dfl.batch_size
    per_epoch = next((e for e in EPOCH_BATCHES if steps % e == 0), min(EPOCH_BATCHES[0], steps))
    size = per_epoch * batch
    # The sim hands a client its whole dataset at time 0; elsewhere it arrives at the rate.
    collecting = 0.0 if runtime == "sim" else size / spec.nodes.injection_rate
    budget = spec.duration_seconds - collecting
    best: tuple[tuple[int, int], Schedule] | None = None
    for rounds in range(1, 2 * steps + 2):
        epochs = max(1, round(steps / (per_epoch * rounds)))
        candidate = Schedule(rounds, epochs, size, batch, per_epoch)
        if candidate.seconds() > budget:
            continue
        key = (abs(candidate.steps - steps), -rounds)
        if best is None or key < best[0]:
            best = (key, candidate)
    if best is None:
        raise SpecError(
            source,
            [
                Problem(
                    "duration",
                    f"{spec.duration_seconds:g} s leaves no time for one round of local "
                    f"training ({ALPHA_S:g} s per epoch + {BETA_S:g} s per block, after "
                    f"{collecting:g} s collecting {size} samples); raise duration",
                )
            ],
        )
    return best[1]


def _written_schedule(spec: ExperimentSpec) -> tuple[Schedule, str] | None:
    """The schedule of a round-based section the spec has, and its name."""
    blade = spec.blade
    if blade is not None:
        return _schedule(blade.rounds, blade.iterations, blade.dataset_size, blade.batch_size), (
            "blade"
        )
    fedavg = getattr(spec, "fedavg", None)
    if fedavg is not None:
        return _schedule(
            fedavg.rounds, fedavg.local_epochs, fedavg.dataset_size, fedavg.batch_size
        ), "fedavg"
    return None


def _schedule(rounds: int, epochs: int, size: int, batch: int) -> Schedule:
    return Schedule(rounds, epochs, size, batch, math.ceil(size / batch))


def _section(protocol: str, schedule: Schedule) -> dict[str, Any]:
    """The derived section, in the spec's own fields."""
    if protocol == "blade-fl":
        return {
            "rounds": schedule.rounds,
            "t_sum": schedule.seconds(),
            "alpha": ALPHA_S,
            "beta": BETA_S,
            "dataset_size": schedule.dataset_size,
            "batch_size": schedule.batch_size,
        }
    return {
        "rounds": schedule.rounds,
        "local_epochs": schedule.local_epochs,
        "dataset_size": schedule.dataset_size,
        "batch_size": schedule.batch_size,
    }


def terms(spec: ExperimentSpec, protocol: str, runtime: str = "local") -> Terms:
    """What `under_protocol(spec, protocol, runtime)` keeps, derives and changes."""
    protocol = canonical_protocol(protocol)
    _check_runtime(runtime)
    steps = dfl_steps(spec, runtime)
    section = SECTIONS.get(protocol, protocol.replace("-", "_"))
    topology = TOPOLOGY_WHY.get(protocol, "as the spec writes it")
    if protocol not in ROUND_BASED:
        written = spec.protocol == protocol
        source = "as written" if written else "the section's defaults (as the spec holds them)"
        return Terms(protocol, runtime, steps, None, steps, section, False, source, topology)
    own = getattr(spec, section, None)
    written = _written_schedule(spec)
    if own is not None and written is not None and written[1] == section:
        schedule, derived, source = written[0], False, "as written"
    elif written is not None:
        schedule, derived = written[0], True
        source = f"copied from the spec's `{written[1]}:` section (K, tau, |D|, batch)"
    else:
        schedule, derived = derive_schedule(spec, runtime, f"{spec.name} under {protocol}"), True
        source = "derived: the same local SGD steps per node as DFL"
    return Terms(
        protocol, runtime, steps, schedule, schedule.steps, section, derived, source, topology
    )


def under_protocol(spec: ExperimentSpec, protocol: str, runtime: str = "local") -> ExperimentSpec:
    """`spec` run under `protocol`, everything but the protocol's own parts equal (see module).

    `runtime` matters only where the rule needs it: a DFL node's steps come from the injection
    rate in real time and from `sim.training_interval` in the simulator. Raises UnknownProtocol
    for a name the spec does not know and SpecError (naming the field) when the result does not
    validate.
    """
    info = terms(spec, protocol, runtime)
    protocol = info.protocol
    overrides: dict[str, Any] = {"protocol": protocol}
    for other, section in SECTIONS.items():
        if other != protocol and other in ROUND_BASED and other in PROTOCOLS:
            overrides[section] = None  # validation refuses another protocol's section
    if info.schedule is not None and info.derived:
        overrides[info.section] = _section(protocol, info.schedule)
    if protocol in TOPOLOGY:
        overrides["topology"] = dict(TOPOLOGY[protocol])
    if protocol != spec.protocol:
        overrides.update(_behaviours_in_effect(spec))
    if protocol == spec.protocol and not info.derived:
        return spec
    return with_overrides(spec, overrides, f"{spec.name} under {protocol}")


def _check_runtime(runtime: str) -> None:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")


def equal_fields(specs: Sequence[ExperimentSpec]) -> dict[str, bool]:
    """Per field of EQUAL_FIELDS, whether every spec has the same value: what a test and the
    comparison's output check the derivation against."""
    dumped = [_comparable(spec) for spec in specs]
    return {name: all(d.get(name) == dumped[0].get(name) for d in dumped) for name in EQUAL_FIELDS}


def _comparable(spec: ExperimentSpec) -> dict[str, Any]:
    """The spec's values, with `nodes` less its behaviours and `behaviours` as in effect: a
    lazy client is the same whether `blade.lazy_clients` or `nodes.behaviours` says so."""
    data = spec.model_dump(mode="json")
    data["nodes"] = {k: v for k, v in data["nodes"].items() if k != "behaviours"}
    data["behaviours"] = [
        spec.behaviour_of(node).model_dump(mode="json") for node in range(spec.nodes.count)
    ]
    return data


def _behaviours_in_effect(spec: ExperimentSpec) -> dict[str, Any]:
    """`nodes.behaviours.<i>` overrides that keep every node's behaviour in effect when the
    protocol changes: BLADE-FL's `lazy_clients` leave with its section, so they are written
    out per node (DFL and FedAvg take the same `lazy` behaviour)."""
    return {
        f"nodes.behaviours.{node}": spec.behaviour_of(node).model_dump(mode="json")
        for node in range(spec.nodes.count)
        if node not in spec.nodes.behaviours and spec.behaviour_of(node).name != "normal"
    }


def describe(infos: Mapping[str, Terms]) -> list[str]:
    """The rule and its figures as lines for a comparison's output, one per protocol."""
    lines = []
    for info in infos.values():
        protocol = info.protocol
        if info.schedule is None:
            pace = (
                "one per sim.training_interval, when the simulator hands a node a batch"
                if info.runtime == "sim"
                else "one per batch of newly arrived samples"
            )
            lines.append(
                f"{protocol}: {info.steps} local SGD steps per node ({pace}); "
                f"section `{info.section}:` {info.source}; topology: {info.topology}"
            )
            continue
        s = info.schedule
        lines.append(
            f"{protocol}: K = {s.rounds} rounds x tau = {s.local_epochs} local epochs x "
            f"E = {s.steps_per_epoch} batches of {s.batch_size} (|D| = {s.dataset_size}) = "
            f"{s.steps} local SGD steps per node (DFL: {info.dfl_steps}); "
            f"t_sum = K (tau alpha + beta) = {s.seconds():g} s at alpha {ALPHA_S:g} s, beta "
            f"{BETA_S:g} s; section `{info.section}:` {info.source}; topology: {info.topology}"
        )
    return lines
