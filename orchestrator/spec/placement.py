"""Where the swarm runtime may put each node: Swarm placement constraints, per node or group.

A spec that runs on a multi-host swarm says which testbed nodes go where in Swarm's own terms
(`node.labels.zone==a`, `node.hostname!=gpu1`, `node.role==worker`), so that a user reads the
constraints exactly as `docker service create --constraint` would take them. The other
runtimes have one host and ignore the section. It is None unless written, so that a spec
written before placement existed keeps its canonical JSON and digest.

    placement:
      all: ["node.role==manager"]          # every node
      nodes:
        "0-2": ["node.labels.zone==a"]     # nodes 0, 1 and 2
        "3,5": ["node.labels.zone==b"]
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from orchestrator.spec.errors import Location
from orchestrator.spec.values import Model

# Swarm's grammar: an attribute, == or !=, a value (docker service create --constraint).
_CONSTRAINT = re.compile(
    r"(node\.(id|hostname|role|platform\.os|platform\.arch)|node\.labels\.[\w.-]+"
    r"|engine\.labels\.[\w.-]+)\s*(==|!=)\s*[^\s=!]+"
)
_GROUP = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")


def _check_constraints(constraints: tuple[str, ...]) -> tuple[str, ...]:
    for text in constraints:
        if not _CONSTRAINT.fullmatch(text.strip()):
            raise ValueError(
                f"{text!r} is not a Swarm constraint; write ATTRIBUTE==VALUE or !=, e.g. "
                "node.labels.zone==a, node.hostname!=host2, node.role==worker"
            )
    return tuple(text.strip() for text in constraints)


def group_indices(group: str) -> list[int]:
    """`"0-2,5"` -> [0, 1, 2, 5]."""
    return [index for low, high in _ranges(group) for index in range(low, high + 1)]


class PlacementSpec(Model):
    """Constraints for every node (`all`) and for groups of node indices (`nodes`)."""

    all: tuple[str, ...] = ()
    nodes: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("all")
    @classmethod
    def _all(cls, constraints: tuple[str, ...]) -> tuple[str, ...]:
        return _check_constraints(constraints)

    @field_validator("nodes")
    @classmethod
    def _groups(cls, groups: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for group in groups:
            if not _GROUP.fullmatch(group.replace(" ", "")):
                raise ValueError(
                    f"group {group!r}: name nodes by index, a range or a list: '3', '0-2', '0,4-5'"
                )
            if any(low > high for low, high in _ranges(group)):
                raise ValueError(f"group {group!r}: a range runs low-high, e.g. '0-2'")
        return {group.replace(" ", ""): _check_constraints(cs) for group, cs in groups.items()}

    def problems(self, count: int) -> list[tuple[Location, str]]:
        """Groups naming nodes the spec does not have (the count is another section's)."""
        return [
            (
                ("nodes", group),
                f"names node {max(group_indices(group))}, but nodes.count is {count}",
            )
            for group in self.nodes
            if max(group_indices(group)) >= count
        ]

    def constraints_of(self, index: int) -> list[str]:
        """Every constraint that applies to node `index`, `all` first, each once."""
        found = list(self.all)
        for group, constraints in self.nodes.items():
            if index in group_indices(group):
                found.extend(c for c in constraints if c not in found)
        return found


def _ranges(group: str) -> list[tuple[int, int]]:
    pairs = []
    for part in group.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        pairs.append((int(low), int(high or low)))
    return pairs
