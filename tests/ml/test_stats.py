"""Paired bootstrap, McNemar and flips against naive loops and statsmodels."""

import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from ml.evaluation import value_per_1000
from ml.stats import (
    bootstrap_distribution,
    bootstrap_indices,
    flipped_samples,
    mcnemar_exact,
    paired_bootstrap,
)

CLASSES = ["a", "b", "c"]
GAINS = [[5, -1, -1], [-10, 3, 0], [-2, 0, 1]]


def two_models(n=300, accuracy_a=0.7, accuracy_b=0.75, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(CLASSES, n, p=[0.6, 0.3, 0.1])

    def model(accuracy):
        wrong = rng.random(n) > accuracy
        return np.where(wrong, rng.choice(CLASSES, n), y)

    return y, model(accuracy_a), model(accuracy_b)


def test_it_is_reproducible_with_the_seed():
    y, a, b = two_models()
    first = paired_bootstrap(y, a, b, CLASSES, seed=11)
    assert first == paired_bootstrap(y, a, b, CLASSES, seed=11)
    assert first["accuracy"].low != paired_bootstrap(y, a, b, CLASSES, seed=12)["accuracy"].low


def test_identical_models_give_a_zero_interval():
    y, a, _ = two_models()
    result = paired_bootstrap(
        y, a, a, CLASSES, metrics=["accuracy", "macro_f1", "value_per_1000"], gain_matrix=GAINS
    )
    for ci in result.values():
        assert (ci.low, ci.difference, ci.high) == (0.0, 0.0, 0.0)
        assert not ci.excludes_zero


def test_a_strictly_better_model_gives_an_interval_above_zero():
    y, a, _ = two_models(n=1000, accuracy_a=0.7)
    # B is right wherever A is, and on some of A's mistakes too.
    b = np.where(np.random.default_rng(5).random(1000) < 0.5, y, a)
    result = paired_bootstrap(
        y, a, b, CLASSES, metrics=["accuracy", "macro_f1", "value_per_1000"], gain_matrix=GAINS
    )
    for ci in result.values():
        assert ci.low > 0, ci
        assert ci.low <= ci.difference <= ci.high
    assert result["accuracy"].a == pytest.approx(accuracy_score(y, a))
    assert result["accuracy"].b == pytest.approx(accuracy_score(y, b))
    assert result["macro_f1"].a == pytest.approx(f1_score(y, a, average="macro", zero_division=0))
    assert result["value_per_1000"].b == pytest.approx(value_per_1000(y, b, GAINS, CLASSES))


def naive(y, a, b, indices):
    """One resample at a time with scikit-learn: the reference."""
    out = {"accuracy": [], "macro_f1": [], "value_per_1000": []}
    for row in indices:
        for name, values in out.items():
            pair = []
            for pred in (a, b):
                if name == "accuracy":
                    pair.append(accuracy_score(y[row], pred[row]))
                elif name == "macro_f1":
                    pair.append(
                        f1_score(
                            y[row], pred[row], labels=CLASSES, average="macro", zero_division=0
                        )
                    )
                else:
                    pair.append(value_per_1000(y[row], pred[row], GAINS, CLASSES))
            values.append(pair)
    return {name: np.array(values) for name, values in out.items()}


def test_it_equals_a_naive_loop_on_the_same_resamples():
    y, a, b = two_models(n=60)
    indices = bootstrap_indices(60, 50, seed=4)
    fast = bootstrap_distribution(
        y,
        a,
        b,
        CLASSES,
        metrics=["accuracy", "macro_f1", "value_per_1000"],
        gain_matrix=GAINS,
        indices=indices,
    )
    slow = naive(y, a, b, indices)
    for name in slow:
        np.testing.assert_allclose(fast[name][0], slow[name][:, 0], err_msg=name)
        np.testing.assert_allclose(fast[name][1], slow[name][:, 1], err_msg=name)


def plain_loop(y, a, b, indices):
    """A second reference, in plain NumPy one resample at a time (scikit-learn's
    input checks would make 400 resamples take seconds)."""
    out = {"accuracy": [], "macro_f1": []}
    for row in indices:
        for name in out:
            pair = []
            for pred in (a, b):
                t, p = y[row], pred[row]
                if name == "accuracy":
                    pair.append((t == p).mean())
                else:
                    f1 = []
                    for c in CLASSES:
                        tp = ((t == c) & (p == c)).sum()
                        total = (t == c).sum() + (p == c).sum()
                        f1.append(2 * tp / total if total else 0.0)
                    pair.append(np.mean(f1))
            out[name].append(pair)
    return {name: np.array(values) for name, values in out.items()}


def test_its_distribution_agrees_with_a_naive_loop_drawing_its_own_resamples():
    y, a, b = two_models(n=200, seed=3)
    fast = bootstrap_distribution(
        y, a, b, CLASSES, metrics=["accuracy", "macro_f1"], n_resamples=2000, seed=1
    )
    rng = np.random.default_rng(99)
    slow_indices = np.array([rng.choice(200, 200) for _ in range(400)])
    slow = plain_loop(y, a, b, slow_indices)
    for name in ("accuracy", "macro_f1"):
        fast_diff = fast[name][1] - fast[name][0]
        slow_diff = slow[name][:, 1] - slow[name][:, 0]
        # Same distribution: means within a fraction of a standard deviation,
        # spreads within 15 % (400 naive resamples keep this test quick).
        assert abs(fast_diff.mean() - slow_diff.mean()) < 0.2 * fast_diff.std(), name
        assert slow_diff.std() == pytest.approx(fast_diff.std(), rel=0.15), name


def test_it_is_fast_on_a_large_holdout():
    """Information only (the time is printed, never asserted): 20,000 samples,
    2,000 resamples, accuracy and macro-F1."""
    y, a, b = two_models(n=20_000, seed=8)
    start = time.perf_counter()
    result = paired_bootstrap(y, a, b, CLASSES, n_resamples=2000, seed=0)
    seconds = time.perf_counter() - start
    print(f"\npaired bootstrap, 20,000 × 2,000, accuracy + macro-F1: {seconds:.3f} s")
    assert result["accuracy"].n_resamples == 2000


def test_it_rejects_bad_input():
    y, a, b = two_models(n=20)
    with pytest.raises(ValueError, match="value_per_1000 needs a gain_matrix"):
        paired_bootstrap(y, a, b, CLASSES, metrics=["value_per_1000"])
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['auc'\]"):
        paired_bootstrap(y, a, b, CLASSES, metrics=["auc"])
    with pytest.raises(ValueError, match="lengths differ"):
        paired_bootstrap(y, a[:10], b, CLASSES)
    with pytest.raises(ValueError, match="zero samples"):
        paired_bootstrap([], [], [], CLASSES)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 0), (5, 12), (40, 25), (7, 7), (1, 30)])
