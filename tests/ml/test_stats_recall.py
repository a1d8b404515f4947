"""Per-class recall differences from the paired bootstrap's own resamples,
against recall_score on each resample (the reference)."""

import numpy as np
import pytest
from sklearn.metrics import recall_score

from ml.stats import bootstrap_indices, paired_bootstrap, paired_comparison

CLASSES = ["a", "b", "c"]


def two_models(n, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(CLASSES, n, p=[0.6, 0.3, 0.1])

    def model(accuracy):
        return np.where(rng.random(n) > accuracy, rng.choice(CLASSES, n), y)

    return y, model(0.7), model(0.8)


def test_recall_intervals_equal_recall_score_on_the_same_resamples():
    y, a, b = two_models(80, seed=2)
    result = paired_comparison(y, a, b, CLASSES, n_resamples=300, seed=7)
    # The same seed draws the same index matrix the comparison used.
    indices = bootstrap_indices(80, 300, seed=7)
    for i, c in enumerate(CLASSES):
        differences = []
        for row in indices:
            if not (y[row] == c).any():
                continue  # no recall for a class absent from the resample
            recall = recall_score(y[row], b[row], labels=CLASSES, average=None, zero_division=0)
            before = recall_score(y[row], a[row], labels=CLASSES, average=None, zero_division=0)
            differences.append(recall[i] - before[i])
        low, high = np.quantile(differences, [0.025, 0.975])
        ci = result.recall[i]
        assert ci.label == c
        assert (ci.low, ci.high) == (pytest.approx(low), pytest.approx(high))
        whole_a = recall_score(y, a, labels=CLASSES, average=None)[i]
        whole_b = recall_score(y, b, labels=CLASSES, average=None)[i]
        assert (ci.a, ci.b) == (pytest.approx(whole_a), pytest.approx(whole_b))
        assert ci.difference == pytest.approx(whole_b - whole_a)
        assert ci.low <= ci.difference <= ci.high


def test_its_metric_intervals_are_paired_bootstraps():
    y, a, b = two_models(500, seed=4)
    both = paired_comparison(y, a, b, CLASSES, seed=3)
    assert both.metrics == paired_bootstrap(y, a, b, CLASSES, seed=3)


def test_a_class_absent_from_the_holdout_has_no_recall_interval():
    y, a, b = two_models(200, seed=1)
    result = paired_comparison(y, a, b, [*CLASSES, "d"], n_resamples=200)
    missing = result.recall[3]
    assert missing.label == "d"
    assert (missing.a, missing.b, missing.difference, missing.low, missing.high) == (None,) * 5
    assert all(r.low is not None for r in result.recall[:3])


def test_a_model_that_fixes_one_class_only_moves_that_class():
    y, a, _ = two_models(2000, seed=5)
    # B equals A except that it is right on every "c" sample.
    b = np.where(y == "c", "c", a)
    result = paired_comparison(y, a, b, CLASSES, n_resamples=500)
    by_label = {r.label: r for r in result.recall}
    assert by_label["c"].low > 0
    assert by_label["a"].low == by_label["a"].high == 0.0
    assert by_label["b"].low == by_label["b"].high == 0.0


def test_bad_input_is_refused_with_the_reason():
    y, a, b = two_models(50)
    with pytest.raises(ValueError, match="confidence"):
        paired_comparison(y, a, b, CLASSES, confidence=1.5)
    with pytest.raises(ValueError, match="labels outside the classes"):
        paired_comparison(y, a, b, ["a", "b"])
    with pytest.raises(ValueError, match="zero samples"):
        paired_comparison([], [], [], CLASSES)
