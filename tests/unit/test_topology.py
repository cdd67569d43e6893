"""Peer graphs: the fixed shapes, the seeded random graph, and explicit edge lists."""

from __future__ import annotations

from collections import Counter

import pytest

from node import seeds
from node.seeds import Purpose
from orchestrator.topology import build_edges, is_connected, neighbours


def degrees(edges: list[tuple[int, int]], n: int) -> list[int]:
    count = Counter(node for edge in edges for node in edge)
    return [count[i] for i in range(n)]


def assert_well_formed(edges: list[tuple[int, int]], n: int) -> None:
    assert edges == sorted(edges)
    assert len(set(edges)) == len(edges)
    assert all(0 <= u < v < n for u, v in edges)


@pytest.mark.parametrize("n", [3, 4, 7, 10])
def test_full_mesh_links_every_pair(n: int) -> None:
    edges = build_edges("full", n, seed=0)
    assert_well_formed(edges, n)
    assert len(edges) == n * (n - 1) // 2
    assert degrees(edges, n) == [n - 1] * n


@pytest.mark.parametrize("n", [3, 4, 7, 10])
def test_ring_gives_every_node_two_neighbours(n: int) -> None:
    edges = build_edges("ring", n, seed=0)
    assert_well_formed(edges, n)
    assert len(edges) == n
    assert degrees(edges, n) == [2] * n
    assert (0, n - 1) in edges


@pytest.mark.parametrize("n", [3, 4, 7, 10])
def test_star_has_node_zero_as_hub(n: int) -> None:
    edges = build_edges("star", n, seed=0)
    assert_well_formed(edges, n)
    assert len(edges) == n - 1
    assert degrees(edges, n) == [n - 1] + [1] * (n - 1)


@pytest.mark.parametrize("n", [3, 4, 7, 10])
def test_line_has_two_ends(n: int) -> None:
    edges = build_edges("line", n, seed=0)
    assert_well_formed(edges, n)
    assert len(edges) == n - 1
    assert degrees(edges, n) == [1] + [2] * (n - 2) + [1]
    assert is_connected(edges, n)


def test_tiny_graphs() -> None:
    for kind in ("full", "ring", "star", "line"):
        assert build_edges(kind, 1, seed=0) == []
    assert build_edges("ring", 2, seed=0) == [(0, 1)]  # not the same edge twice


@pytest.mark.parametrize(
    ("n", "degree"), [(10, 3), (20, 4), (30, 2), (50, 8), (12, 6), (6, 5), (4, 2)]
)
def test_random_graph_is_connected_and_regular(n: int, degree: int) -> None:
    edges = build_edges("random", n, degree=degree, seed=7)
    assert_well_formed(edges, n)
    assert is_connected(edges, n)
    assert degrees(edges, n) == [degree] * n
    assert len(edges) == n * degree // 2


@pytest.mark.parametrize(("n", "degree"), [(9, 3), (11, 5), (3, 1)])
def test_random_graph_with_odd_degree_sum_gives_one_node_one_more(n: int, degree: int) -> None:
    edges = build_edges("random", n, degree=degree, seed=7)
    assert is_connected(edges, n)
    assert sorted(degrees(edges, n)) == [degree] * (n - 1) + [degree + 1]


def test_random_graph_is_connected_for_many_seeds() -> None:
    for seed in range(40):
        edges = build_edges("random", 16, degree=3, seed=seed)
        assert is_connected(edges, 16), seed
        assert degrees(edges, 16) == [3] * 16


def test_random_graph_depends_on_the_seed_only() -> None:
    first = build_edges("random", 20, degree=4, seed=1)
    assert build_edges("random", 20, degree=4, seed=1) == first
    assert build_edges("random", 20, degree=4, seed=2) != first
    assert build_edges("random", 20, degree=2, seed=1) != build_edges(
        "random", 20, degree=2, seed=2
    )


def test_random_graph_draws_from_the_topology_stream_of_the_seed() -> None:
    """Degree 2 is one cycle through a permutation: the first draw of the TOPOLOGY stream."""
    order = [int(i) for i in seeds.stream(5, Purpose.TOPOLOGY).permutation(9)]
    cycle = sorted({tuple(sorted((order[i], order[(i + 1) % 9]))) for i in range(9)})
    assert build_edges("random", 9, degree=2, seed=5) == cycle


def test_random_graph_is_not_just_a_fixed_shape() -> None:
    """Over seeds, a node's neighbours vary (a ring with chords at fixed places would not)."""
    neighbour_sets = {
        tuple(neighbours(build_edges("random", 12, degree=3, seed=s), 12)[0]) for s in range(10)
    }
    assert len(neighbour_sets) > 3


@pytest.mark.parametrize(
    ("n", "degree", "needle"),
    [
        (5, 0, "degree in 1..4"),
        (5, 5, "degree in 1..4"),
        (1, 1, "degree in 1..0"),
        (5, 1, "degree 1 cannot connect 5 nodes"),
    ],
)
def test_impossible_random_degree_is_an_error(n: int, degree: int, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build_edges("random", n, degree=degree, seed=0)


def test_arguments_that_do_not_fit_the_kind_are_errors() -> None:
    with pytest.raises(ValueError, match="needs a degree"):
        build_edges("random", 5, seed=0)
    with pytest.raises(ValueError, match="degree is for the random topology only"):
        build_edges("full", 5, degree=2, seed=0)
    with pytest.raises(ValueError, match="needs an edge list"):
        build_edges("edges", 5, seed=0)
    with pytest.raises(ValueError, match="edge list is for the edges topology only"):
        build_edges("ring", 5, edges=[[0, 1]], seed=0)
    with pytest.raises(ValueError, match="unknown topology 'mesh'"):
        build_edges("mesh", 5, seed=0)
    with pytest.raises(ValueError, match="at least one node"):
        build_edges("full", 0, seed=0)


def test_explicit_edges_are_normalised_and_sorted() -> None:
    edges = build_edges("edges", 4, edges=[[3, 2], [1, 0], [2, 1]], seed=0)
    assert edges == [(0, 1), (1, 2), (2, 3)]


def test_disconnected_explicit_edges_name_the_unreachable_nodes() -> None:
    with pytest.raises(ValueError, match=r"not connected: node\(s\) 2, 3 cannot be reached"):
        build_edges("edges", 4, edges=[[0, 1], [2, 3]], seed=0)
    with pytest.raises(ValueError, match=r"node\(s\) 4 cannot be reached"):
        build_edges("edges", 5, edges=[[0, 1], [1, 2], [2, 3]], seed=0)


@pytest.mark.parametrize(
    ("edges", "needle"),
    [
        ([[0, 1], [1, 1]], "self loop"),
        ([[0, 1], [1, 4]], "outside 0..3"),
        ([[0, -1]], "outside 0..3"),
        ([[0, 1], [1, 0]], r"\[1, 0\] repeats \[0, 1\]"),
        ([[0, 1, 2]], "pair of node indices"),
    ],
)
def test_bad_explicit_edges_are_errors(edges: list[list[int]], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        build_edges("edges", 4, edges=edges, seed=0)


def test_neighbours_and_connectivity() -> None:
    edges = [(0, 1), (0, 3), (1, 2)]
    assert neighbours(edges, 5) == [[1, 3], [0, 2], [1], [0], []]
    assert not is_connected(edges, 5)
    assert is_connected(edges, 4)
    assert is_connected([], 1)
    assert not is_connected([], 2)
