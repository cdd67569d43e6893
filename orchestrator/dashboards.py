"""The PromQL behind the Grafana dashboards, read from their JSON and checked against Prometheus.

A dashboard is only as good as its queries, and a query that names a metric that was renamed, or
that filters down to nothing, fails silently: the panel just says "No data". So the queries are
read from the same JSON files Grafana provisions, their metric names can be checked against the
registries in a unit test, and a running stack can ask its Prometheus which of them come back
empty.

Grafana fills in template variables before it sends a query; Prometheus does not know them. The
expressions returned here have them filled in the way Grafana would for the default view (every
node, a one-minute rate window), so that they can be sent to Prometheus as they are.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Grafana's built-in interval variables. `$__rate_interval` is at least four scrape intervals
# (one minute with Grafana's default 15 s); one minute is also what the dashboards are designed
# for and what a rate over 5 s scrapes needs to be smooth.
BUILTIN_VARIABLES: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "5m",
}

# Grafana's three spellings: $name, ${name} or ${name:format}, and the deprecated [[name]].
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_METRIC = re.compile(r"\bdfl_\w+")


class DashboardError(ValueError):
    """A dashboard that cannot be read, a panel without a query, or an error from Prometheus."""


@dataclass(frozen=True)
class PanelQuery:
    """One query of one panel, ready to send to Prometheus.

    `dashboard` is the file's name, `panel` the panel's title, `expr` the PromQL with every
    template variable filled in.
    """

    dashboard: str
    panel: str
    expr: str


def dashboard_queries(directory: Path) -> list[PanelQuery]:
    """Every query of every panel (rows' nested panels included) of every `*.json` in `directory`.

    Only files directly in `directory` count, as for Grafana's file provider with
    `foldersFromFilesStructure: false`: the provisioning YAML lives in subfolders.
    """
    queries: list[PanelQuery] = []
    for path in sorted(directory.glob("*.json")):
        try:
            dashboard = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DashboardError(f"{path.name}: invalid JSON: {exc}") from exc
        if not isinstance(dashboard, dict):
            raise DashboardError(f"{path.name}: not a dashboard (a JSON object)")
        variables = _variables(path.name, dashboard)
        for panel in _panels(dashboard.get("panels", [])):
            title = panel.get("title") or f"panel id {panel.get('id')}"
            exprs = [
                str(target.get("expr", "")).strip()
                for target in panel.get("targets") or []
                if not target.get("hide")
            ]
            if not exprs or not all(exprs):
                raise DashboardError(f"{path.name}: panel {title!r} has no query")
            for expr in exprs:
                where = f"{path.name}: panel {title!r}"
                queries.append(PanelQuery(path.name, title, _substitute(expr, variables, where)))
    return queries


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` references: every identifier starting with `dfl_`.

    String literals are skipped, so a label value or a `label_replace` argument that happens to
    start with `dfl_` is not taken for a metric.
    """
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def series_count(prometheus_url: str, expr: str, timeout: float = 10.0) -> int:
    """How many series an instant query of `expr` returns now (a scalar or string counts as 1).

    Connection errors propagate as they are; an answer from Prometheus that is an error (a bad
    expression, a timeout inside Prometheus) raises DashboardError with Prometheus's message.
    """
    url = f"{prometheus_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            body = reply.read()
    except urllib.error.HTTPError as exc:
        # Prometheus answers a bad query with 400 or 422 and its usual JSON error body.
        body = exc.read()
        answer = _json_or_none(body)
        if answer is None:
            snippet = body[:200].decode("utf-8", "replace")
            raise DashboardError(f"HTTP {exc.code} from {url}: {snippet}") from exc
    else:
        answer = _json_or_none(body)
        if answer is None:
            raise DashboardError(f"not a Prometheus API answer from {url}: {body[:200]!r}")
    if answer.get("status") != "success":
        kind = answer.get("errorType", "error")
        raise DashboardError(f"Prometheus refused {expr!r}: {kind}: {answer.get('error')}")
    data = answer.get("data") or {}
    if data.get("resultType") in ("vector", "matrix"):
        return len(data.get("result") or [])
    return 1


def queries_without_data(prometheus_url: str, queries: list[PanelQuery]) -> list[PanelQuery]:
    """The queries that Prometheus answers with no series: their panels would say "No data"."""
    return [query for query in queries if series_count(prometheus_url, query.expr) == 0]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel that can hold queries; a row's own panels are where it keeps them collapsed."""
    for panel in panels:
        if panel.get("type") == "row":
            yield from _panels(panel.get("panels") or [])
        else:
            yield panel


def _variables(filename: str, dashboard: dict[str, Any]) -> dict[str, str]:
    """The value each template variable takes in the default view.

    A variable with an "All" option stands for every value (its `allValue`, such as `.+`, which a
    `=~` matcher takes as it is); a constant or custom variable for its current value.
    """
    values = dict(BUILTIN_VARIABLES)
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        name = variable.get("name")
        if not name:
            raise DashboardError(f"{filename}: a template variable has no name")
        current = (variable.get("current") or {}).get("value")
        if variable.get("includeAll") and variable.get("allValue"):
            values[name] = variable["allValue"]
        elif variable.get("type") in ("constant", "custom", "textbox", "interval") and isinstance(
            current, str
        ):
            values[name] = current
        elif variable.get("type") == "constant" and isinstance(variable.get("query"), str):
            values[name] = variable["query"]
        # Anything else is only an error if a query uses it: see _substitute.
    return values


def _substitute(expr: str, variables: Mapping[str, str], where: str) -> str:
    """`expr` with its template variables filled in; an unknown one is an error.

    `$1` and the like are left alone: they are label_replace's capture groups, which Grafana
    does not touch either.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name.isdigit():
            return match.group(0)
        if name not in variables:
            raise DashboardError(f"{where}: unknown template variable ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(value, expr)


def _json_or_none(body: bytes) -> dict[str, Any] | None:
    try:
        answer = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return answer if isinstance(answer, dict) else None
