"""Holdout metrics against scikit-learn and hand-computed values."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.metrics import log_loss as sklearn_log_loss

from ml.evaluation import (
    evaluate,
    expected_calibration_error,
    gain_array,
    latency_per_1000,
    slice_metrics,
    value_per_1000,
)

CLASSES = ["billing", "refund", "other"]


def random_case(n=500, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice(CLASSES, n, p=[0.5, 0.3, 0.2])
    logits = rng.normal(size=(n, 3))
    logits[np.arange(n), [CLASSES.index(v) for v in y]] += 1.2
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


def test_metrics_match_scikit_learn():
    y, proba = random_case()
    m = evaluate(y, proba, CLASSES)
    pred = np.array(CLASSES)[proba.argmax(axis=1)]
    assert m.n == 500
    assert m.accuracy == pytest.approx(accuracy_score(y, pred))
    assert m.macro_f1 == pytest.approx(
        f1_score(y, pred, labels=CLASSES, average="macro", zero_division=0)
    )
    # scikit-learn wants the columns in sorted label order.
    order = np.argsort(CLASSES)
    assert m.log_loss == pytest.approx(sklearn_log_loss(y, proba[:, order], labels=sorted(CLASSES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=CLASSES, zero_division=0
    )
    assert [c.label for c in m.per_class] == CLASSES
    np.testing.assert_allclose([c.precision for c in m.per_class], precision)
    np.testing.assert_allclose([c.recall for c in m.per_class], recall)
    np.testing.assert_allclose([c.f1 for c in m.per_class], f1)
    assert [c.support for c in m.per_class] == support.tolist()
    assert m.confusion == confusion_matrix(y, pred, labels=CLASSES).tolist()
    assert m.recall("refund") == pytest.approx(recall[1])


def test_a_class_never_predicted_nor_present_scores_zero_like_scikit_learn():
    y = ["billing", "billing", "refund"]
    proba = np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.1, 0.9, 0]])
    m = evaluate(y, proba, CLASSES)
    pred = ["billing", "refund", "refund"]
    assert m.macro_f1 == pytest.approx(
        f1_score(y, pred, labels=CLASSES, average="macro", zero_division=0)
    )
    assert m.per_class[2].f1 == 0.0


def test_ece_matches_a_hand_computed_example():
    # Five bins of width 0.2.
    #   conf 0.9  right → bin (0.8, 1]: |1 − 0.9| · 1/5           = 0.02
    #   conf 0.7  wrong, conf 0.65 right → (0.6, 0.8]:
    #            accuracy 0.5, confidence 0.675: 0.175 · 2/5       = 0.07
    #   conf 0.5  right (ties go to the first class), conf 0.6 wrong → (0.4, 0.6]:
    #            accuracy 0.5, confidence 0.55: 0.05 · 2/5         = 0.02
    #   ECE = 0.11
    y = ["a", "b", "b", "a", "a"]
    proba = np.array([[0.9, 0.1], [0.7, 0.3], [0.35, 0.65], [0.5, 0.5], [0.4, 0.6]])
    ece, bins = expected_calibration_error(y, proba, ["a", "b"], n_bins=5)
    assert ece == pytest.approx(0.11)
    assert [b.count for b in bins] == [0, 0, 2, 2, 1]
    assert bins[2].lower == pytest.approx(0.4) and bins[2].upper == pytest.approx(0.6)
    assert bins[2].confidence == pytest.approx(0.55)
    assert bins[2].accuracy == pytest.approx(0.5)
    assert bins[0].confidence is None and bins[0].accuracy is None


def test_ece_defaults_to_fifteen_bins_and_is_zero_when_perfectly_calibrated():
    # Confidence 0.75 everywhere and 3 of 4 right in that bin: calibrated.
    y = ["a", "a", "a", "b"]
    proba = np.tile([0.75, 0.25], (4, 1))
    m = evaluate(y, proba, ["a", "b"])
    assert len(m.calibration) == 15
    assert m.ece == pytest.approx(0.0)


def test_slice_metrics_equal_metrics_on_each_slice_and_keep_missing_values():
    y, proba = random_case(300, seed=1)
    source = np.random.default_rng(2).choice(["email", "chat", None], 300)
    slices = pd.DataFrame({"source": source})
    result = slice_metrics(y, proba, CLASSES, slices, ["source"])
    rows = {row.value: row for row in result["source"]}
    assert set(rows) == {"chat", "email", None}
    mask = source == "chat"
    assert rows["chat"].n == mask.sum()
    assert rows["chat"].metrics == evaluate(y[mask], proba[mask], CLASSES)
    assert sum(row.n for row in rows.values()) == 300
    with pytest.raises(ValueError, match="slice column 'channel' is not in the data"):
        slice_metrics(y, proba, CLASSES, slices, ["channel"])


def test_value_per_1000_from_a_gain_matrix():
    # A correct refund gains 10, a refund predicted as billing costs 30.
    gains = {"refund": {"refund": 10, "billing": -30}, "billing": {"billing": 2}}
    y = ["refund", "refund", "billing", "other"]
    pred = ["refund", "billing", "billing", "refund"]
    # (10 − 30 + 2 + 0) / 4 · 1000 = −4500
    assert value_per_1000(y, pred, gains, CLASSES) == pytest.approx(-4500)
    as_pairs = {("refund", "refund"): 10, ("refund", "billing"): -30, ("billing", "billing"): 2}
    np.testing.assert_array_equal(gain_array(as_pairs, CLASSES), gain_array(gains, CLASSES))
    as_array = gain_array(gains, CLASSES)
    assert value_per_1000(y, pred, as_array, CLASSES) == pytest.approx(-4500)


def test_value_per_1000_rejects_bad_input():
    with pytest.raises(ValueError, match=r"unknown class in \('refund', 'cancel'\)"):
        gain_array({"refund": {"cancel": 1}}, CLASSES)
    with pytest.raises(ValueError, match=r"shape \(2, 2\), expected \(3, 3\)"):
        gain_array(np.eye(2), CLASSES)
    with pytest.raises(ValueError, match=r"labels outside the classes"):
        value_per_1000(["spam"], ["refund"], np.eye(3), CLASSES)


def test_evaluate_rejects_mismatched_probabilities():
    with pytest.raises(ValueError, match=r"shape \(2, 2\), expected \(2, 3\)"):
        evaluate(["refund", "other"], np.ones((2, 2)) / 2, CLASSES)


def test_latency_times_the_whole_frame_after_a_warm_up():
    calls = []

    def predict_proba(frame):
        calls.append(len(frame))
        return np.zeros((len(frame), 2))

    frame = pd.DataFrame({"x": range(500)})
    latency = latency_per_1000(predict_proba, frame, repeats=4)
    assert calls == [500] * 5
    assert latency.samples == 500 and latency.repeats == 4
    assert latency.ms_per_1000 == pytest.approx(np.median(latency.timings_ms) * 2)
    with pytest.raises(ValueError, match="empty frame"):
        latency_per_1000(predict_proba, frame.iloc[:0])
