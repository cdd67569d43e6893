"""The load's requests on the orchestrator's /metrics: counted in Locust's process, written to a
file, read back at each scrape by the orchestrator's registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.exporter import OrchestratorMetrics
from orchestrator.load.live import LiveCounts


def samples(metrics: OrchestratorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("dfl_load_")
    }


def test_before_any_load_the_families_are_known_but_empty() -> None:
    metrics = OrchestratorMetrics()
    text = generate_latest(metrics.registry).decode()
    for name in ("dfl_load_requests_total", "dfl_load_request_duration_seconds", "dfl_load_users"):
        assert f"# TYPE {name.removesuffix('_total')}" in text or f"# TYPE {name}" in text
    assert samples(metrics) == {}


def test_the_requests_locust_counted_are_exported_by_task_rpc_and_outcome(tmp_path: Path) -> None:
    live = LiveCounts()
    live.record("transaction:SubmitTransaction", "ok", 0.004)
    live.record("transaction:SubmitTransaction", "ok", 0.2)
    live.record("transaction:SubmitTransaction", "RESOURCE_EXHAUSTED", 0.01)
    live.record("forged:bad_signature", "ok", 0.03)
    live.users = 7
    path = tmp_path / "live.json"
    live.write(path)
    metrics = OrchestratorMetrics()
    metrics.watch_load(path)
    found = samples(metrics)

    def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(pairs.items()))

    submit = {"task": "transaction", "rpc": "SubmitTransaction"}
    assert found[("dfl_load_requests_total", labels(**submit, outcome="ok"))] == 2
    assert found[("dfl_load_requests_total", labels(**submit, outcome="RESOURCE_EXHAUSTED"))] == 1
    forged = {"task": "forged", "rpc": "bad_signature", "outcome": "ok"}
    assert found[("dfl_load_requests_total", labels(**forged))] == 1
    bucket = "dfl_load_request_duration_seconds_bucket"
    assert found[(bucket, labels(**submit, le="0.005"))] == 1  # 4 ms
    assert found[(bucket, labels(**submit, le="0.01"))] == 2  # and 10 ms: cumulative, le is <=
    assert found[(bucket, labels(**submit, le="0.25"))] == 3
    assert found[(bucket, labels(**submit, le="+Inf"))] == 3
    assert found[("dfl_load_request_duration_seconds_count", labels(**submit))] == 3
    seconds = found[("dfl_load_request_duration_seconds_sum", labels(**submit))]
    assert seconds == pytest.approx(0.214)
    assert found[("dfl_load_users", ())] == 7

    live.record("forged:bad_signature", "ok", 0.03)  # the next write is what the next scrape sees
    live.write(path)
    assert samples(metrics)[("dfl_load_requests_total", labels(**forged))] == 2


def test_a_missing_or_half_written_file_exports_no_samples(tmp_path: Path) -> None:
    metrics = OrchestratorMetrics()
    metrics.watch_load(tmp_path / "absent.json")
    assert samples(metrics) == {}
    broken = tmp_path / "live.json"
    broken.write_text('{"requests": [["transaction", "Sub')
    metrics.watch_load(broken)
    assert samples(metrics) == {}
