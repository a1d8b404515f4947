"""Metrics of one model version on a holdout.

Inputs are plain arrays: true labels, predicted probabilities with one column
per class (in ``classes`` order), and the class list. Every number comes back
in a frozen dataclass of Python floats/ints, ready to store as JSON.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ClassMetrics:
    label: object
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    confidence: float | None  # mean top-class probability in the bin
    accuracy: float | None  # share of correct predictions in the bin


@dataclass(frozen=True)
class Metrics:
    n: int
    classes: list
    accuracy: float
    macro_f1: float
    log_loss: float
    ece: float
    per_class: list[ClassMetrics]
    calibration: list[CalibrationBin]
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def recall(self, label) -> float:
        return next(c.recall for c in self.per_class if c.label == label)


@dataclass(frozen=True)
class SliceMetrics:
    column: str
    value: object
    n: int
    metrics: Metrics | None  # None when the slice is empty


@dataclass(frozen=True)
class Latency:
    ms_per_1000: float  # median over repeats
    samples: int
    repeats: int
    timings_ms: list[float]


def encode(y, classes) -> np.ndarray:
    """Labels → integer codes in ``classes`` order; unknown labels are an error."""
    classes = list(classes)
    values = np.asarray(y, dtype=object)
    index = pd.Index(classes, dtype=object)
    if not index.is_unique:
        raise ValueError(f"classes repeat a name: {classes}")
    codes = index.get_indexer(values)
    if (codes < 0).any():
        bad = values[codes < 0][:5].tolist()
        raise ValueError(f"labels outside the classes {classes}: {bad}")
    return codes.astype(np.int64)


def check_proba(proba, n: int, classes) -> np.ndarray:
    proba = np.asarray(proba, dtype=float)
    if proba.shape != (n, len(classes)):
        raise ValueError(f"probabilities have shape {proba.shape}, expected {(n, len(classes))}")
    return proba


def confusion_counts(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def per_class_from_confusion(matrix: np.ndarray):
    """precision, recall, F1 per class; 0 where undefined (sklearn's zero_division=0)."""
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denominator = predicted + support
        f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    return precision, recall, f1, support


def log_loss(t: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class; probabilities are
    clipped to machine epsilon so one overconfident miss is large, not inf."""
    eps = np.finfo(float).eps
    picked = np.clip(proba[np.arange(len(t)), t], eps, 1.0)
    return float(-np.log(picked).mean())


def expected_calibration_error(
    y_true, proba, classes, n_bins: int = 15
) -> tuple[float, list[CalibrationBin]]:
    """ECE with equal-width bins on the top-class probability.

    Bin i holds confidences in (i/B, (i+1)/B] (the first bin also takes 0).
    ECE = Σ_bins (count/n) · |accuracy − mean confidence|.
    """
    t = encode(y_true, classes)
    proba = check_proba(proba, len(t), classes)
    if len(t) == 0:
        raise ValueError("cannot compute calibration on zero samples")
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == t).astype(float)
    # The same edges as sklearn.calibration.calibration_curve; searching the
    # edges (not ceil(conf·B)) keeps a confidence of exactly 0.6 in (0.4, 0.6]
    # although 0.6 · 5 is 3.0000000000000004 in floating point.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    correct_sum = np.bincount(index, weights=correct, minlength=n_bins)
    bins = []
    ece = 0.0
    for i in range(n_bins):
        if count[i]:
            mean_conf = conf_sum[i] / count[i]
            accuracy = correct_sum[i] / count[i]
            ece += count[i] / len(t) * abs(accuracy - mean_conf)
            bins.append(
                CalibrationBin(
                    float(edges[i]),
                    float(edges[i + 1]),
                    int(count[i]),
                    float(mean_conf),
                    float(accuracy),
                )
            )
        else:
            bins.append(CalibrationBin(float(edges[i]), float(edges[i + 1]), 0, None, None))
    return float(ece), bins


def evaluate(y_true, proba, classes, *, n_bins: int = 15) -> Metrics:
    """All headline metrics of one version; predictions are the arg-max class."""
    classes = list(classes)
    t = encode(y_true, classes)
    proba = check_proba(proba, len(t), classes)
    if len(t) == 0:
        raise ValueError("cannot evaluate on zero samples")
    p = proba.argmax(axis=1)
    k = len(classes)
    matrix = confusion_counts(t, p, k)
    precision, recall, f1, support = per_class_from_confusion(matrix)
    ece, bins = expected_calibration_error(y_true, proba, classes, n_bins)
    return Metrics(
        n=len(t),
        classes=classes,
        accuracy=float((t == p).mean()),
        macro_f1=float(f1.mean()),
        log_loss=log_loss(t, proba),
        ece=ece,
        per_class=[
            ClassMetrics(c, float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
            for i, c in enumerate(classes)
        ],
        calibration=bins,
        confusion=matrix.tolist(),
    )


def slice_metrics(
    y_true, proba, classes, slices: pd.DataFrame, columns: Sequence[str], *, n_bins: int = 15
) -> dict[str, list[SliceMetrics]]:
    """Metrics per value of each slice column (rows aligned with ``y_true``);
    missing values form their own slice, labelled None."""
    y = np.asarray(y_true, dtype=object)
    proba = check_proba(proba, len(y), classes)
    if len(slices) != len(y):
        raise ValueError(f"slices have {len(slices)} rows, labels {len(y)}")
    result = {}
    for column in columns:
        if column not in slices.columns:
            raise ValueError(f"slice column {column!r} is not in the data")
        values = slices[column].astype(object).to_numpy()
        missing = pd.isna(values)
        rows = []
        for value in sorted(set(values[~missing].tolist()), key=str) + (
            [None] if missing.any() else []
        ):
            mask = missing if value is None else (values == value) & ~missing
            n = int(mask.sum())
            rows.append(
                SliceMetrics(
                    column, value, n, evaluate(y[mask], proba[mask], classes, n_bins=n_bins)
                )
            )
        result[column] = rows
    return result


def gain_array(gain_matrix, classes) -> np.ndarray:
    """A (true, predicted) gain matrix as a k × k array in ``classes`` order.

    Accepts an array-like, ``{true: {predicted: value}}`` or
    ``{(true, predicted): value}``; cells left out of a mapping are 0.
    """
    classes = list(classes)
    k = len(classes)
    if isinstance(gain_matrix, Mapping):
        position = {c: i for i, c in enumerate(classes)}
        out = np.zeros((k, k))
        for key, value in gain_matrix.items():
            if isinstance(value, Mapping):
                pairs = [((key, pred), v) for pred, v in value.items()]
            else:
                pairs = [(key, value)]
            for (true, pred), v in pairs:
                if true not in position or pred not in position:
                    raise ValueError(f"gain matrix names an unknown class in ({true!r}, {pred!r})")
                out[position[true], position[pred]] = float(v)
        return out
    out = np.asarray(gain_matrix, dtype=float)
    if out.shape != (k, k):
        raise ValueError(f"gain matrix has shape {out.shape}, expected {(k, k)} for {classes}")
    if not np.isfinite(out).all():
        raise ValueError("gain matrix has a value that is not a finite number")
    return out


def value_per_1000(y_true, y_pred, gain_matrix, classes) -> float:
    """Expected value of 1,000 predictions: 1000 · mean gain[true, predicted]
    (costs are negative gains)."""
    t = encode(y_true, classes)
    p = encode(y_pred, classes)
    if len(t) != len(p):
        raise ValueError(f"{len(t)} true labels but {len(p)} predictions")
    if len(t) == 0:
        raise ValueError("cannot compute value on zero samples")
    gains = gain_array(gain_matrix, classes)
    return float(1000.0 * gains[t, p].mean())


def latency_per_1000(
    predict_proba: Callable, frame: pd.DataFrame, *, repeats: int = 3, warmup: bool = True
) -> Latency:
    """Milliseconds ``predict_proba`` takes per 1,000 rows of ``frame``
    (median of ``repeats`` timed calls on the whole frame, after one warm-up
    call so lazy imports and caches do not count)."""
    if len(frame) == 0:
        raise ValueError("cannot time predictions on an empty frame")
    if warmup:
        predict_proba(frame)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_proba(frame)
        timings.append((time.perf_counter() - start) * 1000.0)
    return Latency(
        ms_per_1000=float(np.median(timings)) * 1000.0 / len(frame),
        samples=len(frame),
        repeats=repeats,
        timings_ms=timings,
    )


def slice_summary(y_true, y_pred, classes, values) -> list[tuple[object, int, float, float]]:
    """(value, n, accuracy, macro-F1) for every value of one slice column, in
    ``slice_metrics``' order and with its numbers (missing values form the
    slice None), from one ``bincount`` over (slice, true, predicted).

    ``slice_metrics`` evaluates each slice in full (calibration included): a
    column with thousands of values (a product id) took seconds per version;
    this takes milliseconds for the numbers a report lists per slice.
    """
    classes = list(classes)
    t = encode(y_true, classes)
    p = encode(y_pred, classes)
    values = pd.Series(values).astype(object).to_numpy()
    if not len(t) == len(p) == len(values):
        raise ValueError(f"{len(t)} labels, {len(p)} predictions and {len(values)} slice values")
    missing = pd.isna(values)
    present = sorted(set(values[~missing].tolist()), key=str)
    order = present + ([None] if missing.any() else [])
    if not order:
        return []
    position = {value: i for i, value in enumerate(present)}
    codes = np.fromiter(
        (
            len(present) if gap else position[value]
            for value, gap in zip(values, missing, strict=True)
        ),
        dtype=np.int64,
        count=len(values),
    )
    k = len(classes)
    counts = np.bincount((codes * k + t) * k + p, minlength=len(order) * k * k).reshape(-1, k, k)
    tp = counts[:, np.arange(k), np.arange(k)].astype(float)
    support, predicted = counts.sum(axis=2), counts.sum(axis=1)
    denominator = support + predicted
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    n = counts.sum(axis=(1, 2))
    return [
        (value, int(n[i]), float(tp[i].sum() / n[i]), float(f1[i].mean()))
        for i, value in enumerate(order)
    ]
