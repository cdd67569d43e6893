"""Every shipped aggregator against hand-computed results, and the plugin loader's errors."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from node.learning.aggregation import (
    ENTRY_POINT_GROUP,
    AggregatorError,
    CheckedAggregator,
    ReceivedModel,
    load_aggregator,
)
from node.learning.aggregators import Krum, sorted_columns


def vec(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def got(model: np.ndarray, accuracy: float = 0.5, generator: str = "x") -> ReceivedModel:
    return ReceivedModel(model=model, accuracy=accuracy, generator=generator)


def run(name: str, current, received, reputation=None, **options) -> np.ndarray:
    out = load_aggregator(name, **options).update_model(
        current, 0.9, received, {} if reputation is None else reputation
    )
    assert out.dtype == np.float32 and out.shape == current.shape
    return out


# --- FedAvg and HalfFedAvg (eq. 2) -----------------------------------------------------------


def test_fedavg_is_the_mean_of_the_received_models_without_our_own() -> None:
    out = run("fedavg", vec(100, 100, 100), [got(vec(1, 2, 3)), got(vec(3, 4, 5))])
    assert out.tolist() == [2.0, 3.0, 4.0]


def test_half_fedavg_gives_our_model_half_the_weight() -> None:
    received = [got(vec(2, 4, 0)), got(vec(4, 0, 0))]  # mean (3, 2, 0)
    assert run("half-fedavg", vec(0, 0, 8), received).tolist() == [1.5, 1.0, 4.0]


@pytest.mark.parametrize(
    "name", ["fedavg", "half-fedavg", "reputation-0.05", "median", "trimmed-mean", "krum"]
)
def test_with_nothing_received_the_model_stays(name: str) -> None:
    current = vec(1, 2)
    out = run(name, current, [])
    assert out.tolist() == [1.0, 2.0]
    assert out is not current


# --- Reputation (eq. 3-4) --------------------------------------------------------------------


def test_reputation_weights_by_reputation_times_accuracy_and_penalises_the_worst() -> None:
    reputation = {"A": 1.0, "B": 0.5}  # C is new: starts at 1.0
    received = [
        got(vec(4, 0), 0.8, "A"),  # weight 1.0 x 0.8 = 0.8 -> 1/2
        got(vec(0, 4), 0.8, "B"),  # weight 0.5 x 0.8 = 0.4 -> 1/4
        got(vec(8, 8), 0.4, "C"),  # weight 1.0 x 0.4 = 0.4 -> 1/4
    ]
    # weighted mean = (2, 0) + (0, 1) + (2, 2) = (4, 3); next = ((0, 1) + (4, 3)) / 2
    out = run("reputation-0.05", vec(0, 1), received, reputation)
    assert out.tolist() == [2.0, 2.0]
    assert reputation == {"A": 1.0, "B": 0.5, "C": pytest.approx(0.95)}


def test_every_sender_tied_for_the_lowest_accuracy_loses_the_penalty() -> None:
    reputation = {"A": 1.0, "B": 0.5, "C": 0.7}
    received = [got(vec(1), 0.3, "A"), got(vec(1), 0.3, "B"), got(vec(1), 0.9, "C")]
    run("reputation-0.05", vec(1), received, reputation)
    assert reputation == pytest.approx({"A": 0.95, "B": 0.45, "C": 0.7})


def test_a_sender_with_two_tied_models_is_penalised_once() -> None:
    reputation = {"A": 1.0}
    received = [got(vec(1), 0.3, "A"), got(vec(1), 0.3, "A"), got(vec(1), 0.9, "B")]
    run("reputation-0.05", vec(1), received, reputation)
    assert reputation == pytest.approx({"A": 0.95, "B": 1.0})


def test_reputation_stops_at_zero() -> None:
    reputation = {"A": 0.02, "B": 0.0}
    received = [got(vec(1), 0.1, "A"), got(vec(1), 0.1, "B"), got(vec(1), 0.5, "C")]
    run("reputation-0.05", vec(1), received, reputation)
    assert reputation == {"A": 0.0, "B": 0.0, "C": 1.0}


def test_all_zero_weights_fall_back_to_half_fedavg() -> None:
    reputation = {"A": 0.0, "B": 0.0}
    received = [got(vec(2, 0), 0.9, "A"), got(vec(0, 6), 0.4, "B")]  # mean (1, 3)
    out = run("reputation-0.05", vec(3, 1), received, reputation)
    assert out.tolist() == [2.0, 2.0]
    assert out.tolist() == run("half-fedavg", vec(3, 1), received).tolist()
    assert reputation == {"A": 0.0, "B": 0.0}


def test_zero_accuracies_also_fall_back_to_half_fedavg() -> None:
    received = [got(vec(2), 0.0, "A"), got(vec(4), 0.0, "B")]
    assert run("reputation-0.05", vec(0), received, {}).tolist() == [1.5]


def test_the_weights_use_the_reputation_from_before_this_update() -> None:
    # Had B's penalty come first, B's weight would be 0 and the result exactly 2.0.
    reputation = {"A": 1.0, "B": 0.05}
    received = [got(vec(4), 0.5, "A"), got(vec(0), 0.25, "B")]
    # weights 0.5 and 0.0125 -> (4 * 0.5) / 0.5125 = 3.9024...; next = (0 + 3.9024) / 2
    out = run("reputation-0.05", vec(0), received, reputation)
    assert out[0] == pytest.approx(0.5 * 4 * 0.5 / 0.5125, rel=1e-6)
    assert reputation["B"] == 0.0


def test_the_penalty_is_configurable_and_self_accuracy_is_ignored() -> None:
    reputation: dict = {}
    received = [got(vec(1), 0.2, "A"), got(vec(3), 0.6, "B")]
    aggregator = load_aggregator("reputation", penalty=0.2)
    low = aggregator.update_model(vec(0), 0.0, received, dict(reputation))
    high = aggregator.update_model(vec(0), 1.0, received, reputation)
    assert low.tolist() == high.tolist()
    assert reputation == pytest.approx({"A": 0.8, "B": 1.0})
    with pytest.raises(AggregatorError, match="penalty"):
        load_aggregator("reputation", penalty=-1)


def test_generators_may_be_bytes_addresses() -> None:
    reputation = {b"\x01" * 32: 1.0}
    received = [ReceivedModel(vec(1), 0.1, b"\x01" * 32), ReceivedModel(vec(1), 0.2, b"\x02" * 32)]
    run("reputation-0.01", vec(1), received, reputation)
    assert reputation == pytest.approx({b"\x01" * 32: 0.99, b"\x02" * 32: 1.0})


# --- Robust rules ----------------------------------------------------------------------------

ROBUST_CURRENT = vec(0, 0)
ROBUST_RECEIVED = [got(vec(1, 5)), got(vec(2, -3)), got(vec(100, 1)), got(vec(4, 2))]
# per coordinate, with our own model: x = 0, 1, 2, 100, 4 and y = 0, 5, -3, 1, 2


def test_coordinate_median() -> None:
    assert run("median", ROBUST_CURRENT, ROBUST_RECEIVED).tolist() == [2.0, 1.0]
    # without our own model: x = 1, 2, 100, 4 -> (2 + 4) / 2; y = 5, -3, 1, 2 -> (1 + 2) / 2
    out = run("median", ROBUST_CURRENT, ROBUST_RECEIVED, include_current=False)
    assert out.tolist() == [3.0, 1.5]


def test_trimmed_mean_drops_the_extremes_per_coordinate() -> None:
    # n = 5, trim 0.2 -> one from each end: x -> 1, 2, 4; y -> 0, 1, 2
    out = run("trimmed-mean", ROBUST_CURRENT, ROBUST_RECEIVED)
    assert out.tolist() == pytest.approx([7 / 3, 1.0])
    # trim 0 is the plain mean of all five
    out = run("trimmed-mean", ROBUST_CURRENT, ROBUST_RECEIVED, trim_fraction=0.0)
    assert out.tolist() == pytest.approx([107 / 5, 1.0])


KRUM_RECEIVED = [got(vec(1, 0)), got(vec(0, 1)), got(vec(10, 10)), got(vec(0.5, 0.5))]


def test_krum_scores_by_hand() -> None:
    models = [vec(0, 0)] + [r.model for r in KRUM_RECEIVED]
    # n = 5, f = 1: sum of the 2 smallest squared distances to the others
    # (0,0): 1, 1, 200, 0.5 -> 1.5; (1,0): 1, 2, 181, 0.5 -> 1.5; (0,1): likewise 1.5
    # (10,10): 200, 181, 181, 180.5 -> 361.5; (0.5,0.5): 0.5, 0.5, 0.5, 180.5 -> 1.0
    assert Krum(f=1).scores(models).tolist() == pytest.approx([1.5, 1.5, 1.5, 361.5, 1.0])


def test_krum_picks_the_best_scored_model_and_multi_krum_averages_the_best() -> None:
    assert run("krum", vec(0, 0), KRUM_RECEIVED).tolist() == [0.5, 0.5]
    # multi 3: (0.5,0.5), then the ties in order (0,0) and (1,0)
    out = run("krum", vec(0, 0), KRUM_RECEIVED, multi=3)
    assert out.tolist() == pytest.approx([0.5, 0.5 / 3])


def test_krum_never_selects_the_outlier_even_when_it_is_ours() -> None:
    out = run("krum", vec(10, 10), [got(vec(0, 0)), got(vec(0.1, 0)), got(vec(0, 0.1))], f=0)
    assert out.tolist() != [10.0, 10.0]


# --- The loader ------------------------------------------------------------------------------


def test_dotted_paths_in_both_spellings_load_a_class() -> None:
    for spec in ("node.learning.aggregators:HalfFedAvg", "node.learning.aggregators.HalfFedAvg"):
        aggregator = load_aggregator(spec)
        assert isinstance(aggregator, CheckedAggregator) and aggregator.name == spec
        assert aggregator.update_model(vec(0), 0.0, [got(vec(2))], {}).tolist() == [1.0]


PLUGIN = textwrap.dedent(
    """
    import numpy as np

    class Scaled:
        '''Moves halfway to the best model; counts its calls in the reputation map.'''

        def __init__(self, factor=0.5):
            self.factor = factor

        def update_model(self, current, self_accuracy, received, reputation):
            best = max(received, key=lambda r: r.accuracy)
            reputation["calls"] = reputation.get("calls", 0) + 1
            return (current + self.factor * (best.model - current)).astype(np.float32)

    class WrongShape:
        def update_model(self, current, self_accuracy, received, reputation):
            return current[:-1]

    class NotFinite:
        def update_model(self, current, self_accuracy, received, reputation):
            return current * np.float32("nan")

    class ReturnsList:
        def update_model(self, current, self_accuracy, received, reputation):
            return current.tolist()

    class Integers:
        def update_model(self, current, self_accuracy, received, reputation):
            return current.astype(np.int64)

    def make_scaled():
        return Scaled(factor=1.0)

    not_a_plugin = 42
    """
)


@pytest.fixture
def plugin_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "my_lab_rules.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_lab_rules"


def test_a_third_party_plugin_loads_by_dotted_path_with_options(plugin_module: str) -> None:
    aggregator = load_aggregator(f"{plugin_module}:Scaled", factor=0.25)
    reputation: dict = {}
    received = [got(vec(8, 8), 0.9), got(vec(-8, -8), 0.1)]
    assert aggregator.update_model(vec(0, 4), 0.0, received, reputation).tolist() == [2.0, 5.0]
    assert reputation == {"calls": 1}
    with pytest.raises(AggregatorError, match="a dotted path must name a class"):
        load_aggregator(f"{plugin_module}.make_scaled")  # factories only by entry point


def test_a_plugin_registered_as_an_entry_point_loads_by_name(plugin_module, tmp_path) -> None:
    dist = tmp_path / "my_lab_rules-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-lab-rules\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nscaled = {plugin_module}:Scaled\n"
    )
    aggregator = load_aggregator("scaled", factor=1.0)
    assert aggregator.update_model(vec(0), 0.0, [got(vec(6))], {}).tolist() == [6.0]


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ("WrongShape", r"returned shape \(1,\), expected \(2,\)"),
        ("NotFinite", "returned non-finite weights"),
        ("ReturnsList", "returned list, expected a numpy array"),
        ("Integers", "returned dtype int64"),
    ],
)
def test_a_plugin_returning_a_bad_model_is_an_error_naming_it(
    plugin_module: str, plugin: str, message: str
) -> None:
    aggregator = load_aggregator(f"{plugin_module}:{plugin}")
    with pytest.raises(AggregatorError, match=message) as caught:
        aggregator.update_model(vec(1, 2), 0.0, [got(vec(3, 4))], {})
    assert caught.value.plugin == f"{plugin_module}:{plugin}"
    assert f"'{plugin_module}:{plugin}'" in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_package.rules:Rule", "cannot import module 'no_such_package.rules'"),
        ("node.learning.aggregators:Nope", "has no attribute 'Nope'"),
        ("fedavgg", "unknown name: not a built-in"),
        ("node.learning.aggregators:BUILTIN", "is of type dict, not a class"),
    ],
)
def test_a_bad_plugin_path_is_an_error_naming_it(spec: str, message: str) -> None:
    with pytest.raises(AggregatorError, match=message) as caught:
        load_aggregator(spec)
    assert caught.value.plugin == spec


def test_bad_options_and_objects_without_update_model_are_named(plugin_module: str) -> None:
    with pytest.raises(AggregatorError, match="cannot be built with options") as caught:
        load_aggregator("krum", nonsense=1)
    assert caught.value.plugin == "krum"
    with pytest.raises(AggregatorError, match="is of type int, not a class"):
        load_aggregator(f"{plugin_module}:not_a_plugin")


def test_received_models_of_the_wrong_shape_are_refused_before_the_plugin_runs() -> None:
    with pytest.raises(ValueError, match="from 'x' has shape"):
        load_aggregator("fedavg").update_model(vec(1, 2), 0.0, [got(vec(1, 2, 3))], {})


def test_aggregators_work_on_lenet_sized_vectors() -> None:
    rng = np.random.default_rng(0)
    models = [rng.standard_normal(431_080).astype(np.float32) for _ in range(5)]
    received = [got(m, 0.5, str(i)) for i, m in enumerate(models[1:])]
    out = run("fedavg", models[0], received)
    np.testing.assert_allclose(out, np.mean(models[1:], axis=0), rtol=1e-5, atol=1e-6)
    assert run("krum", models[0], received).shape == (431_080,)


@pytest.mark.parametrize("n", [1, 2, 5, 6, 16, 17])
def test_the_per_coordinate_sort_matches_numpy(n: int) -> None:
    models = list(np.random.default_rng(n).standard_normal((n, 1000)).astype(np.float32))
    assert np.array_equal(sorted_columns(models), np.sort(np.stack(models), axis=0))
    current, received = models[0], [got(m) for m in models[1:]]
    assert np.array_equal(run("median", current, received), np.median(np.stack(models), axis=0))
