"""The run's key figures, computed once so that report.md and summary.json cannot disagree.

The views follow the paper (section 5.1): final accuracy per node, CPU seconds by task and
category (Table 6) and blockchain statistics (Table 7). BLADE-FL runs add the mining figures and a
verdict on lazy clients from the resemblance tables of rounds.jsonl; runs with `faults:` what
each fault did (faults.py); `dfl load` runs what the load did (load.py). summary.json holds these
figures per node for the integration tests and `dfl compare`.

A BLADE-FL run may last only half a minute, so its final-accuracy window is 20 % of the run when
that is shorter than 30 s.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from node.host.resemblance import Resemblance
from orchestrator.report.cpu_table import category_columns, task_rows
from orchestrator.report.faults import FaultSummary, summarize_faults
from orchestrator.report.load import LoadSummary, summarize_load
from orchestrator.report.schema import (
    BLADE_PROTOCOL,
    COUNTER_METRICS,
    FEDAVG_PROTOCOL,
    LOCAL_RUNTIME,
    ChainStats,
    CpuProfile,
    Metrics,
    NodeData,
    RunData,
    Series,
)
from orchestrator.report.table6 import (
    accounted,
    attributed_share,
    protocol_shares,
    remainder_seconds,
)

FINAL_WINDOW_S = 30.0  # "final" accuracy: the mean over the run's last 30 s, not one noisy sample
# BLADE-FL runs a fixed number of rounds and may be over in 30 s: there the window is at most
# this share of the run, so that "final" still means the end of training.
FINAL_WINDOW_FRACTION = 0.2
LAZY_FACTOR = 10.0  # suspected lazy: mean difference_std >= 10 x the clients' median
CHANCE_ACCURACY = 0.1  # ten classes (MNIST, Fashion-MNIST)
COVERAGE_TOLERANCE = 0.15  # flag a profiler total more than 15 % away from the process's CPU


@dataclass(frozen=True)
class NodeSummary:
    """One node's key figures as summary.json holds them; None where the run did not record one."""

    final_test_accuracy: float | None
    test_samples_in_window: int
    max_test_accuracy: float | None
    final_local_accuracy: float | None
    blockchain_share: float | None
    cpu_seconds_by_category: dict[str, float]
    profiler_cpu_seconds: float | None
    process_cpu_seconds: float | None
    coverage: float | None
    coverage_flagged: bool
    cpu_source: str | None
    cpu_seconds_by_task: dict[str, float]
    # Shares of the protocol tasks' CPU (observe and other left out, as the paper's Table 6
    # has no such work: table6.py); blockchain_share above is of all profiled CPU.
    protocol_cpu_seconds: float | None
    protocol_blockchain_share: float | None
    protocol_network_share: float | None
    protocol_ml_share: float | None
    attributed_share: float | None  # entries / process CPU since start-up (= coverage)
    startup_cpu_seconds: float | None  # process CPU until the node served (older: at start)
    remainder_cpu_seconds: float | None  # process CPU since start-up that no entry claims
    tx_per_block_mean: float | None  # BLADE-FL: models per block
    tx_per_block_min: int | None
    confirmations_per_block_mean: float | None
    confirmations_per_block_min: int | None
    confirmed_fraction_mean: float | None
    blocks: int | None
    peers: int
    chain_verifies: bool | None  # None: no readable chain store
    chain_problem: str | None
    counters: dict[str, float | None]  # COUNTER_METRICS' last values, bytes_sent included
    # The fields below are None where they do not apply (the mining ones in DFL runs) or where
    # the run did not record them.
    pow_hashes: float | None  # BLADE-FL: hashes computed
    forks: float | None  # BLADE-FL: competing valid blocks seen
    blocks_mined: int | None  # BLADE-FL: blocks of the reference chain this node mined
    hash_rate: float | None  # BLADE-FL: pow_hashes / CPU seconds of task "mine"
    mining_searches: float | None  # BLADE-FL: searches (one per round the node mined)
    mining_seconds_per_search: float | None  # BLADE-FL: mining_seconds / mining_searches
    # The node's container's cgroup, sampled with the other metrics: only where the cgroup is
    # the node's alone (docker), never for the local runtime (see `cgroup_is_the_nodes`).
    memory_peak_bytes: float | None
    memory_mean_bytes: float | None
    cgroup_cpu_seconds: float | None
    # The node's own process, wherever it runs: USS and PSS (smaps_rollup) sampled with the
    # other metrics, and its CPU since it started (imports included, unlike process_cpu_seconds
    # above, which counts from the profiler's start).
    uss_mean_bytes: float | None
    uss_peak_bytes: float | None
    pss_peak_bytes: float | None
    process_lifetime_cpu_seconds: float | None

    @property
    def bytes_sent(self) -> float | None:
        """Payload bytes this node sent. In summary.json as counters.bytes_sent: `dfl compare`
        lists node fields it does not know as protocol-specific, and bytes_sent is common."""
        return self.counters.get("bytes_sent")


