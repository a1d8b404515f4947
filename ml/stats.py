"""Is model B really better than model A on the same holdout?

Paired bootstrap confidence intervals of metric differences (and of each
class's recall difference, from the same resamples), McNemar's exact test on
correctness, and the flipped samples.

The bootstrap draws one (n_resamples, n) index matrix from the seed and uses
it for every metric, so all intervals come from the same resamples. Every
metric here depends on a row only through its (true, predicted by A,
predicted by B) triple, of which a holdout has at most k³ kinds (27 for three
classes). So each row is reduced to its cell, one ``bincount`` per chunk of
resamples counts the cells of every resample, and the per-class true /
predicted / true-positive counts and gains follow from a tiny
(resamples × cells) @ (cells × columns) product. 20,000 rows × 2,000 resamples
take about half a second (bench/bench_ml.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from .evaluation import encode, gain_array

METRICS = ("accuracy", "macro_f1", "value_per_1000")
# Index-matrix entries handled per bincount. Measured on a 20,000-row holdout
# with 27 cells: 10-20 resamples a chunk (temporaries of 1-3 MB, cache-resident)
# ran in 0.50 s; 50 in 0.71 s, 400 in 1.06 s, all 2,000 at once in 2.4 s.
CHUNK_ENTRIES = 300_000


@dataclass(frozen=True)
class BootstrapCI:
    """Percentile interval of (metric of B − metric of A)."""

    metric: str
    a: float  # metric of A on the whole holdout
    b: float
    difference: float  # b − a
    low: float
    high: float
    confidence: float
    n_resamples: int
    seed: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class RecallCI:
    """Percentile interval of (recall of B − recall of A) for one class;
    None throughout when the holdout has no sample of the class."""

    label: object
    a: float | None
    b: float | None
    difference: float | None
    low: float | None
    high: float | None
    confidence: float


@dataclass(frozen=True)
class PairedComparison:
    metrics: dict[str, BootstrapCI]
    recall: list[RecallCI]  # in ``classes`` order


@dataclass(frozen=True)
class McNemar:
    b: int  # A correct, B wrong
    c: int  # A wrong, B correct
    n: int  # samples compared
    p_value: float  # exact two-sided binomial test on b of b + c


@dataclass(frozen=True)
class Flips:
    fixed: list  # A wrong, B right (positions, or ids when given)
    broken: list  # A right, B wrong


def bootstrap_indices(n: int, n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """The (n_resamples, n) matrix of row indices all metrics share.
    int32 halves its memory (160 MB for 20,000 × 2,000)."""
    if n <= 0:
        raise ValueError("cannot bootstrap zero samples")
    if n_resamples < 1:
        raise ValueError("n_resamples must be positive")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_resamples, n), dtype=np.int32)


def _cells(t, pa, pb, k, gains):
    """Each row's cell (its distinct (true, A, B) triple) and, per cell, the
    columns [true==c (k) | A==c (k) | B==c (k) | TP of A (k) | TP of B (k) |
    gain of A | gain of B] whose count-weighted sums give every metric."""
    code = (t * k + pa) * k + pb
    triples, cell = np.unique(code, return_inverse=True)
    ct, ca, cb = triples // (k * k), (triples // k) % k, triples % k
    eye = np.eye(k)
    zeros = np.zeros(len(triples))
    columns = np.hstack(
        [
            eye[ct],
            eye[ca],
            eye[cb],
            eye[ct] * (ca == ct)[:, None],
            eye[ct] * (cb == ct)[:, None],
            (gains[ct, ca] if gains is not None else zeros)[:, None],
            (gains[ct, cb] if gains is not None else zeros)[:, None],
        ]
    )
    return cell.astype(np.int32), columns


def _metrics_from_sums(sums, n, k, names):
    """sums: (R, 5k + 2) weighted totals → {metric: (values A, values B)}."""
    out = {}
    true = sums[:, :k]
    pred = (sums[:, k : 2 * k], sums[:, 2 * k : 3 * k])
    tp = (sums[:, 3 * k : 4 * k], sums[:, 4 * k : 5 * k])
    for name in names:
        if name == "accuracy":
            out[name] = (tp[0].sum(axis=1) / n, tp[1].sum(axis=1) / n)
        elif name == "macro_f1":
            values = []
            for side in (0, 1):
                denominator = pred[side] + true
                with np.errstate(divide="ignore", invalid="ignore"):
                    f1 = np.where(denominator > 0, 2 * tp[side] / denominator, 0.0)
                values.append(f1.mean(axis=1))
            out[name] = tuple(values)
        elif name == "value_per_1000":
            out[name] = (1000 * sums[:, -2] / n, 1000 * sums[:, -1] / n)
    return out


def _prepare(y_true, pred_a, pred_b, classes, metrics, gain_matrix):
    classes = list(classes)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
    if "value_per_1000" in metrics and gain_matrix is None:
        raise ValueError("value_per_1000 needs a gain_matrix")
    t = encode(y_true, classes)
    pa = encode(pred_a, classes)
    pb = encode(pred_b, classes)
    if not len(t) == len(pa) == len(pb):
        raise ValueError(
            f"lengths differ: {len(t)} labels, {len(pa)} predictions of A, {len(pb)} of B"
        )
    if len(t) == 0:
        raise ValueError("cannot compare models on zero samples")
    gains = gain_array(gain_matrix, classes) if gain_matrix is not None else None
    return t, pa, pb, len(classes), gains


def bootstrap_distribution(
    y_true,
    pred_a,
    pred_b,
    classes: Sequence,
    *,
    metrics: Sequence[str] = ("accuracy", "macro_f1"),
    gain_matrix=None,
    n_resamples: int = 2000,
    seed: int = 0,
    indices: np.ndarray | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each metric of A and of B on every resample: {metric: (A values, B values)}."""
    t, pa, pb, k, gains = _prepare(y_true, pred_a, pred_b, classes, metrics, gain_matrix)
    n = len(t)
    if indices is None:
        indices = bootstrap_indices(n, n_resamples, seed)
    sums = _resample_sums(t, pa, pb, k, gains, indices)
    return _metrics_from_sums(sums, n, k, metrics)


