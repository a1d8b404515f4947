"""Inter-annotator agreement: how far a project's labels can be trusted.

The input is one row per (item, annotator) holding that annotator's *current*
label (columns ``item``, ``annotator``, ``label`` and optionally ``seconds``,
the time spent on that label). Everything is computed from two small arrays:
the item × class count table (how many annotators gave each class to each
item) and the pairs of annotators who labelled the same item, so a project
with a million labels costs a few numpy passes, not a Python loop per item.

A metric that cannot be computed is ``None`` with a ``reason`` saying why
(no overlap, one class only), never a silent 0 or NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import krippendorff
import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import fleiss_kappa as _statsmodels_fleiss_kappa

ONE_CLASS = "every label here is the same class, so chance agreement is 1 and kappa is undefined"


@dataclass(frozen=True)
class Metric:
    value: float | None
    items: int  # items the value was computed on
    reason: str = ""  # why ``value`` is None
    detail: str = ""  # which items / pairs were used


@dataclass(frozen=True)
class PairKappa:
    """Cohen's kappa between two annotators on the items both labelled."""

    a: object
    b: object
    items: int
    kappa: float | None
    agreement: float
    reason: str = ""


@dataclass(frozen=True)
class AnnotatorAgreement:
    annotator: object
    labels: int
    # Items this annotator labelled that have a consensus and at least one
    # other annotator's label, so a lone label never "agrees" with itself.
    compared: int
    agreement_with_consensus: float | None
    kappa_with_consensus: Metric
    labelled_seconds: float
    labels_per_hour: float | None
    median_seconds: float | None


@dataclass(frozen=True)
class PairConfusion:
    """Label pairs given to the same item by two different annotators.

    ``counts[i][j]`` (i != j) is the number of annotator pairs where one chose
    ``classes[i]`` and the other ``classes[j]`` (the matrix is symmetric);
    ``counts[i][i]`` the number of pairs that both chose ``classes[i]``.
    ``specific_agreement[i]`` is 2·n_ii / (2·n_ii + Σ_{j≠i} n_ij): of the pair
    members who said ``classes[i]``, the share whose partner said it too.
    """

    classes: list
    counts: list[list[int]]
    specific_agreement: list[float | None]


@dataclass(frozen=True)
class AgreementReport:
    labels: int
    items: int
    annotators: int
    items_multi: int  # items with labels from two or more annotators
    classes: list
    observed_agreement: Metric
    cohen_kappa: Metric
    fleiss_kappa: Metric
    krippendorff_alpha: Metric
    per_annotator: list[AnnotatorAgreement] = field(default_factory=list)
    pairs: list[PairKappa] = field(default_factory=list)
    confusion: PairConfusion | None = None


def agreement_report(
    labels: pd.DataFrame,
    *,
    consensus: Mapping | pd.Series | None = None,
    classes: Sequence | None = None,
    min_pair_items: int = 10,
) -> AgreementReport:
    """Project-level and per-annotator agreement.

    ``consensus`` maps item → consensus label (items without one are simply
    absent or None); when omitted, the strict plurality of the labels is used
    and ties have none. ``classes`` fixes the class order (default: sorted
    labels seen). With more than two annotators, Cohen's kappa is the mean
    over annotator pairs sharing at least ``min_pair_items`` items.
    """
    frame = _clean(labels, classes)
    class_list = list(frame["label"].cat.categories)
    k = len(class_list)
    item_codes, items = pd.factorize(frame["item"], sort=True)
    annotator_codes, annotators = pd.factorize(frame["annotator"], sort=True)
    label_codes = frame["label"].cat.codes.to_numpy()
    n_items = len(items)

    counts = np.bincount(item_codes * k + label_codes, minlength=n_items * k).reshape(n_items, k)
    raters = counts.sum(axis=1)
    multi = raters >= 2
    n_multi = int(multi.sum())

    pairs = _pairs(item_codes, annotator_codes, label_codes, annotators, k)
    if consensus is None:
        consensus_codes = _plurality(counts)
    else:
        consensus_codes = _consensus_codes(consensus, items, class_list)

    return AgreementReport(
        labels=len(frame),
        items=n_items,
        annotators=len(annotators),
        items_multi=n_multi,
        classes=class_list,
        observed_agreement=_observed(counts[multi]),
        cohen_kappa=_cohen(pairs, len(annotators), min_pair_items),
        fleiss_kappa=_fleiss(counts[multi]),
        krippendorff_alpha=_alpha(counts[multi]),
        per_annotator=_per_annotator(
            frame, item_codes, annotator_codes, label_codes, annotators, multi, consensus_codes, k
        ),
        pairs=pairs,
        confusion=_confusion(counts[multi], class_list) if n_multi else None,
    )


# --- input ------------------------------------------------------------------------