def test_mcnemar_matches_statsmodels_exact(b, c):
    # Build samples with the wanted discordant counts plus concordant ones.
    both_right, both_wrong = 20, 6
    y = np.array(["a"] * (b + c + both_right + both_wrong))
    pred_a = np.array(["a"] * b + ["b"] * c + ["a"] * both_right + ["b"] * both_wrong)
    pred_b = np.array(["b"] * b + ["a"] * c + ["a"] * both_right + ["c"] * both_wrong)
    result = mcnemar_exact(y, pred_a, pred_b)
    assert (result.b, result.c, result.n) == (b, c, len(y))
    reference = statsmodels_mcnemar([[both_right, b], [c, both_wrong]], exact=True)
    assert result.p_value == pytest.approx(reference.pvalue)


def test_flipped_samples_name_what_b_fixed_and_broke():
    y = ["a", "a", "b", "b", "c"]
    pred_a = ["a", "b", "b", "a", "a"]
    pred_b = ["b", "a", "b", "b", "b"]
    flips = flipped_samples(y, pred_a, pred_b)
    assert flips.fixed == [1, 3]
    assert flips.broken == [0]
    by_id = flipped_samples(y, pred_a, pred_b, ids=["s1", "s2", "s3", "s4", "s5"])
    assert (by_id.fixed, by_id.broken) == (["s2", "s4"], ["s1"])
    with pytest.raises(ValueError, match="4 ids for 5 samples"):
        flipped_samples(y, pred_a, pred_b, ids=["s1", "s2", "s3", "s4"])
