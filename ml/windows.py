"""Mergeable aggregates of production predictions, one per time window.

Monitoring never rescans all logs: each scheduled run aggregates only the
new logs into per-window aggregates, and an aggregate of a larger window (a
day, a version's lifetime) is the sum of smaller ones. So everything stored
here is a count or a sum:

- volume, predicted-class counts;
- a confidence histogram (top-class probability in fixed bins);
- a latency histogram in fixed log-spaced buckets, from which percentiles
  are read back to within a bucket's width (~12%);
- where ground truth exists: labelled count, correct count, per-class
  (true, correct) counts, and the value metric's sum of gains.

Intervals are computed when read: Wilson's interval for accuracy and recall,
a normal interval for the mean gain (from the sum of squared gains).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE_BINS = 10  # [0, 0.1), ..., [0.9, 1.0]
# Latency buckets: 0.1 ms to ~100 s, 12 per decade (each ~21% wider than the last).
LATENCY_EDGES = np.round(10 ** np.arange(-1, 5.0001, 1 / 12), 6)


@dataclass
class Aggregate:
    """Counts and sums of one window; ``+`` merges two windows."""

    n: int = 0
    predicted: dict = field(default_factory=dict)  # class -> count
    confidence: list = field(default_factory=lambda: [0] * CONFIDENCE_BINS)
    latency: list = field(default_factory=lambda: [0] * (len(LATENCY_EDGES) + 1))
    labelled: int = 0
    correct: int = 0
    true: dict = field(default_factory=dict)  # true class -> count (labelled rows)
    true_correct: dict = field(default_factory=dict)  # true class -> correctly predicted
    gain_sum: float = 0.0
    gain_sq_sum: float = 0.0
    gain_n: int = 0

    def __add__(self, other: Aggregate) -> Aggregate:
        return Aggregate(
            n=self.n + other.n,
            predicted=_add_counts(self.predicted, other.predicted),
            confidence=[a + b for a, b in zip(self.confidence, other.confidence, strict=True)],
            latency=[a + b for a, b in zip(self.latency, other.latency, strict=True)],
            labelled=self.labelled + other.labelled,
            correct=self.correct + other.correct,
            true=_add_counts(self.true, other.true),
            true_correct=_add_counts(self.true_correct, other.true_correct),
            gain_sum=self.gain_sum + other.gain_sum,
            gain_sq_sum=self.gain_sq_sum + other.gain_sq_sum,
            gain_n=self.gain_n + other.gain_n,
        )

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "predicted": dict(self.predicted),
            "confidence": list(self.confidence),
            "latency": list(self.latency),
            "labelled": self.labelled,
            "correct": self.correct,
            "true": dict(self.true),
            "true_correct": dict(self.true_correct),
            "gain_sum": self.gain_sum,
            "gain_sq_sum": self.gain_sq_sum,
            "gain_n": self.gain_n,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Aggregate:
        return cls(**{k: data[k] for k in cls().as_dict() if k in data})


def _add_counts(a: Mapping, b: Mapping) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + value
    return out


def aggregate(
    predicted: Sequence,
    confidence: Sequence,
    latency_ms: Sequence | None = None,
    *,
    true: Sequence | None = None,
    gain_matrix: Mapping | None = None,
) -> Aggregate:
    """One window's aggregate from aligned columns. ``true`` holds the
    ground truth where known (None/NaN elsewhere); ``gain_matrix`` is
    ``{true: {predicted: gain}}`` (missing cells count 0)."""
    pred = pd.Series(predicted, dtype=object)
    n = len(pred)
    conf = np.asarray(confidence, dtype=float)
    if len(conf) != n:
        raise ValueError(f"{len(conf)} confidences for {n} predictions")
    if n and (np.isnan(conf).any() or (conf < 0).any() or (conf > 1).any()):
        raise ValueError("confidences must be numbers between 0 and 1")
    result = Aggregate(n=n)
    result.predicted = {str(k): int(v) for k, v in pred.astype(str).value_counts().items()}
    bins = np.minimum((conf * CONFIDENCE_BINS).astype(int), CONFIDENCE_BINS - 1)
    result.confidence = np.bincount(bins, minlength=CONFIDENCE_BINS).tolist()
    if latency_ms is not None:
        lat = np.asarray(latency_ms, dtype=float)
        if len(lat) != n:
            raise ValueError(f"{len(lat)} latencies for {n} predictions")
        lat = lat[~np.isnan(lat)]
        buckets = np.searchsorted(LATENCY_EDGES, lat, side="right")
        result.latency = np.bincount(buckets, minlength=len(LATENCY_EDGES) + 1).tolist()
    if true is not None:
        truth = pd.Series(true, dtype=object)
        if len(truth) != n:
            raise ValueError(f"{len(truth)} ground-truth values for {n} predictions")
        known = ~truth.isna().to_numpy()
        t = truth[known].astype(str).to_numpy()
        p = pred[known].astype(str).to_numpy()
        right = t == p
        result.labelled = int(known.sum())
        result.correct = int(right.sum())
        result.true = {str(k): int(v) for k, v in pd.Series(t).value_counts().items()}
        result.true_correct = {
            str(k): int(v) for k, v in pd.Series(t[right]).value_counts().items()
        }
        if gain_matrix:
            gains = np.array(
                [float((gain_matrix.get(a) or {}).get(b, 0.0)) for a, b in zip(t, p, strict=True)]
            )
            result.gain_sum = float(gains.sum())
            result.gain_sq_sum = float((gains**2).sum())
            result.gain_n = len(gains)
    return result


def merge(aggregates: Iterable[Aggregate]) -> Aggregate:
    total = Aggregate()
    for a in aggregates:
        total = total + a
    return total


def latency_percentile(agg: Aggregate, q: float) -> float | None:
    """The q-th percentile (0-100) of latency, as the upper edge of the bucket
    it falls in (an over-estimate by at most one bucket's width)."""
    counts = np.asarray(agg.latency)
    total = counts.sum()
    if total == 0:
        return None
    position = np.searchsorted(np.cumsum(counts), q / 100 * total)
    position = min(int(position), len(LATENCY_EDGES))
    if position == len(LATENCY_EDGES):
        return float("inf")
    return float(LATENCY_EDGES[position])


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion; None without observations."""
    if n <= 0:
        return None
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass(frozen=True)
class Summary:
    n: int
    predicted_share: dict
    mean_confidence: float | None  # from the histogram's bin centres
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    coverage: float | None  # share of predictions with ground truth
    accuracy: float | None
    accuracy_ci: tuple[float, float] | None
    recall: dict  # class -> (recall, (low, high))
    value_per_1000: float | None
    value_ci: tuple[float, float] | None


def summarise(agg: Aggregate, confidence: float = 0.95) -> Summary:
    n = agg.n
    conf_counts = np.asarray(agg.confidence, dtype=float)
    centres = (np.arange(CONFIDENCE_BINS) + 0.5) / CONFIDENCE_BINS
    mean_conf = float(conf_counts @ centres / conf_counts.sum()) if conf_counts.sum() else None
    value = value_ci = None
    if agg.gain_n:
        mean = agg.gain_sum / agg.gain_n
        value = 1000 * mean
        if agg.gain_n > 1:
            variance = max(agg.gain_sq_sum / agg.gain_n - mean * mean, 0.0)
            se = np.sqrt(variance / (agg.gain_n - 1))
            z = stats.norm.ppf(0.5 + confidence / 2)
            value_ci = (float(1000 * (mean - z * se)), float(1000 * (mean + z * se)))
    return Summary(
        n=n,
        predicted_share={k: v / n for k, v in agg.predicted.items()} if n else {},
        mean_confidence=mean_conf,
        latency_p50=latency_percentile(agg, 50),
        latency_p95=latency_percentile(agg, 95),
        latency_p99=latency_percentile(agg, 99),
        coverage=agg.labelled / n if n else None,
        accuracy=agg.correct / agg.labelled if agg.labelled else None,
        accuracy_ci=wilson(agg.correct, agg.labelled, confidence),
        recall={
            k: (agg.true_correct.get(k, 0) / v, wilson(agg.true_correct.get(k, 0), v, confidence))
            for k, v in sorted(agg.true.items())
        },
        value_per_1000=value,
        value_ci=value_ci,
    )
