"""The output of `dfl compare SPEC --protocols ...`: OUT/compare.md, compare.json and figures.

One table with the protocols side by side (columns), so the reader compares along a row: final
accuracy, time and CPU to the target, protocol CPU by category, blockchain share, bytes sent,
local SGD steps. Above it the terms: what was kept equal, what had to differ and the rule that
derived a missing section, with its figures (orchestrator/spec/equal_terms.py). Paths are
relative to OUT, so OUT can be moved whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from orchestrator.compare import JSON_FILE, MARKDOWN_FILE
from orchestrator.compare_figures import Reached, draw, time_axis, time_to_target
from orchestrator.compare_protocols import Planned, ProtocolResult, scalar_figures
from orchestrator.report.cells import num, pct, table
from orchestrator.spec import ExperimentSpec
from orchestrator.spec.equal_terms import EQUAL_FIELDS, describe, equal_fields

NOT_REACHED = "not reached"


def write_comparison(
    spec: ExperimentSpec,
    planned: Sequence[Planned],
    results: Sequence[ProtocolResult],
    out: Path,
    target: float,
) -> Path:
    """Writes compare.md, compare.json and the figures into `out`; returns compare.md."""
    out.mkdir(parents=True, exist_ok=True)
    plots = draw(results, out, target)
    reached = {r.protocol: time_to_target(r, target) for r in results}
    equal = equal_fields([p.spec for p in planned])
    comparison = _Comparison(spec, planned, results, reached, equal, plots, target, out)
    (out / JSON_FILE).write_text(_json(comparison))
    path = out / MARKDOWN_FILE
    path.write_text(_markdown(comparison))
    return path


class _Comparison(NamedTuple):
    """What compare.md and compare.json are both written from, gathered once so that the two
    views of one comparison cannot be handed different inputs."""

    spec: ExperimentSpec
    planned: Sequence[Planned]
    results: Sequence[ProtocolResult]
    reached: dict[str, Reached]  # by protocol
    equal: dict[str, bool]  # by EQUAL_FIELDS name: kept equal in every run
    plots: dict[str, str]  # figure -> file name in `out`
    target: float
    out: Path


def _bytes(value: float | None) -> str:
    if value is None:
        return "not recorded"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def _reached_cells(reached: Reached, sim: bool) -> tuple[str, str]:
    if not reached.reached:
        return NOT_REACHED, NOT_REACHED
    unit = " (virtual)" if sim else ""
    return f"{reached.seconds:.0f} s{unit}", f"{reached.cpu_seconds:.1f} s"


def _markdown(comparison: _Comparison) -> str:
    spec, planned, results, reached, equal, plots, target, out = comparison
    sim = all(r.runtime == "sim" for r in results)
    names = [r.protocol for r in results]
    categories = sorted({c for r in results for c in r.cpu_seconds})
    rows: list[tuple[str, ...]] = [
        ("run directory", *(f"`{os.path.relpath(r.directory, out)}`" for r in results)),
        ("accuracy of", *(r.accuracy_of for r in results)),
        ("final test-set accuracy", *(num(r.final_accuracy, 3) for r in results)),
        ("best accuracy seen", *(num(max(r.mean, default=None), 3) for r in results)),
        (f"time to {target:g}", *(_reached_cells(reached[n], sim)[0] for n in names)),
        (f"protocol CPU to {target:g}", *(_reached_cells(reached[n], sim)[1] for n in names)),
        ("protocol CPU, all nodes (s)", *(num(r.cpu_total) for r in results)),
        *(
            (f"  of which {c} (s)", *(num(r.cpu_seconds.get(c, 0.0)) for r in results))
            for c in categories
        ),
        ("blockchain share of CPU", *(pct(r.blockchain_share) for r in results)),
        ("bytes sent, all nodes", *(_bytes(r.bytes_sent_total) for r in results)),
        (
            "bytes sent per node",
            *(
                _bytes(r.bytes_sent_total / len(r.bytes_sent_by_node))
                if r.bytes_sent_by_node and r.bytes_sent_total is not None
                else "not recorded"
                for r in results
            ),
        ),
        ("local SGD steps per node", *(str(r.steps) for r in results)),
        ("topology", *(p.spec.topology.kind for p in planned)),
        ("run took (wall, s)", *(f"{r.wall_seconds:.1f}" for r in results)),
    ]
    for figure in scalar_figures(results):
        rows.append((figure, *(_cell(r.figures.get(figure)) for r in results)))
    kept = ", ".join(f"`{name}`" for name in EQUAL_FIELDS if equal[name])
    broken = [name for name in EQUAL_FIELDS if not equal[name]]
    lines = [
        f"# Protocol comparison: {spec.name} under {', '.join(names)}",
        "",
        f"One spec (`{spec.name}`, {spec.model} on {spec.dataset}, {spec.nodes.count} nodes, "
        f"`{spec.nodes.distribution}`, seed {spec.seed}, {spec.duration_seconds:g} s) run under "
        f"each protocol in the `{results[0].runtime if results else '?'}` runtime.",
        "",
        "## Terms",
        "",
        f"Equal in every run: {kept} (the partition is `nodes.distribution` under the seed, so "
        "every node draws the same seeded stream).",
        *(
            [f"**Not equal** (the derivation could not keep them): {', '.join(broken)}."]
            if broken
            else []
        ),
        "",
        "Different by necessity: the protocol, its own section, and the topology "
        "(BLADE-FL broadcasts to every client: full mesh; FedAvg: star with centre node 0; DFL "
        "keeps the spec's graph).",
        "",
        "Rule for a protocol section the spec lacks: the same local training per node, i.e. "
        "the DFL batch size and the same number of local SGD steps over the run, split into K "
        "rounds of tau local epochs over a local dataset collected early in the run, with "
        "BLADE-FL's budget t_sum = K (tau alpha + beta) fitting the duration "
        "(orchestrator/spec/equal_terms.py).",
        "",
        *(f"- {line}" for line in describe({p.protocol: p.terms for p in planned})),
        "",
        "## Results",
        "",
        table(("", *names), rows, "-" + "n" * len(names)),
        "How to read it: accuracy is on the common test set, of what the row `accuracy of` "
        "says (the simulator tests a round-based protocol's global model on the whole test "
        "set, and each DFL node's own model on `sim.test_samples` samples); final = the run's "
        "summary figure. Time to the target is the first evaluation at or above it, "
        f"on the clock of the plot below ({time_axis(results)}). CPU is the protocol tasks' "
        "thread CPU (every task but observe and other, the testbed's own measuring), summed "
        "over the nodes; blockchain share = its blockchain part, pooled over the nodes.",
        "",
        "## Figures",
        "",
        f"![accuracy against time]({plots['accuracy_time']})",
        "",
        f"`{plots['accuracy_time']}`: test-set accuracy against {time_axis(results)}; band: "
        "min..max over the nodes (none for a global model); dashed: the target.",
        "",
        f"![accuracy against CPU]({plots['accuracy_cpu']})",
        "",
        f"`{plots['accuracy_cpu']}`: the same accuracy against the cumulative protocol CPU "
        "summed over the nodes: which protocol learns more per CPU second."
        + (
            " The simulator records CPU only at the end of a run, so each curve's CPU is that "
            "total spread over the run in proportion to (virtual) time: its end point is "
            "measured, its shape is not."
            if any(r.cpu_estimated for r in results)
            else ""
        ),
        "",
        f"![costs]({plots['costs']})",
        "",
        f"`{plots['costs']}`: protocol CPU by category, the blockchain share of it, and bytes "
        "sent, summed over the nodes.",
    ]
    notes = [f"{r.protocol}: {note}" for r in results for note in r.notes]
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines).rstrip() + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _json(comparison: _Comparison) -> str:
    from orchestrator.report.render import json_ready

    spec, planned, results, reached, equal, plots, target, out = comparison
    document = {
        "spec": spec.name,
        "runtime": results[0].runtime if results else None,
        "target": target,
        "time_axis": time_axis(results),
        "equal_fields": equal,
        "terms": {
            p.protocol: line
            for p, line in zip(
                planned, describe({p.protocol: p.terms for p in planned}), strict=True
            )
        },
        "plots": plots,
        "protocols": [
            {
                "protocol": r.protocol,
                "directory": os.path.relpath(r.directory, out),
                "topology": p.spec.topology.kind,
                "accuracy_of": r.accuracy_of,
                "final_accuracy": r.final_accuracy,
                "time_to_target_s": reached[r.protocol].seconds,
                "cpu_to_target_s": reached[r.protocol].cpu_seconds,
                "cpu_seconds": r.cpu_seconds,
                "cpu_seconds_total": r.cpu_total,
                "cpu_estimated_over_time": r.cpu_estimated,
                "blockchain_share": r.blockchain_share,
                "bytes_sent_total": r.bytes_sent_total,
                "bytes_sent_by_node": r.bytes_sent_by_node,
                "local_sgd_steps_per_node": r.steps,
                "wall_seconds": round(r.wall_seconds, 2),
                "figures": r.figures,
                "notes": list(r.notes),
                "curve": {"times": r.times, "mean": r.mean, "cpu": r.cpu_at},
            }
            for p, r in zip(planned, results, strict=True)
        ],
    }
    return json.dumps(json_ready(document), indent=2) + "\n"
