"""The Grafana dashboards and their provisioning, and the code that lists and checks their queries.

A renamed metric or a datasource that does not match leaves a panel saying "No data" without any
error, so the dashboards' JSON is checked here against the registries the node and the
orchestrator actually export.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml
from prometheus_client import CollectorRegistry

from node.service.metrics import NodeMetrics
from orchestrator.dashboards import (
    DashboardError,
    PanelQuery,
    dashboard_queries,
    metric_names,
    queries_without_data,
    series_count,
)
from orchestrator.exporter import OrchestratorMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO_ROOT / "dashboards"
PROVISIONING = DASHBOARDS / "grafana" / "provisioning"
DATASOURCE_UID = "prometheus"

# The sample names each metric type exposes, for families that have no sample yet (a labelled
# metric before its first child, as the orchestrator's are until it measures a node).
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels a collapsed row keeps inside it."""
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])


def exported_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


# --- the dashboards -----------------------------------------------------------------------------


def test_there_are_the_two_dashboards() -> None:
    assert [path.name for path in dashboard_files()] == ["blade-fl.json", "dfl-overview.json"]


def test_every_dashboard_has_a_unique_uid_and_title() -> None:
    boards = [load(path) for path in dashboard_files()]
    uids = [board["uid"] for board in boards]
    titles = [board["title"] for board in boards]
    assert all(uids) and len(set(uids)) == len(uids)
    assert all(titles) and len(set(titles)) == len(titles)
    for board in boards:
        assert board["schemaVersion"] >= 36
        panel_ids = [panel["id"] for panel in all_panels(board["panels"])]
        assert len(set(panel_ids)) == len(panel_ids), f"{board['uid']}: duplicate panel ids"


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda path: path.name)
def test_every_panel_has_a_title_a_description_a_query_and_the_prometheus_datasource(
    path: Path,
) -> None:
    panels = [p for p in all_panels(load(path)["panels"]) if p["type"] != "row"]
    assert panels
    for panel in panels:
        title = panel.get("title")
        assert title, f"{path.name}: panel {panel.get('id')} has no title"
        assert len(panel.get("description", "")) > 40, f"{title}: no description worth the name"
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, title
        targets = panel.get("targets") or []
        assert targets and all(t.get("expr") for t in targets), f"{title}: no query"
        for target in targets:
            assert target["datasource"]["uid"] == DATASOURCE_UID, title


