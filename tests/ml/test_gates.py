"""Release gates: pass / fail with the numbers and a sentence each."""

import numpy as np
import pytest

from ml.evaluation import evaluate
from ml.gates import (
    GateConfig,
    evaluate_gates,
    latency_under,
    metric_not_worse,
    recall_not_dropped,
    value_not_worse,
)
from ml.stats import BootstrapCI

CLASSES = ["great", "other"]


def metrics(y, pred):
    proba = np.array([[0.9, 0.1] if p == "great" else [0.1, 0.9] for p in pred])
    return evaluate(y, proba, CLASSES)


def ci(low, high, difference=None):
    difference = (low + high) / 2 if difference is None else difference
    return BootstrapCI(
        "value_per_1000", 100.0, 100.0 + difference, difference, low, high, 0.95, 2000, 0
    )


Y = ["great"] * 10 + ["other"] * 10
PRODUCTION = metrics(
    Y, ["great"] * 8 + ["other"] * 2 + ["other"] * 8 + ["great"] * 2
)  # 80 % / 80 %


def test_value_gate_passes_when_the_lower_bound_is_not_below_zero():
    result = value_not_worse(ci(0.5, 12.0))
    assert result.passed and result.value == 0.5 and result.threshold == 0
    assert "with 95% confidence the candidate is not worse" in result.sentence


def test_value_gate_fails_when_the_candidate_may_be_worse():
    result = value_not_worse(ci(-3.25, 10.0))
    assert not result.passed
    assert "may be worse by up to 3.25 per 1,000" in result.sentence
    assert value_not_worse(ci(-3.25, 10.0), margin=5).passed


def test_recall_gate_names_the_class_that_dropped():
    candidate = metrics(Y, ["great"] * 10 + ["other"] * 6 + ["great"] * 4)  # other: 80 → 60
    result = recall_not_dropped(PRODUCTION, candidate, max_drop_points=5)
    assert not result.passed
    assert result.value == pytest.approx(20.0)
    assert "Recall of class 'other' dropped by 20.0 points" in result.sentence
    assert result.detail["drop_points"]["great"] == pytest.approx(-20.0)
    assert recall_not_dropped(PRODUCTION, candidate, max_drop_points=25).passed


def test_recall_gate_passes_when_no_class_drops():
    result = recall_not_dropped(PRODUCTION, PRODUCTION, max_drop_points=0)
    assert result.passed and result.sentence == "No class's recall dropped."


def test_latency_gate():
    assert latency_under(40.0, max_ms=50).passed
    result = latency_under(75.5, max_ms=50)
    assert not result.passed
    assert result.sentence == "Predicting 1,000 samples takes 75.5 ms, over the limit of 50 ms."


def test_metric_gate_allows_a_drop_within_the_tolerance_only():
    within = metric_not_worse("accuracy", 0.80, 0.795, tolerance=0.01)
    assert within.passed and "within the allowed drop of 1 point." in within.sentence
    beyond = metric_not_worse("macro_f1", 0.80, 0.78, tolerance=0.01)
    assert not beyond.passed
    assert beyond.sentence.startswith("Macro-F1 goes from 0.800 to 0.780 (-2.0 points)")


def test_evaluate_gates_runs_the_configured_gates():
    candidate = metrics(Y, ["great"] * 9 + ["other"] * 1 + ["other"] * 8 + ["great"] * 2)
    config = GateConfig(max_latency_ms_per_1000=100)
    report = evaluate_gates(
        config,
        production=PRODUCTION,
        candidate=candidate,
        value_ci=ci(1.0, 9.0),
        latency_ms_per_1000=20.0,
    )
    names = [r.name for r in report.results]
    assert names == [
        "value_not_worse",
        "recall_not_dropped",
        "latency_under",
        "accuracy_not_worse",
        "macro_f1_not_worse",
    ]
    assert report.passed and report.failed == []


def test_a_configured_gate_without_its_input_fails_and_says_why():
    config = GateConfig(max_latency_ms_per_1000=100, accuracy_tolerance=None)
    report = evaluate_gates(config, production=PRODUCTION, candidate=PRODUCTION)
    failed = {r.name: r for r in report.failed}
    assert set(failed) == {"value_not_worse", "latency_under"}
    assert "no value metric was computed" in failed["value_not_worse"].sentence
    assert not report.passed
    assert "accuracy_not_worse" not in [r.name for r in report.results]