def _resample_sums(t, pa, pb, k, gains, indices) -> np.ndarray:
    """(resamples, 5k + 2) column totals of every resample (see ``_cells``)."""
    n = len(t)
    cell, columns = _cells(t, pa, pb, k, gains)
    m = columns.shape[0]
    counts = np.empty((indices.shape[0], m))
    chunk = max(1, CHUNK_ENTRIES // n)
    for start in range(0, indices.shape[0], chunk):
        block = indices[start : start + chunk]
        rows = block.shape[0]
        # Resample r's cell counts live at r*m .. r*m+m-1 of one flat bincount.
        keys = cell[block]
        keys += (np.arange(rows, dtype=np.int32) * m)[:, None]
        counts[start : start + rows] = np.bincount(keys.ravel(), minlength=rows * m).reshape(
            rows, m
        )
    return counts @ columns


def paired_bootstrap(
    y_true,
    pred_a,
    pred_b,
    classes: Sequence,
    *,
    metrics: Sequence[str] = ("accuracy", "macro_f1"),
    gain_matrix=None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, BootstrapCI]:
    """Percentile confidence interval of metric(B) − metric(A) for each metric,
    resampling the holdout rows with replacement (the same rows for A and B:
    the pairing is what makes small differences detectable)."""
    return paired_comparison(
        y_true,
        pred_a,
        pred_b,
        classes,
        metrics=metrics,
        gain_matrix=gain_matrix,
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
    ).metrics


def paired_comparison(
    y_true,
    pred_a,
    pred_b,
    classes: Sequence,
    *,
    metrics: Sequence[str] = ("accuracy", "macro_f1"),
    gain_matrix=None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """``paired_bootstrap``'s intervals plus each class's recall difference,
    all from the same resamples (one index matrix, one pass of counting).

    A resample that happens to hold no sample of a class has no recall for
    it; the recall interval is taken over the resamples that do. A class
    with no sample in the holdout at all gets None for its recalls and
    interval (it cannot be measured, and a number would pretend otherwise).
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    metrics = list(metrics)
    t, pa, pb, k, gains = _prepare(y_true, pred_a, pred_b, classes, metrics, gain_matrix)
    n = len(t)
    sums = _resample_sums(t, pa, pb, k, gains, bootstrap_indices(n, n_resamples, seed))
    # The whole holdout is the "resample" that takes every row once.
    whole_sums = _resample_sums(t, pa, pb, k, gains, np.arange(n, dtype=np.int32)[None, :])
    distribution = _metrics_from_sums(sums, n, k, metrics)
    whole = _metrics_from_sums(whole_sums, n, k, metrics)
    tail = (1 - confidence) / 2
    result = {}
    for name in metrics:
        a_values, b_values = distribution[name]
        low, high = np.quantile(b_values - a_values, [tail, 1 - tail])
        a, b = float(whole[name][0][0]), float(whole[name][1][0])
        result[name] = BootstrapCI(
            metric=name,
            a=a,
            b=b,
            difference=b - a,
            low=float(low),
            high=float(high),
            confidence=confidence,
            n_resamples=n_resamples,
            seed=seed,
        )
    recalls = []
    true, tp_a, tp_b = sums[:, :k], sums[:, 3 * k : 4 * k], sums[:, 4 * k : 5 * k]
    support = whole_sums[0, :k]
    with np.errstate(divide="ignore", invalid="ignore"):
        differences = np.where(true > 0, (tp_b - tp_a) / true, np.nan)
    for i, label in enumerate(list(classes)):
        if support[i] == 0:
            recalls.append(RecallCI(label, None, None, None, None, None, confidence))
            continue
        column = differences[:, i]
        column = column[~np.isnan(column)]
        a = float(whole_sums[0, 3 * k + i] / support[i])
        b = float(whole_sums[0, 4 * k + i] / support[i])
        low, high = np.quantile(column, [tail, 1 - tail]) if len(column) else (None, None)
        recalls.append(
            RecallCI(
                label,
                a,
                b,
                b - a,
                None if low is None else float(low),
                None if high is None else float(high),
                confidence,
            )
        )
    return PairedComparison(metrics=result, recall=recalls)


def _correctness(y_true, pred_a, pred_b):
    y = np.asarray(y_true, dtype=object)
    a = np.asarray(pred_a, dtype=object)
    b = np.asarray(pred_b, dtype=object)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"lengths differ: {len(y)} labels, {len(a)} and {len(b)} predictions")
    return a == y, b == y


def mcnemar_exact(y_true, pred_a, pred_b) -> McNemar:
    """McNemar's exact test: of the samples exactly one model gets right, is the
    split between them further from 50/50 than chance allows?"""
    right_a, right_b = _correctness(y_true, pred_a, pred_b)
    b = int((right_a & ~right_b).sum())
    c = int((~right_a & right_b).sum())
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return McNemar(b=b, c=c, n=len(right_a), p_value=p_value)


def flipped_samples(y_true, pred_a, pred_b, ids: Sequence | None = None) -> Flips:
    """Samples B fixed (A wrong, B right) and broke (A right, B wrong), as
    positions or, given ``ids`` aligned with the labels, as those ids."""
    right_a, right_b = _correctness(y_true, pred_a, pred_b)
    fixed = np.flatnonzero(~right_a & right_b)
    broken = np.flatnonzero(right_a & ~right_b)
    if ids is None:
        return Flips(fixed=fixed.tolist(), broken=broken.tolist())
    ids = list(ids)
    if len(ids) != len(right_a):
        raise ValueError(f"{len(ids)} ids for {len(right_a)} samples")
    return Flips(fixed=[ids[i] for i in fixed], broken=[ids[i] for i in broken])
