import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from ml import windows


def _window(rng, n, shift=0.0):
    classes = np.array(["on time", "late"])
    predicted = classes[(rng.random(n) < 0.2 + shift).astype(int)]
    confidence = rng.uniform(0.5, 1.0, n)
    latency = rng.lognormal(np.log(20), 0.5, n)
    true = np.where(rng.random(n) < 0.85, predicted, classes[(predicted == "on time").astype(int)])
    true = true.astype(object)
    true[rng.random(n) < 0.5] = None  # half without ground truth
    return predicted, confidence, latency, true


GAINS = {"late": {"late": 10, "on time": -50}, "on time": {"on time": 0, "late": -5}}


def test_merged_windows_equal_the_aggregate_of_all_rows():
    rng = np.random.default_rng(0)
    parts = [_window(rng, n) for n in (1000, 250, 4000)]
    merged = windows.merge(
        windows.aggregate(p, c, lat, true=t, gain_matrix=GAINS) for p, c, lat, t in parts
    )
    whole = windows.aggregate(
        *(np.concatenate([part[i] for part in parts]) for i in range(3)),
        true=np.concatenate([part[3] for part in parts]),
        gain_matrix=GAINS,
    )
    a, b = merged.as_dict(), whole.as_dict()
    for key in ("gain_sum", "gain_sq_sum"):
        assert a.pop(key) == pytest.approx(b.pop(key))
    assert a == b
    assert windows.Aggregate.from_dict(merged.as_dict()) == merged


def test_summary_numbers_match_a_direct_computation():
    rng = np.random.default_rng(1)
    predicted, confidence, latency, true = _window(rng, 20_000)
    summary = windows.summarise(
        windows.aggregate(predicted, confidence, latency, true=true, gain_matrix=GAINS)
    )
    known = np.array([t is not None for t in true])
    accuracy = (predicted[known] == true[known]).mean()
    assert summary.coverage == pytest.approx(known.mean())
    assert summary.accuracy == pytest.approx(accuracy)
    low, high = proportion_confint(
        (predicted[known] == true[known]).sum(), known.sum(), method="wilson"
    )
    assert summary.accuracy_ci == pytest.approx((low, high))
    late = known & (true == "late")
    assert summary.recall["late"][0] == pytest.approx((predicted[late] == "late").mean())
    gains = np.array([GAINS[t][p] for t, p in zip(true[known], predicted[known], strict=True)])
    assert summary.value_per_1000 == pytest.approx(1000 * gains.mean())
    assert summary.value_ci[0] < summary.value_per_1000 < summary.value_ci[1]
    # Percentiles from the buckets: within one bucket (~21%) above the true value.
    for q, read in ((50, summary.latency_p50), (99, summary.latency_p99)):
        exact = np.percentile(latency, q)
        assert exact <= read <= exact * 1.22
    assert summary.predicted_share["late"] == pytest.approx((predicted == "late").mean())


def test_an_empty_window_summarises_to_nothing_rather_than_failing():
    summary = windows.summarise(windows.aggregate([], []))
    assert summary.n == 0 and summary.accuracy is None and summary.latency_p50 is None


def test_bad_columns_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="2 confidences for 1 predictions"):
        windows.aggregate(["a"], [0.5, 0.5])
    with pytest.raises(ValueError, match="between 0 and 1"):
        windows.aggregate(["a"], [1.5])
    with pytest.raises(ValueError, match="ground-truth values"):
        windows.aggregate(["a"], [0.5], true=["a", "b"])