def test_every_variable_queries_the_prometheus_datasource() -> None:
    for path in dashboard_files():
        for variable in load(path)["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["datasource"]["uid"] == DATASOURCE_UID, variable["name"]


def test_every_metric_a_dashboard_queries_is_exported_by_a_node_or_the_orchestrator() -> None:
    exported = exported_names(NodeMetrics().registry) | exported_names(
        OrchestratorMetrics().registry
    )
    queries = dashboard_queries(DASHBOARDS)
    referenced = {name for query in queries for name in metric_names(query.expr)}
    assert {"dfl_test_accuracy", "dfl_cpu_seconds_total", "dfl_pow_hashes_total"} <= referenced
    for query in queries:
        missing = metric_names(query.expr) - exported
        assert not missing, f"{query.dashboard}: {query.panel!r} queries unknown {missing}"


def test_the_real_dashboards_yield_ready_to_send_queries() -> None:
    queries = dashboard_queries(DASHBOARDS)
    panels = {(query.dashboard, query.panel) for query in queries}
    # Panels inside the collapsed row are found too.
    assert ("dfl-overview.json", "Gossip latency p50 and p90") in panels
    assert ("blade-fl.json", "Hash rate per node") in panels
    for query in queries:
        assert "$__" not in query.expr and '"$node"' not in query.expr, query
    hash_rate = next(q for q in queries if q.panel == "Hash rate per node")
    assert hash_rate.expr == 'sum by (node) (rate(dfl_pow_hashes_total{node=~".+"}[1m]))'


def test_both_dashboards_have_a_faults_row_and_fault_window_annotations() -> None:
    """The fault panels, and one annotation per fault kind from dfl_fault_active, on the
    Prometheus datasource, naming only metrics the node or the orchestrator export."""
    exported = exported_names(NodeMetrics().registry) | exported_names(
        OrchestratorMetrics().registry
    )
    kinds = ("crash", "pause", "latency", "loss", "partition")
    for path in dashboard_files():
        board = load(path)
        titles = [p["title"] for p in board["panels"]]
        assert "Faults" in titles, path.name
        row = titles.index("Faults")
        queried = {
            name
            for panel in board["panels"][row + 1 : row + 3]
            for target in panel["targets"]
            for name in metric_names(target["expr"])
        }
        assert {"dfl_fault_active", "dfl_network_fault_messages_total"} <= queried, path.name
        faults = [a for a in board["annotations"]["list"] if a["name"].startswith("Fault: ")]
        assert [a["name"] for a in faults] == [f"Fault: {kind}" for kind in kinds], path.name
        for annotation, kind in zip(faults, kinds, strict=True):
            assert annotation["enable"] and not annotation["hide"], annotation["name"]
            assert annotation["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
            expr = annotation["target"]["expr"]
            assert metric_names(expr) == {"dfl_fault_active"} <= exported, expr
            assert f'kind="{kind}"' in expr and 'node=~"$node"' in expr, expr
            assert annotation["tagKeys"] == "kind,node" and annotation["useValueForTime"] is False
        assert len({a["iconColor"] for a in faults}) == len(kinds), "one colour per kind"


# --- dashboard_queries and metric_names ---------------------------------------------------------


def write_dashboard(directory: Path, panels: list[dict[str, Any]], name: str = "d.json") -> None:
    board = {
        "uid": "t",
        "title": "T",
        "panels": panels,
        "templating": {
            "list": [
                {"name": "node", "type": "query", "includeAll": True, "allValue": ".+"},
                {"name": "window", "type": "constant", "query": "5m"},
            ]
        },
    }
    (directory / name).write_text(json.dumps(board))


def test_dashboard_queries_reads_nested_rows_and_fills_in_variables(tmp_path: Path) -> None:
    write_dashboard(
        tmp_path,
        [
            {"type": "timeseries", "title": "Top", "targets": [{"expr": "dfl_peers"}]},
            {
                "type": "row",
                "title": "Collapsed",
                "collapsed": True,
                "panels": [
                    {
                        "type": "timeseries",
                        "title": "Nested",
                        "targets": [
                            {"expr": 'rate(dfl_blocks_total{node=~"$node"}[$__rate_interval])'},
                            {"expr": "increase(dfl_forks_total[${window}])"},
                            {"expr": "dfl_hidden", "hide": True},
                        ],
                    }
                ],
            },
        ],
    )
    (tmp_path / "notes.txt").write_text("not a dashboard")
    nested = tmp_path / "grafana"
    nested.mkdir()
    write_dashboard(nested, [{"type": "text", "title": "Ignored"}])

    assert dashboard_queries(tmp_path) == [
        PanelQuery("d.json", "Top", "dfl_peers"),
        PanelQuery("d.json", "Nested", 'rate(dfl_blocks_total{node=~".+"}[1m])'),
        PanelQuery("d.json", "Nested", "increase(dfl_forks_total[5m])"),
    ]


def test_a_panel_without_a_query_names_the_file_and_the_panel(tmp_path: Path) -> None:
    write_dashboard(
        tmp_path,
        [
            {
                "type": "row",
                "title": "Row",
                "panels": [{"type": "timeseries", "title": "Forgotten", "targets": []}],
            }
        ],
        name="broken.json",
    )
    with pytest.raises(DashboardError, match=r"broken\.json.*'Forgotten'.*no query"):
        dashboard_queries(tmp_path)


def test_an_empty_expression_counts_as_no_query(tmp_path: Path) -> None:
    write_dashboard(tmp_path, [{"type": "stat", "title": "Blank", "targets": [{"expr": " "}]}])
    with pytest.raises(DashboardError, match="'Blank'"):
        dashboard_queries(tmp_path)


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"panels": [')
    with pytest.raises(DashboardError, match=r"bad\.json: invalid JSON"):
        dashboard_queries(tmp_path)


def test_an_unknown_variable_is_an_error_but_label_replace_groups_are_not(tmp_path: Path) -> None:
    write_dashboard(
        tmp_path,
        [
            {
                "type": "timeseries",
                "title": "Groups",
                "targets": [{"expr": 'label_replace(dfl_peers, "n", "$1", "node", "(.+)")'}],
            }
        ],
    )
    assert (
        dashboard_queries(tmp_path)[0].expr == 'label_replace(dfl_peers, "n", "$1", "node", "(.+)")'
    )
    write_dashboard(
        tmp_path,
        [{"type": "timeseries", "title": "Typo", "targets": [{"expr": "dfl_peers{x=~'$nod'}"}]}],
    )
    with pytest.raises(DashboardError, match=r"'Typo'.*\$nod"):
        dashboard_queries(tmp_path)


def test_metric_names_finds_dfl_identifiers_but_not_strings_or_labels() -> None:
    expr = (
        "sum by (node) (rate(dfl_mining_seconds_sum[1m])) / sum by (node) "
        '(rate(dfl_mining_seconds_count{job="dfl_fake"}[1m])) * on (peer) group_left (peer_node) '
        'label_replace(dfl_info, "peer", "$1", "address", "(.+)")'
    )
    assert metric_names(expr) == {"dfl_mining_seconds_sum", "dfl_mining_seconds_count", "dfl_info"}
    assert metric_names("vector(1)") == set()


# --- series_count against a stand-in for Prometheus's HTTP API ----------------------------------


# What the stand-in answers to each query: (HTTP status, JSON body), as Prometheus would.
PROMETHEUS_ANSWERS: dict[str, tuple[int, dict[str, Any]]] = {
    "up": (
        200,
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [
                    {"metric": {"node": "node0"}, "value": [1, "1"]},
                    {"metric": {"node": "node1"}, "value": [1, "NaN"]},
                ],
            },
        },
    ),
    "absent_metric": (
        200,
        {"status": "success", "data": {"resultType": "vector", "result": []}},
    ),
    "scalar(1)": (
        200,
        {"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}},
    ),
    "rate(": (
        400,
        {
            "status": "error",
            "errorType": "bad_data",
            "error": 'invalid parameter "query": 1:6: parse error: unclosed left parenthesis',
        },
    ),
}


class FakePrometheus(BaseHTTPRequestHandler):
    """Answers /api/v1/query like Prometheus: by the query, one of a few canned results."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path != "/api/v1/query":
            self.send_error(404)
            return
        query = parse_qs(url.query)["query"][0]
        status, answer = PROMETHEUS_ANSWERS.get(
            query, (500, {"status": "error", "error": "unexpected"})
        )
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_series_count_against_a_fake_prometheus_api(fake_prometheus: str) -> None:
    assert series_count(fake_prometheus, "up") == 2
    assert series_count(fake_prometheus, "absent_metric") == 0
    assert series_count(fake_prometheus, "scalar(1)") == 1
    with pytest.raises(DashboardError, match=r"bad_data: .*unclosed left parenthesis"):
        series_count(fake_prometheus, "rate(")


def test_queries_without_data_against_a_fake_prometheus_api(fake_prometheus: str) -> None:
    full = PanelQuery("d.json", "Full", "up")
    empty = PanelQuery("d.json", "Empty", "absent_metric")
    assert queries_without_data(fake_prometheus, [full, empty]) == [empty]


def test_series_count_lets_a_connection_error_through() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    port = server.server_port
    server.server_close()  # nothing listens there any more
    with pytest.raises(OSError):
        series_count(f"http://127.0.0.1:{port}", "up", timeout=2)


# --- Grafana provisioning -----------------------------------------------------------------------


def test_the_datasource_is_the_default_prometheus_with_the_uid_the_panels_name() -> None:
    config = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert source["name"] == "Prometheus"
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True


def test_the_dashboard_provider_reads_the_mounted_dashboards_folder() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert provider["options"]["foldersFromFilesStructure"] is False