@dataclass(frozen=True)
class PlagiarismVerdict:
    """One client's resemblance to its nearest peer, averaged over the rounds of rounds.jsonl."""

    rounds: int  # blocks that held its model
    model_cosine: float | None
    update_cosine: float | None
    copy_coefficient: float | None
    difference_std: float | None
    nearest: str | None  # the peer named most often as nearest (node name, or hex address)
    nearest_rounds: int  # in how many of the rounds
    behaviour: str | None  # run.json's, None for an address run.json does not name
    suspected: bool  # difference_std >= LAZY_FACTOR x the median over clients


@dataclass(frozen=True)
class RunSummary:
    """summary.json: the run's key figures, and every number report.md prints."""

    name: str
    runtime: str
    protocol: str
    started_at: str
    duration_s: float
    window_s: float
    window_start_s: float
    window_end_s: float
    chance_accuracy: float
    coverage_tolerance: float
    mean_final_test_accuracy: float | None
    mean_blockchain_share: float | None
    nodes: dict[str, NodeSummary]
    pow_difficulty: float | None  # BLADE-FL: expected hashes per block (run.json)
    network_hash_rate: float | None  # BLADE-FL: sum of pow_hashes / mean mining_seconds
    plagiarism: dict[str, PlagiarismVerdict]  # BLADE-FL: by node name; empty otherwise
    faults: tuple[FaultSummary, ...] = ()  # faults.jsonl's, in order of their begins
    load: LoadSummary | None = None  # a `dfl load` run's (load.py)


def final_window(protocol: str, run_length: float) -> float:
    """The final-accuracy window's length: 30 s; for the protocols of rounds (BLADE-FL,
    FedAvg), whose runs end with the last round, at most 20 % of the run."""
    if protocol in (BLADE_PROTOCOL, FEDAVG_PROTOCOL):
        return min(FINAL_WINDOW_S, FINAL_WINDOW_FRACTION * run_length)
    return FINAL_WINDOW_S


def summarize(data: RunData) -> RunSummary:
    """The report's numbers, computed once so that report.md and summary.json cannot disagree."""
    end = max(data.info.duration_s, data.metrics.end_time)
    window = final_window(data.info.protocol, end)
    window_start = end - window
    reference_name = reference_chain(data)
    reference = data.nodes[reference_name].chain if reference_name else None
    own_cgroup = cgroup_is_the_nodes(data.info.runtime)
    nodes = {
        name: _summarize_node(
            node,
            data.metrics,
            window_start,
            reference,
            data.info.protocol == BLADE_PROTOCOL,
            own_cgroup,
        )
        for name, node in data.nodes.items()
    }
    hashes = [n.pow_hashes for n in nodes.values() if n.pow_hashes is not None]
    mining = mean(data.metrics.series(name, "mining_seconds").last for name in data.nodes)
    return RunSummary(
        name=data.info.name,
        runtime=data.info.runtime,
        protocol=data.info.protocol,
        started_at=data.info.started_at,
        duration_s=data.info.duration_s,
        window_s=window,
        window_start_s=window_start,
        window_end_s=end,
        chance_accuracy=CHANCE_ACCURACY,
        coverage_tolerance=COVERAGE_TOLERANCE,
        mean_final_test_accuracy=mean(n.final_test_accuracy for n in nodes.values()),
        mean_blockchain_share=mean(n.blockchain_share for n in nodes.values()),
        nodes=nodes,
        pow_difficulty=data.info.pow_difficulty,
        network_hash_rate=sum(hashes) / mining if hashes and mining else None,
        plagiarism=plagiarism(data),
        faults=summarize_faults(data),
        load=summarize_load(data),
    )


