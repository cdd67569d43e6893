"""Reading a run directory back: everything it holds, whatever a crashed node left of it.

A node that died may leave no chain store or profile; the readers say so rather than failing,
because a run with a crashed node is exactly the kind of run someone wants to look at. Only a
missing or broken run.json is fatal (NotARunDirectory): without it there are no node names.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, get_type_hints

from node.datadir import PROFILE_FILE, ROUNDS_FILE, STORE_FILE
from node.host.resemblance import Resemblance
from node.ledger.errors import RecordRejected
from node.ledger.records import confirmed_fraction
from node.ledger.store import ChainCorrupted, ChainStore
from node.ledger.validation import decode
from orchestrator.report.schema import (
    CPU_METRIC_PREFIX,
    FAULTS_FILE,
    FEDAVG_PROTOCOL,
    METRICS_FILE,
    METRICS_HEADER,
    NODES_DIR,
    RUN_FILE,
    SPEC_FILE,
    ChainStats,
    CpuProfile,
    FaultMoment,
    Metrics,
    NodeData,
    NodeSpec,
    RoundLog,
    RoundRecord,
    RunData,
    RunInfo,
    Series,
)
from orchestrator.report.table6 import AccountedProfile, entries_by_key, startup_from
from proto.dfl.v1 import records_pb2 as pb

_RESEMBLANCE_FIELDS = get_type_hints(Resemblance)  # field name -> type, in declaration order


class NotARunDirectory(ValueError):
    """DIR has no readable run.json: there is nothing to report on."""


def load_run(directory: Path | str) -> RunData:
    """Reads everything a run directory holds; only a missing or broken run.json is fatal."""
    directory = Path(directory)
    info = _read_run_info(directory)
    warnings: list[str] = []
    metrics = _read_metrics(directory / METRICS_FILE, warnings)
    spec_path = directory / SPEC_FILE
    spec_text = spec_path.read_text(errors="replace") if spec_path.is_file() else None
    if spec_text is None:
        warnings.append(f"{SPEC_FILE} is missing")
    strangers = sorted(set(metrics.by_node) - {n.name for n in info.nodes})
    if strangers:
        warnings.append(f"{METRICS_FILE} names nodes not in {RUN_FILE}: {', '.join(strangers)}")
    chained = info.protocol != FEDAVG_PROTOCOL  # FedAvg's nodes keep no chain store, by design
    nodes = {spec.name: _read_node(directory, spec, metrics, chained) for spec in info.nodes}
    rounds = _read_rounds(directory, info, warnings)
    faults = _read_faults(directory / FAULTS_FILE, warnings)
    return RunData(directory, info, spec_text, metrics, nodes, tuple(warnings), rounds, faults)


def _read_run_info(directory: Path) -> RunInfo:
    path = directory / RUN_FILE
    if not path.is_file():
        raise NotARunDirectory(f"{directory} is not a run directory: it has no {RUN_FILE}")
    try:
        raw = json.loads(path.read_text())
        nodes = tuple(
            NodeSpec(
                name=str(node["name"]),
                address=str(node.get("address", "")),
                peers=tuple(str(p) for p in node.get("peers", ())),
                behaviour=str(node.get("behaviour", "normal")),
            )
            for node in raw.get("nodes", ())
        )
        return RunInfo(
            name=str(raw.get("name", directory.name)),
            runtime=str(raw.get("runtime", "unknown")),
            protocol=str(raw.get("protocol", "unknown")),
            started_at=str(raw.get("started_at", "unknown")),
            duration_s=float(raw.get("duration_s", 0.0)),
            nodes=nodes,
            pow_difficulty=_optional_float(raw.get("pow_difficulty")),
            health={
                str(name): {str(state): int(count) for state, count in states.items()}
                for name, states in raw.get("health", {}).items()
            },
            hosts={str(k): str(v) for k, v in raw.get("hosts", {}).items()},
            prometheus_targets={
                str(k): str(v) for k, v in raw.get("prometheus_targets", {}).items()
            },
        )
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise NotARunDirectory(f"{path} is not a valid run description: {error!r}") from None


def _read_metrics(path: Path, warnings: list[str]) -> Metrics:
    if not path.is_file():
        warnings.append(f"{METRICS_FILE} is missing: no accuracy, height or counter figures")
        return Metrics()
    points: dict[str, dict[str, list[tuple[float, float]]]] = {}
    skipped = 0
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not set(METRICS_HEADER) <= set(reader.fieldnames):
            warnings.append(
                f"{METRICS_FILE} has header {reader.fieldnames}, "
                f"expected {','.join(METRICS_HEADER)}"
            )
            return Metrics()
        for row in reader:
            try:
                time_s, value = float(row["time_s"]), float(row["value"])
            except (TypeError, ValueError):
                skipped += 1
                continue
            if not row["node"] or not row["metric"] or math.isnan(time_s):
                skipped += 1
                continue
            points.setdefault(row["node"], {}).setdefault(row["metric"], []).append((time_s, value))
    if skipped:
        warnings.append(f"{METRICS_FILE}: {skipped} unreadable rows skipped")
    by_node = {
        node: {
            metric: Series(tuple(t for t, _ in pts), tuple(v for _, v in pts))
            for metric, pts in ((m, sorted(p)) for m, p in metrics.items())
        }
        for node, metrics in points.items()
    }
    return Metrics(by_node, skipped)


def _read_node(directory: Path, spec: NodeSpec, metrics: Metrics, chained: bool) -> NodeData:
    node_dir = directory / NODES_DIR / spec.name
    chain, chain_problem = read_chain(node_dir / STORE_FILE) if chained else (None, None)
    profile, profile_problem = _read_profile(node_dir / PROFILE_FILE)
    if profile is None:
        fallback = _profile_from_metrics(metrics.by_node.get(spec.name, {}))
        if fallback is not None:
            profile_problem = f"{profile_problem}; CPU figures taken from {METRICS_FILE}"
            profile = fallback
    return NodeData(spec, chain, chain_problem, profile, profile_problem)


def read_chain(path: Path) -> tuple[ChainStats | None, str | None]:
    """Table 7's figures from one chain store, or None and why there are none.

    The genesis says which block format the store holds: DFL's `Block` (transactions, receipts,
    confirmations) or BLADE-FL's `PowBlock` (the round's models and the miner; no confirmations).
    """
    if not path.is_file():
        return None, "no chain store (the node may have died before it wrote one)"
    try:
        store = ChainStore.open(path, verify=False)
    except ChainCorrupted as error:
        return None, f"chain store unreadable: {error}"
    except sqlite3.DatabaseError as error:
        return None, f"chain store is not a readable SQLite database: {error}"
    with store:
        transactions: list[int] = []
        confirmations: list[int] = []
        fractions: list[float] = []
        miners: list[str] = []
        hashes: list[str] = []
        try:
            for _, digest, data in store.blocks():
                hashes.append(bytes(digest).hex())
                try:
                    block = decode(store.format.message, data)
                except RecordRejected:
                    continue  # verify() below names the first bad block
                if isinstance(block, pb.PowBlock):
                    transactions.append(len(block.transactions))
                    miners.append(block.header.miner.hex())
                else:
                    transactions.append(len(block.body.transactions))
                    confirmations.append(len(block.finalization.confirmations))
                    fractions.append(confirmed_fraction(block))
            store.verify()
            verifies, problem = True, None
        except ChainCorrupted as error:
            verifies, problem = False, f"height {error.height}: {error.reason}: {error.detail}"
        except sqlite3.DatabaseError as error:
            verifies, problem = False, f"database error: {error}"
        return (
            ChainStats(
                blocks=store.height,
                transactions_per_block=tuple(transactions),
                confirmations_per_block=tuple(confirmations),
                confirmed_fractions=tuple(fractions),
                verifies=verifies,
                verify_problem=problem,
                protocol=store.genesis.body.protocol,
                miners=tuple(miners),
                block_hashes=tuple(hashes),
            ),
            None,
        )


def _read_profile(path: Path) -> tuple[CpuProfile | None, str | None]:
    if not path.is_file():
        return None, f"no {PROFILE_FILE} (the node may have died before writing it)"
    try:
        raw = json.loads(path.read_text())
        # "cpu" is the run layout's name; node/service/profiler.py's snapshot calls it "entries".
        entries = raw["cpu"] if "cpu" in raw else raw.get("entries", ())
        # The accounting fields (start-up, apportioned, remainder, cgroup) are newer than the
        # entries: a profile without them reads as one whose figures are unknown.
        startup, startup_source = startup_from(raw)
        return (
            AccountedProfile(
                seconds=entries_by_key(entries),
                process_cpu_seconds=_optional_float(raw.get("process_cpu_seconds")),
                profiled_seconds=_optional_float(raw.get("profiled_seconds")),
                source=PROFILE_FILE,
                startup_cpu_seconds=startup,
                startup_source=startup_source,
                apportioned=entries_by_key(raw.get("apportioned") or ()),
                reported_remainder_seconds=_optional_float(raw.get("remainder_seconds")),
                reported_attributed_share=_optional_float(raw.get("attributed_share")),
                cgroup_cpu_seconds=_optional_float(raw.get("cgroup_cpu_seconds")),
            ),
            None,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        return None, f"{PROFILE_FILE} is malformed: {error!r}"


def _profile_from_metrics(metrics: Mapping[str, Series]) -> CpuProfile | None:
    """The last cumulative cpu_seconds:<task>:<category> samples, for a node without a profile."""
    seconds: dict[tuple[str, str], float] = {}
    for name, series in metrics.items():
        parts = name.split(":")
        if len(parts) == 3 and name.startswith(CPU_METRIC_PREFIX) and series.last is not None:
            seconds[(parts[1], parts[2])] = series.last
    if not seconds:
        return None
    return CpuProfile(seconds, None, None, source=METRICS_FILE)


def _read_faults(path: Path, warnings: list[str]) -> tuple[FaultMoment, ...] | None:
    """faults.jsonl's moments in time order (begins and ends as the FaultRunner wrote them);
    None without the file: the run had no `faults:`."""
    if not path.is_file():
        return None
    moments: list[FaultMoment] = []
    skipped = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            phase = str(raw["phase"])
            if phase not in ("begin", "end"):
                raise ValueError(f"phase {phase!r}")
            time_s = float(raw["time_s"])
            if not math.isfinite(time_s):
                raise ValueError(f"time_s {time_s}")
            moments.append(
                FaultMoment(
                    time_s=time_s,
                    phase=phase,
                    kind=str(raw["kind"]),
                    nodes=tuple(int(n) for n in raw.get("nodes", ())),
                    fault=dict(raw.get("fault") or {}),
                    chain_heights={
                        str(name): int(height)
                        for name, height in (raw.get("chain_heights") or {}).items()
                    },
                )
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            skipped += 1
    if skipped:
        warnings.append(f"{FAULTS_FILE}: {skipped} unreadable lines skipped")
    # Stable: at one moment the runner wrote ends before begins, and that order is kept.
    return tuple(sorted(moments, key=lambda m: m.time_s))


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _read_rounds(directory: Path, info: RunInfo, warnings: list[str]) -> RoundLog | None:
    """The resemblance tables of the first node with a rounds.jsonl. Every client computes the
    same table for the same block, so one file suffices; the others are only checked for the
    rounds they hold (a client that fell behind or crashed holds fewer)."""
    files = [
        (n.name, path)
        for n in info.nodes
        if (path := directory / NODES_DIR / n.name / ROUNDS_FILE).is_file()
    ]
    if not files:
        return None
    source, path = files[0]
    records, skipped = _parse_rounds(path)
    if skipped:
        warnings.append(f"{source}: {ROUNDS_FILE}: {skipped} unreadable lines or entries skipped")
    present = {r.round for r in records}
    for name, other in files[1:]:
        theirs = {r.round for r in _parse_rounds(other)[0]}
        if theirs != present:
            warnings.append(
                f"{name}: {ROUNDS_FILE} disagrees with {source}'s on the rounds present "
                f"({name} has {_rounds_text(theirs)}, {source} has {_rounds_text(present)})"
            )
    return RoundLog(source, tuple(sorted(records, key=lambda r: r.round)))


def _parse_rounds(path: Path) -> tuple[list[RoundRecord], int]:
    """The file's records and how many lines or resemblance entries could not be read."""
    records: list[RoundRecord] = []
    skipped = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            entries = []
            for entry in raw.get("resemblance", ()):
                try:
                    entries.append(_resemblance(entry))
                except (ValueError, TypeError, KeyError):
                    skipped += 1
            records.append(
                RoundRecord(
                    round=int(raw["round"]),
                    miner=str(raw.get("miner", "")),
                    models=tuple(str(m) for m in raw.get("models", ())),
                    resemblance=tuple(entries),
                )
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            skipped += 1
    return records, skipped


def _resemblance(entry: Mapping[str, Any]) -> Resemblance:
    """One entry of a block's resemblance table, read by the dataclass's own fields and types:
    the node writes it with dataclasses.asdict, so a field added there is read here as well."""
    return Resemblance(**{name: kind(entry[name]) for name, kind in _RESEMBLANCE_FIELDS.items()})


def _rounds_text(rounds: Iterable[int]) -> str:
    """{1, 2, 3, 5} -> "rounds 1-3, 5"."""
    ordered = sorted(set(rounds))
    if not ordered:
        return "no rounds"
    spans: list[list[int]] = []
    for r in ordered:
        if spans and r == spans[-1][1] + 1:
            spans[-1][1] = r
        else:
            spans.append([r, r])
    return "rounds " + ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