def _clean(labels: pd.DataFrame, classes) -> pd.DataFrame:
    missing = {"item", "annotator", "label"} - set(labels.columns)
    if missing:
        raise ValueError(
            f"labels needs the columns item, annotator, label; missing: {sorted(missing)}"
        )
    columns = ["item", "annotator", "label"] + (["seconds"] if "seconds" in labels.columns else [])
    # A row without a label is a skip: the annotator gave no answer.
    frame = labels.loc[labels["label"].notna(), columns].reset_index(drop=True)
    duplicated = frame.duplicated(["item", "annotator"], keep=False)
    if duplicated.any():
        first = frame.loc[duplicated].iloc[0]
        raise ValueError(
            f"{int(duplicated.sum())} rows repeat an (item, annotator) pair, e.g. item "
            f"{_plain(first['item'])!r} / annotator {_plain(first['annotator'])!r}: pass each annotator's "
            "current label only."
        )
    if classes is None:
        classes = sorted(frame["label"].unique().tolist())
    unknown = sorted(set(frame["label"].unique().tolist()) - set(classes), key=str)
    if unknown:
        raise ValueError(f"labels outside the given classes: {unknown[:5]}")
    frame["label"] = pd.Categorical(frame["label"], categories=list(classes))
    if "seconds" not in frame.columns:
        frame["seconds"] = np.nan
    frame["seconds"] = pd.to_numeric(frame["seconds"], errors="coerce").astype(float)
    return frame


def _plurality(counts: np.ndarray) -> np.ndarray:
    """Each item's strict plurality class code, or -1 for a tie / no label."""
    if counts.size == 0:
        return np.full(counts.shape[0], -1)
    top = counts.argmax(axis=1)
    top_count = counts.max(axis=1)
    tied = (counts == top_count[:, None]).sum(axis=1) > 1
    return np.where(tied | (top_count == 0), -1, top)


def _consensus_codes(consensus, items, class_list) -> np.ndarray:
    series = pd.Series(consensus, dtype=object).dropna()
    unknown = sorted(set(series.unique().tolist()) - set(class_list), key=str)
    if unknown:
        raise ValueError(f"consensus labels outside the classes: {unknown[:5]}")
    position = {label: code for code, label in enumerate(class_list)}
    aligned = series.reindex(pd.Index(items)).map(position)
    return aligned.fillna(-1).to_numpy(dtype=np.int64)


# --- project-level metrics --------------------------------------------------------------


def _observed(counts: np.ndarray) -> Metric:
    """Mean over items of the share of annotator pairs that agree (no chance correction)."""
    if counts.shape[0] == 0:
        return Metric(None, 0, reason="no item has labels from two annotators")
    n = counts.sum(axis=1)
    per_item = (counts * (counts - 1)).sum(axis=1) / (n * (n - 1))
    return Metric(float(per_item.mean()), int(counts.shape[0]))


def _fleiss(counts: np.ndarray) -> Metric:
    """Fleiss' kappa needs the same number of raters per item: use the most
    common count (the larger on a tie) and say how many items that leaves."""
    if counts.shape[0] == 0:
        return Metric(None, 0, reason="no item has labels from two annotators")
    raters = counts.sum(axis=1)
    sizes, frequency = np.unique(raters, return_counts=True)
    m = int(sizes[frequency == frequency.max()].max())
    table = counts[raters == m]
    left_out = int(counts.shape[0] - table.shape[0])
    detail = f"on the {table.shape[0]} items labelled by exactly {m} annotators"
    if left_out:
        detail += f" ({left_out} items with a different number of labels left out)"
    if (table.sum(axis=0) > 0).sum() < 2:
        return Metric(None, int(table.shape[0]), reason=ONE_CLASS, detail=detail)
    value = _statsmodels_fleiss_kappa(table, method="fleiss")
    return Metric(float(value), int(table.shape[0]), detail=detail)


def _alpha(counts: np.ndarray) -> Metric:
    if counts.shape[0] == 0:
        return Metric(None, 0, reason="no item has labels from two annotators")
    if (counts.sum(axis=0) > 0).sum() < 2:
        return Metric(
            None,
            int(counts.shape[0]),
            reason="every label is the same class, so expected disagreement is 0 "
            "and alpha is undefined",
        )
    value = krippendorff.alpha(value_counts=counts, level_of_measurement="nominal")
    return Metric(
        float(value),
        int(counts.shape[0]),
        detail=f"nominal, on all {counts.shape[0]} items with two or more labels",
    )


def _pairs(item_codes, annotator_codes, label_codes, annotators, k) -> list[PairKappa]:
    """Cohen's kappa for every annotator pair that shares an item."""
    rows = pd.DataFrame({"item": item_codes, "who": annotator_codes, "label": label_codes})
    joined = rows.merge(rows, on="item", suffixes=("_a", "_b"))
    joined = joined[joined["who_a"] < joined["who_b"]]
    pair_codes, pair_index = pd.factorize(
        pd.MultiIndex.from_arrays([joined["who_a"], joined["who_b"]]), sort=True
    )
    tables = _confusions(
        pair_codes, joined["label_a"].to_numpy(), joined["label_b"].to_numpy(), len(pair_index), k
    )
    result = []
    for (a, b), table in zip(pair_index, tables, strict=True):
        kappa, reason = _kappa(table)
        n = int(table.sum())
        result.append(
            PairKappa(
                a=_plain(annotators[a]),
                b=_plain(annotators[b]),
                items=n,
                kappa=kappa,
                agreement=float(np.trace(table) / n),
                reason=reason,
            )
        )
    return result