def cgroup_is_the_nodes(runtime: str) -> bool:
    """Whether a run's cgroup figures, where metrics.csv has any, can be a node's own.

    A node exports them only when it is alone in its cgroup; but the local runtime starts its
    nodes as children of the orchestrator, in its cgroup, so their cgroup is never theirs, and a
    run directory written before nodes made that check holds the machine's figures under the
    nodes' names. Other runtimes (docker; remote, whose nodes may be a compose stack's
    containers) keep what the nodes exported.
    """
    return runtime != LOCAL_RUNTIME


def reference_chain(data: RunData) -> str | None:
    """The BLADE-FL node whose chain store counts the blocks each node mined: the longest that
    verifies (else the longest readable one); the first in run.json's order on a tie."""
    chains = [
        (name, node.chain)
        for name, node in data.nodes.items()
        if node.chain is not None and node.chain.protocol == BLADE_PROTOCOL
    ]
    if not chains:
        return None
    candidates = [(n, c) for n, c in chains if c.verifies] or chains
    return max(candidates, key=lambda item: item[1].blocks)[0]


def _summarize_node(
    node: NodeData,
    metrics: Metrics,
    window_start: float,
    reference: ChainStats | None,
    mines: bool,
    own_cgroup: bool,
) -> NodeSummary:
    """`mines`: a BLADE-FL run; a DFL node exports the mining counters too, all zero.
    `own_cgroup`: whether the run's cgroup figures can be the node's (`cgroup_is_the_nodes`)."""
    name = node.spec.name
    test = metrics.series(name, "accuracy_test")
    in_window = test.since(window_start)
    profile, chain = node.profile, node.chain
    coverage = profile.coverage if profile else None
    categories = category_columns(c for _, c in profile.seconds) if profile else []
    shares = protocol_shares(profile.seconds) if profile else None
    mined = (lambda metric: metrics.series(name, metric).last) if mines else (lambda _: None)
    pow_hashes = mined("pow_hashes")
    searches = mined("mining_searches")
    mining_seconds = mined("mining_seconds")
    cgroup = (lambda metric: metrics.series(name, metric)) if own_cgroup else (lambda _: Series())
    mine_cpu = (
        sum(s for (task, _), s in profile.seconds.items() if task == "mine") if profile else None
    )
    return NodeSummary(
        final_test_accuracy=mean(in_window),
        test_samples_in_window=len(in_window),
        max_test_accuracy=max(test.values) if test.values else None,
        final_local_accuracy=mean(metrics.series(name, "accuracy_local").since(window_start)),
        blockchain_share=profile.blockchain_share if profile else None,
        cpu_seconds_by_category={c: profile.category(c) for c in categories} if profile else {},
        profiler_cpu_seconds=profile.total if profile else None,
        process_cpu_seconds=profile.process_cpu_seconds if profile else None,
        coverage=coverage,
        coverage_flagged=coverage is not None and abs(1 - coverage) > COVERAGE_TOLERANCE,
        cpu_source=profile.source if profile else None,
        cpu_seconds_by_task=_by_task(profile),
        protocol_cpu_seconds=shares.total if shares else None,
        protocol_blockchain_share=shares.blockchain if shares else None,
        protocol_network_share=shares.network if shares else None,
        protocol_ml_share=shares.ml if shares else None,
        attributed_share=attributed_share(profile) if profile else None,
        startup_cpu_seconds=accounted(profile).startup_cpu_seconds if profile else None,
        remainder_cpu_seconds=remainder_seconds(profile) if profile else None,
        tx_per_block_mean=mean(chain.transactions_per_block) if chain else None,
        tx_per_block_min=min(chain.transactions_per_block, default=None) if chain else None,
        confirmations_per_block_mean=mean(chain.confirmations_per_block) if chain else None,
        confirmations_per_block_min=min(chain.confirmations_per_block, default=None)
        if chain
        else None,
        confirmed_fraction_mean=mean(chain.confirmed_fractions) if chain else None,
        blocks=chain.blocks if chain else None,
        peers=len(node.spec.peers),
        chain_verifies=chain.verifies if chain else None,
        chain_problem=node.chain_problem or (chain.verify_problem if chain else None),
        counters={m: metrics.series(name, m).last for m in COUNTER_METRICS},
        pow_hashes=pow_hashes,
        forks=mined("forks"),
        blocks_mined=_blocks_mined(node, reference),
        hash_rate=pow_hashes / mine_cpu if pow_hashes is not None and mine_cpu else None,
        mining_searches=searches,
        mining_seconds_per_search=mining_seconds / searches
        if mining_seconds is not None and searches
        else None,
        memory_peak_bytes=peak(memory := cgroup("memory_bytes").values),
        memory_mean_bytes=mean(memory),
        cgroup_cpu_seconds=cgroup("cgroup_cpu_seconds").last,
        uss_mean_bytes=mean(uss := metrics.series(name, "uss_bytes").values),
        uss_peak_bytes=peak(uss),
        pss_peak_bytes=peak(metrics.series(name, "pss_bytes").values),
        process_lifetime_cpu_seconds=metrics.series(name, "process_cpu_seconds").last,
    )


