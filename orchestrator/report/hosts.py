"""The report's Hosts section (swarm runtime): which machine ran which node, and what each
machine gave the testbed in memory and CPU.

A researcher sizing a deployment reads this per host, not per node: a host that ran four nodes
needs four nodes' memory. The figures are the nodes' own (each container's cgroup), summed by
the Swarm node the task ran on; a host's other work is not in them.
"""

from __future__ import annotations

from collections import defaultdict

from orchestrator.report.cells import mib, num, table
from orchestrator.report.schema import RunData
from orchestrator.report.summary import RunSummary


def hosts_section(data: RunData, summary: RunSummary) -> str:
    """Empty unless the run says where its nodes ran."""
    hosts = data.info.hosts
    if not hosts:
        return ""
    by_host: dict[str, list[str]] = defaultdict(list)
    for node, host in sorted(hosts.items()):
        by_host[host].append(node)
    rows = []
    for host, names in sorted(by_host.items()):
        nodes = [summary.nodes[name] for name in names if name in summary.nodes]
        peaks = [n.memory_peak_bytes for n in nodes if n.memory_peak_bytes is not None]
        cpu = [n.cgroup_cpu_seconds for n in nodes if n.cgroup_cpu_seconds is not None]
        rows.append(
            (
                host,
                ", ".join(names),
                mib(sum(peaks)) if peaks else "n/a",
                num(sum(cpu)) if cpu else "n/a",
                num(sum(cpu) / data.info.duration_s, 3) if cpu and data.info.duration_s else "n/a",
            )
        )
    text = (
        "## Hosts\n\n"
        "Where Swarm placed each node's task, and the nodes' containers summed per host: memory "
        "at the containers' peaks, and their CPU seconds (with the mean number of cores that "
        "makes over the run).\n\n"
        + table(
            ("host", "nodes", "memory at peaks", "CPU s", "cores"),
            rows,
            numeric="--nnn",
        )
    )
    found = data.info.prometheus_targets
    if found:
        up = sorted(name for name, health in found.items() if health == "up")
        missing = sorted(set(hosts) - set(found))
        text += (
            f"\n- Prometheus found {len(found)} of {len(hosts)} nodes through Swarm's DNS "
            f"(tasks.<service>); {len(up)} answered its last scrape"
            + (f"; not found: {', '.join(missing)}" if missing else "")
            + "\n"
        )
    return text