def _cohen(pairs: list[PairKappa], n_annotators: int, min_pair_items: int) -> Metric:
    if n_annotators < 2:
        return Metric(None, 0, reason="fewer than two annotators have labelled")
    if not pairs:
        return Metric(None, 0, reason="no two annotators have labelled the same item")
    if n_annotators == 2:
        pair = pairs[0]
        return Metric(
            pair.kappa,
            pair.items,
            reason=pair.reason,
            detail=f"{pair.a} and {pair.b} on the {pair.items} items both labelled",
        )
    big = [p for p in pairs if p.items >= min_pair_items]
    usable = [p for p in big if p.kappa is not None]
    detail = (
        f"mean over {len(usable)} of {len(pairs)} annotator pairs "
        f"(pairs need at least {min_pair_items} shared items"
        + (
            f"; {len(big) - len(usable)} with one class only left out"
            if len(big) > len(usable)
            else ""
        )
        + ")"
    )
    if not usable:
        reason = (
            f"no annotator pair shares {min_pair_items} or more items"
            if not big
            else "kappa is undefined for every annotator pair (one class only)"
        )
        return Metric(None, 0, reason=reason, detail=detail)
    value = float(np.mean([p.kappa for p in usable]))
    return Metric(value, sum(p.items for p in usable), detail=detail)


def _confusions(groups, y1, y2, n_groups, k) -> np.ndarray:
    """One k × k confusion table per group (an annotator pair, or an annotator
    against consensus), from a single bincount."""
    flat = np.bincount((groups * k + y1) * k + y2, minlength=n_groups * k * k)
    return flat.reshape(n_groups, k, k)


def _kappa(table: np.ndarray) -> tuple[float | None, str]:
    """Cohen's kappa from a confusion table: (p_o − p_e) / (1 − p_e).

    This is what ``sklearn.metrics.cohen_kappa_score`` computes (the tests
    check the two agree); working from tables lets one numpy pass serve every
    annotator pair, where sklearn's input checks cost ~10 ms a call, i.e.
    seconds for a team of 30.
    """
    n = table.sum()
    if n == 0:
        return None, "no shared items"
    rows, cols = table.sum(axis=1) / n, table.sum(axis=0) / n
    if ((rows + cols) > 0).sum() < 2:
        return None, ONE_CLASS
    observed = np.trace(table) / n
    expected = float(rows @ cols)
    return float((observed - expected) / (1 - expected)), ""


def _confusion(counts: np.ndarray, class_list) -> PairConfusion:
    co = counts.T @ counts
    totals = counts.sum(axis=0)
    matrix = co.copy()
    np.fill_diagonal(matrix, (np.diag(co) - totals) // 2)
    specific = []
    for i in range(len(class_list)):
        members = 2 * matrix[i, i] + (matrix[i].sum() - matrix[i, i])
        specific.append(float(2 * matrix[i, i] / members) if members else None)
    return PairConfusion(
        classes=class_list,
        counts=[[int(v) for v in row] for row in matrix],
        specific_agreement=specific,
    )


# --- per annotator ------------------------------------------------------------------------


def _per_annotator(
    frame, item_codes, annotator_codes, label_codes, annotators, multi, consensus_codes, k
) -> list[AnnotatorAgreement]:
    item_consensus = consensus_codes[item_codes]
    compared = multi[item_codes] & (item_consensus >= 0)
    tables = _confusions(
        annotator_codes[compared],
        label_codes[compared],
        item_consensus[compared],
        len(annotators),
        k,
    )
    labels = np.bincount(annotator_codes, minlength=len(annotators))
    seconds = frame["seconds"].to_numpy()
    timed = np.isfinite(seconds) & (seconds >= 0)
    by_annotator = pd.Series(seconds[timed]).groupby(annotator_codes[timed])
    totals, medians, timed_counts = by_annotator.sum(), by_annotator.median(), by_annotator.size()
    result = []
    for code, annotator in enumerate(annotators):
        table = tables[code]
        n = int(table.sum())
        if n:
            agreement = float(np.trace(table) / n)
            kappa, reason = _kappa(table)
            kappa_metric = Metric(kappa, n, reason=reason)
        else:
            agreement = None
            kappa_metric = Metric(
                None, 0, reason="no item of theirs has a consensus that others labelled too"
            )
        total = float(totals.get(code, 0.0))
        result.append(
            AnnotatorAgreement(
                annotator=_plain(annotator),
                labels=int(labels[code]),
                compared=n,
                agreement_with_consensus=agreement,
                kappa_with_consensus=kappa_metric,
                labelled_seconds=total,
                labels_per_hour=(int(timed_counts[code]) * 3600 / total) if total > 0 else None,
                median_seconds=float(medians[code]) if code in medians.index else None,
            )
        )
    result.sort(key=lambda row: (-row.labels, str(row.annotator)))
    return result


def _plain(value):
    """numpy scalars → Python ones, so reports serialise as JSON."""
    return value.item() if isinstance(value, np.generic) else value