def _by_task(profile: CpuProfile | None) -> dict[str, float]:
    """CPU seconds per task, in the CPU tables' task order; empty without a profile."""
    if profile is None:
        return {}
    return {
        task: sum(s for (t, _), s in profile.seconds.items() if t == task)
        for task in task_rows(t for t, _ in profile.seconds)
    }


def _blocks_mined(node: NodeData, reference: ChainStats | None) -> int | None:
    if reference is None or not node.spec.address:
        return None
    return reference.miners.count(node.spec.address)


def plagiarism(data: RunData) -> dict[str, PlagiarismVerdict]:
    """Per client of rounds.jsonl: its mean resemblance to its nearest peer and the verdict."""
    if data.rounds is None:
        return {}
    names = data.info.node_names()
    behaviours = {n.address: n.behaviour for n in data.info.nodes if n.address}
    entries: dict[str, list[Resemblance]] = {}
    for record in data.rounds.rounds:
        for entry in record.resemblance:
            entries.setdefault(entry.client, []).append(entry)
    order = [n.address for n in data.info.nodes if n.address in entries]
    order += sorted(set(entries) - set(order))
    spreads = {client: mean(e.difference_std for e in entries[client]) for client in order}
    present = [v for v in spreads.values() if v is not None]
    median = statistics.median(present) if present else None
    verdicts = {}
    for client in order:
        rows = entries[client]
        nearest, count = Counter(e.nearest for e in rows).most_common(1)[0]
        spread = spreads[client]
        verdicts[names.get(client, client)] = PlagiarismVerdict(
            rounds=len(rows),
            model_cosine=mean(e.model_cosine for e in rows),
            update_cosine=mean(e.update_cosine for e in rows),
            copy_coefficient=mean(e.copy_coefficient for e in rows),
            difference_std=spread,
            nearest=names.get(nearest, nearest),
            nearest_rounds=count,
            behaviour=behaviours.get(client),
            suspected=spread is not None
            and median is not None
            and spread > 0
            and spread >= LAZY_FACTOR * median,
        )
    return verdicts


def peak(values: Iterable[float]) -> float | None:
    """The largest sample, None without any."""
    return max(values, default=None)


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the figures present: a node that did not record one (None, NaN) is left out
    rather than counted as zero; None when no node has it."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None
