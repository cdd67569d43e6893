"""The experiment spec: one YAML file that every runtime (sim, local, docker, swarm) reads.

An experiment is described once, here, and nowhere else: the runtimes take what they need from
an `ExperimentSpec` and never read the YAML themselves. The file is strict on purpose, because a
typo in a research run does not crash, it silently measures the default instead: every unknown
key and every bad value is an error, and all of them are reported at once, each with its field
path (and, for a file, its line), so that one edit fixes a file:

    experiments/x.yaml:14: dfl.ttl: must be >= 1
    experiments/x.yaml:9: nodes.behaviours.3: unknown behaviour 'evil'; known: duplication, ...

Names are checked against the components that will use them (behaviours, aggregators,
partitions, topologies) by asking those components, so the spec can never accept something a
node later refuses. Durations are seconds, written as a number or as `500ms`, `180s`, `3m`,
`1h30m`.

`faults:` schedules crashes, partitions, latency, loss and pauses (orchestrator/spec/faults.py);
each is checked against the run like any other field, and `fault_timeline()` orders their
begins and ends for the runtime that carries them out.

A spec is parsed once: validation parses the partition, draws the peer graph and builds the
behaviours, and the spec keeps them for every runtime to read. Every change goes through
validation again (`with_overrides`, and `model_copy`, which here validates too), so no runtime
or sweep ever holds values that were not checked.

Sections that may be left out take the paper's values (`dfl`: DflConfig's defaults;
`topology`: full mesh; `evaluation`: 1000 test samples every 10 s); `spec_to_yaml` writes every
value out, so a run directory can record exactly what ran, and `canonical_spec_json` /
`spec_digest` name the experiment independently of how its file was written. `transport`
left out is the runtime's choice (plaintext for local and docker, mutual TLS for swarm) and is
not written at all, so that the digests of specs from before it existed stay what they were.

Modules: errors (Problem, SpecError), values (durations, strict types), sections (the section
models), faults (the fault schedule), experiment (ExperimentSpec and what it derives), read
(YAML and data in), write (YAML and canonical JSON out), overrides (dotted-path changes).
"""

from orchestrator.spec.errors import Problem, SpecError
from orchestrator.spec.experiment import MODELS, PROTOCOLS, ExperimentSpec
from orchestrator.spec.faults import (
    FAULT_KINDS,
    AnyFault,
    CrashFault,
    Fault,
    FaultSpec,
    FaultStep,
    LatencyFault,
    LossFault,
    PartitionFault,
    PauseFault,
)
from orchestrator.spec.overrides import parse_override, with_overrides
from orchestrator.spec.read import load_spec, parse_spec, parse_yaml
from orchestrator.spec.sections import (
    MAX_TTL,
    TEST_SET_SIZE,
    AggregatorSpec,
    BehaviourSpec,
    BladeSection,
    DflSection,
    EvaluationSpec,
    FedAvgSection,
    NodesSpec,
    ResourcesSpec,
    SimSection,
    TopologySpec,
    TransportSpec,
)
from orchestrator.spec.values import parse_seconds
from orchestrator.spec.write import canonical_spec_json, spec_digest, spec_to_dict, spec_to_yaml

__all__ = [
    "FAULT_KINDS",
    "MAX_TTL",
    "MODELS",
    "PROTOCOLS",
    "TEST_SET_SIZE",
    "AggregatorSpec",
    "AnyFault",
    "BehaviourSpec",
    "BladeSection",
    "CrashFault",
    "DflSection",
    "EvaluationSpec",
    "ExperimentSpec",
    "Fault",
    "FaultSpec",
    "FaultStep",
    "FedAvgSection",
    "LatencyFault",
    "LossFault",
    "NodesSpec",
    "PartitionFault",
    "PauseFault",
    "Problem",
    "ResourcesSpec",
    "SimSection",
    "SpecError",
    "TopologySpec",
    "TransportSpec",
    "canonical_spec_json",
    "load_spec",
    "parse_override",
    "parse_seconds",
    "parse_spec",
    "parse_yaml",
    "spec_digest",
    "spec_to_dict",
    "spec_to_yaml",
    "with_overrides",
]
