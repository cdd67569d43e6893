"""Who talks to whom: the undirected peer graph of an experiment, as a sorted edge list.

Every runtime wires its nodes from the same list, so an experiment has one graph whatever runs
it. Edges are `(low, high)` pairs of node indices, sorted, without self loops or duplicates.

Kinds:

- `full`: every pair (n(n-1)/2 edges);
- `ring`: i -- i+1 mod n (n edges; with fewer than 3 nodes it is a line);
- `star`: node 0 is the hub (n-1 edges);
- `line`: i -- i+1 (n-1 edges);
- `random`: a connected random graph in which every node has `degree` neighbours (one node has
  one more when n x degree is odd, since the degrees must sum to an even number), so the
  average degree is the requested one. See `random_edges` for the algorithm;
- `edges`: an explicit list, checked for range, self loops, repeats and connectivity.

Every kind must give a connected graph: a gossip protocol cannot reach a node without a path to
it, and an experiment that silently splits in two measures nothing useful.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence

import numpy as np

from node import seeds
from node.seeds import Purpose

KINDS = ("full", "ring", "star", "line", "random", "edges")

Edge = tuple[int, int]

# Random regular graphs with degree >= 3 are connected with high probability and the pairing
# below rarely gets stuck, so a handful of attempts is plenty; the cap turns a bad case into an
# error instead of a hang.
_ATTEMPTS = 200


def build_edges(
    kind: str,
    n: int,
    *,
    degree: int | None = None,
    edges: Iterable[Sequence[int]] | None = None,
    seed: int,
) -> list[Edge]:
    """The sorted, undirected edge list of a topology of `n` nodes; ValueError if impossible.

    `degree` is for `random` only and `edges` for `edges` only; `seed` matters for `random` only
    (it is required anyway, so that a call site cannot forget it when it switches kinds).
    """
    if n < 1:
        raise ValueError(f"a topology needs at least one node, got {n}")
    if kind not in KINDS:
        raise ValueError(f"unknown topology {kind!r}; known: {', '.join(KINDS)}")
    if degree is not None and kind != "random":
        raise ValueError(f"degree is for the random topology only, not {kind!r}")
    if edges is not None and kind != "edges":
        raise ValueError(f"an edge list is for the edges topology only, not {kind!r}")
    if kind == "full":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    if kind == "ring":
        return _normalise((i, (i + 1) % n) for i in range(n)) if n >= 3 else _line(n)
    if kind == "star":
        return [(0, i) for i in range(1, n)]
    if kind == "line":
        return _line(n)
    if kind == "random":
        if degree is None:
            raise ValueError("the random topology needs a degree")
        return random_edges(n, degree, seed)
    if edges is None:
        raise ValueError("the edges topology needs an edge list")
    return explicit_edges(n, edges)


def _line(n: int) -> list[Edge]:
    return [(i, i + 1) for i in range(n - 1)]


def _normalise(pairs: Iterable[Edge]) -> list[Edge]:
    return sorted({(min(u, v), max(u, v)) for u, v in pairs})


def explicit_edges(n: int, edges: Iterable[Sequence[int]]) -> list[Edge]:
    """An explicit edge list, checked: indices in range, no self loops, no repeats, connected.

    A repeat (also `[1, 0]` after `[0, 1]`) is an error rather than merged, because in a
    hand-written list it is usually a typo for another edge.
    """
    seen: dict[Edge, Sequence[int]] = {}
    for edge in edges:
        if len(edge) != 2:
            raise ValueError(f"edge {list(edge)} must be a pair of node indices")
        u, v = (int(x) for x in edge)
        if not (0 <= u < n and 0 <= v < n):
            raise ValueError(f"edge {[u, v]} names a node outside 0..{n - 1}")
        if u == v:
            raise ValueError(f"edge {[u, v]} is a self loop")
        key = (min(u, v), max(u, v))
        if key in seen:
            raise ValueError(f"edge {[u, v]} repeats {list(seen[key])}")
        seen[key] = [u, v]
    result = sorted(seen)
    unreachable = _unreachable(result, n)
    if unreachable:
        raise ValueError(
            f"the edge list is not connected: node(s) {_short(unreachable)} cannot be reached "
            f"from node 0"
        )
    return result


def random_edges(n: int, degree: int, seed: int) -> list[Edge]:
    """A connected random graph where every node has `degree` neighbours (one node +1 if odd).

    The algorithm is the pairing (configuration) model with the Steger-Wormald refinement, as in
    networkx's `random_regular_graph`: each node gets `degree` stubs; shuffle the open stubs,
    pair them off two by two, keep every pair that is neither a self loop nor an edge we already
    have, and shuffle again the stubs of the rejected pairs, until none are left; restart when
    the open stubs admit no valid pair at all. The result is then checked for connectivity and
    drawn again if it is split. Plain rejection sampling (restart on the first bad pair) would
    almost never finish for degrees above 6 or so.

    Degree 2 is special: a random 2-regular graph is usually a union of cycles, so it is drawn
    directly as one cycle through a random permutation of the nodes. Degree n-1 is the full mesh.
    """
    if not 1 <= degree <= n - 1:
        raise ValueError(
            f"a random topology of {n} node(s) needs a degree in 1..{n - 1}, not {degree}"
        )
    if degree == 1 and n > 3:
        raise ValueError(f"degree 1 cannot connect {n} nodes (at most 3); use 2 or more")
    rng = seeds.stream(seed, Purpose.TOPOLOGY)
    if degree == n - 1:
        return build_edges("full", n, seed=seed)
    if degree == 2:
        order = [int(i) for i in rng.permutation(n)]
        return _normalise((order[i], order[(i + 1) % n]) for i in range(n))
    degrees = [degree] * n
    if n * degree % 2:
        degrees[int(rng.integers(n))] += 1
    for _ in range(_ATTEMPTS):
        edges = _pair_stubs(degrees, rng)
        if edges is not None and not _unreachable(edges, n):
            return edges
    raise ValueError(
        f"could not draw a connected random graph of {n} nodes with degree {degree} "
        f"in {_ATTEMPTS} attempts; try another degree or seed"
    )


def _pair_stubs(degrees: Sequence[int], rng: np.random.Generator) -> list[Edge] | None:
    """One attempt of the pairing model; None when it got stuck."""
    edges: set[Edge] = set()
    stubs = [node for node, d in enumerate(degrees) for _ in range(d)]
    while stubs:
        rng.shuffle(stubs)
        rejected: list[int] = []
        for u, v in zip(stubs[::2], stubs[1::2], strict=True):
            key = (min(u, v), max(u, v))
            if u != v and key not in edges:
                edges.add(key)
            else:
                rejected += [u, v]
        if rejected and not _pairable(rejected, edges):
            return None
        stubs = rejected
    return sorted(edges)


def _pairable(stubs: Sequence[int], edges: set[Edge]) -> bool:
    """Whether at least one valid pair (distinct nodes, not yet linked) remains among `stubs`."""
    nodes = sorted(set(stubs))
    return any((u, v) not in edges for i, u in enumerate(nodes) for v in nodes[i + 1 :])


def neighbours(edges: Iterable[Edge], n: int) -> list[list[int]]:
    """Per node, its sorted neighbours."""
    adjacency: dict[int, set[int]] = defaultdict(set)
    for u, v in edges:
        adjacency[u].add(v)
        adjacency[v].add(u)
    return [sorted(adjacency[i]) for i in range(n)]


def _unreachable(edges: Iterable[Edge], n: int) -> list[int]:
    adjacency = neighbours(edges, n)
    seen = {0}
    queue = deque([0])
    while queue:
        for peer in adjacency[queue.popleft()]:
            if peer not in seen:
                seen.add(peer)
                queue.append(peer)
    return [i for i in range(n) if i not in seen]


def is_connected(edges: Iterable[Edge], n: int) -> bool:
    """Whether every one of the `n` nodes can reach every other (one node is connected)."""
    return n <= 1 or not _unreachable(edges, n)


def _short(nodes: Sequence[int], limit: int = 10) -> str:
    text = ", ".join(str(i) for i in nodes[:limit])
    return text + (f", ... ({len(nodes)} in all)" if len(nodes) > limit else "")
