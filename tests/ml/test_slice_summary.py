"""slice_summary gives slice_metrics' numbers in its order, in one pass."""

import numpy as np
import pandas as pd
import pytest

from ml.evaluation import slice_metrics, slice_summary

CLASSES = ["a", "b", "c"]


def data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(CLASSES, n)
    proba = rng.dirichlet([1, 1, 1], n)
    proba[np.arange(n), pd.Index(CLASSES).get_indexer(y)] += rng.random(n)
    proba /= proba.sum(axis=1, keepdims=True)
    values = rng.choice(np.array(["north", "south", "east", 7, 7.5, None], dtype=object), n)
    return y, proba, values


def test_it_equals_slice_metrics():
    y, proba, values = data()
    predicted = np.array(CLASSES, dtype=object)[proba.argmax(axis=1)]
    fast = slice_summary(y, predicted, CLASSES, values)
    slow = slice_metrics(y, proba, CLASSES, pd.DataFrame({"s": values}), ["s"])["s"]
    assert [row[0] for row in fast] == [s.value for s in slow]
    assert fast[-1][0] is None
    for (_, n, accuracy, macro_f1), s in zip(fast, slow, strict=True):
        assert n == s.n
        assert accuracy == pytest.approx(s.metrics.accuracy)
        assert macro_f1 == pytest.approx(s.metrics.macro_f1)


def test_a_slice_without_some_classes_scores_them_zero_like_evaluate():
    y = ["a", "a", "b", "c"]
    predicted = ["a", "b", "b", "c"]
    rows = slice_summary(y, predicted, CLASSES, ["x", "x", "y", "y"])
    # x: a right once, a→b once; F1 a = 2/3, b = 0, c = 0 (absent): macro 2/9.
    assert rows[0] == ("x", 2, 0.5, pytest.approx(2 / 9))
    assert rows[1] == ("y", 2, 1.0, pytest.approx(2 / 3))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="labels outside the classes"):
        slice_summary(["z"], ["a"], CLASSES, ["x"])
    with pytest.raises(ValueError, match="2 labels, 2 predictions and 1 slice values"):
        slice_summary(["a", "b"], ["a", "b"], CLASSES, ["x"])
    assert slice_summary([], [], CLASSES, []) == []
