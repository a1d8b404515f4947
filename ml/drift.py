"""Has production data moved away from what the model was trained on?

Each function compares a *reference* sample (the production model's training
snapshot) with a *current* one (a window of production logs) and returns a
frozen dataclass of Python numbers, ready to store as JSON:

- numeric fields: the population stability index over the reference's
  quantile bins, and the two-sample Kolmogorov-Smirnov test;
- categorical fields: PSI over the categories, and the chi-square test of the
  two count vectors;
- text fields: the share of current tokens the reference never saw, and the
  cosine distance between the two TF-IDF centroids (fitted on the reference);
- predictions: PSI of the predicted-class distribution.

PSI reads: < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a major one (the
usual credit-scoring rule of thumb, used as the default thresholds).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

# Proportions are floored at this before taking logs, so an empty bin on one
# side gives a large but finite PSI instead of infinity.
EPSILON = 1e-4
PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


@dataclass(frozen=True)
class NumericDrift:
    field: str
    psi: float
    ks_statistic: float
    ks_p_value: float
    reference_n: int
    current_n: int
    reference_missing: float  # share of missing values
    current_missing: float
    bins: list[float] = field(default_factory=list)  # inner bin edges (reference quantiles)


@dataclass(frozen=True)
class CategoricalDrift:
    field: str
    psi: float
    chi2: float | None  # None when the test is undefined (a single category overall)
    chi2_p_value: float | None
    reference_n: int
    current_n: int
    reference_share: dict = field(default_factory=dict)
    current_share: dict = field(default_factory=dict)
    unseen_share: float = 0.0  # share of current values the reference never had

    @property
    def largest_share_change(self) -> tuple[str, float]:
        """The category whose share moved most, and by how much (current −
        reference, as a fraction). PSI barely moves when a two-class share
        goes from 22% to 33%; this is the number people read."""
        changes = {
            c: self.current_share.get(c, 0.0) - self.reference_share.get(c, 0.0)
            for c in self.reference_share.keys() | self.current_share.keys()
        }
        if not changes:
            return "", 0.0
        # Two classes always move by the same amount; name the rarer one
        # ("late moved 22% → 31%" rather than "on time moved 78% → 69%").
        category = max(
            sorted(changes),
            key=lambda c: (round(abs(changes[c]), 9), -self.reference_share.get(c, 0.0)),
        )
        return category, changes[category]


@dataclass(frozen=True)
class TextDrift:
    field: str
    oov_share: float  # share of current tokens absent from the reference vocabulary
    reference_oov_share: float  # the same, reference half vs other half: the noise floor
    centroid_distance: float  # 1 - cosine similarity of the TF-IDF centroids
    reference_n: int
    current_n: int


@dataclass(frozen=True)
class Alert:
    field: str
    measure: str
    value: float
    threshold: float
    sentence: str


def psi(reference_share, current_share) -> float:
    """Population stability index of two aligned proportion vectors."""
    ref = np.maximum(np.asarray(reference_share, dtype=float), EPSILON)
    cur = np.maximum(np.asarray(current_share, dtype=float), EPSILON)
    if ref.shape != cur.shape:
        raise ValueError(f"proportions differ in length: {ref.shape} vs {cur.shape}")
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros_like(counts, dtype=float)


def numeric_drift(
    name: str, reference: Sequence, current: Sequence, *, n_bins: int = 10
) -> NumericDrift:
    """PSI over the reference's quantile bins (missing values are a bin of
    their own) and the KS test on the non-missing values."""
    ref = pd.to_numeric(pd.Series(reference, dtype=object), errors="coerce").to_numpy(float)
    cur = pd.to_numeric(pd.Series(current, dtype=object), errors="coerce").to_numpy(float)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError(f"field {name!r}: drift needs values on both sides")
    ref_ok, cur_ok = ref[~np.isnan(ref)], cur[~np.isnan(cur)]
    if len(ref_ok) == 0:
        raise ValueError(f"field {name!r}: the reference has no numeric values")
    edges = np.unique(np.quantile(ref_ok, np.linspace(0, 1, n_bins + 1)[1:-1]))
    ref_counts = np.append(
        np.bincount(np.searchsorted(edges, ref_ok, side="right"), minlength=len(edges) + 1),
        np.isnan(ref).sum(),
    )
    cur_counts = np.append(
        np.bincount(np.searchsorted(edges, cur_ok, side="right"), minlength=len(edges) + 1),
        np.isnan(cur).sum(),
    )
    if len(cur_ok):
        ks = stats.ks_2samp(ref_ok, cur_ok)
        ks_statistic, ks_p = float(ks.statistic), float(ks.pvalue)
    else:
        ks_statistic, ks_p = 1.0, 0.0
    return NumericDrift(
        field=name,
        psi=psi(_shares(ref_counts), _shares(cur_counts)),
        ks_statistic=ks_statistic,
        ks_p_value=ks_p,
        reference_n=len(ref),
        current_n=len(cur),
        reference_missing=float(np.isnan(ref).mean()),
        current_missing=float(np.isnan(cur).mean()),
        bins=[float(e) for e in edges],
    )


# Categories seen fewer times than this on both sides are pooled into one
# (``RARE``) before PSI and chi-square: a share of 1 in 4,000 says nothing,
# the chi-square test needs a few expected counts per cell, and a field of
# identifiers (every value new) would otherwise read as a "major shift" of a
# thousand categories of one row each. Beyond ``MAX_CATEGORIES`` the least
# common are pooled too, which also bounds what a check stores.
RARE_BELOW = 5
MAX_CATEGORIES = 100
RARE = "(rare values)"
MISSING = "(missing)"


def categorical_drift(
    name: str,
    reference: Sequence,
    current: Sequence,
    *,
    rare_below: int = RARE_BELOW,
    max_categories: int | None = MAX_CATEGORIES,
) -> CategoricalDrift:
    """PSI and chi-square over the categories of both sides (missing is a
    category; rare ones pooled, see ``RARE_BELOW``; ``rare_below=0`` and
    ``max_categories=None`` keep every category, as for a class mix).
    ``unseen_share``: the share of current values the reference never had."""
    ref = pd.Series(reference, dtype=object).fillna(MISSING).astype(str)
    cur = pd.Series(current, dtype=object).fillna(MISSING).astype(str)
    if len(ref) == 0 or len(cur) == 0:
        raise ValueError(f"field {name!r}: drift needs values on both sides")
    ref_all, cur_all = ref.value_counts(), cur.value_counts()
    unseen_share = float(cur_all[~cur_all.index.isin(ref_all.index)].sum() / len(cur))
    both = pd.concat([ref_all.rename("ref"), cur_all.rename("cur")], axis=1).fillna(0)
    kept = both[(both["ref"] >= rare_below) | (both["cur"] >= rare_below)]
    if max_categories is not None and len(kept) > max_categories:
        weight = kept["ref"] / len(ref) + kept["cur"] / len(cur)
        kept = kept.loc[weight.sort_values(ascending=False, kind="stable").index[:max_categories]]
    kept = kept.sort_index()
    categories = kept.index.tolist()
    ref_counts, cur_counts = kept["ref"].to_numpy(float), kept["cur"].to_numpy(float)
    pooled_ref, pooled_cur = len(ref) - ref_counts.sum(), len(cur) - cur_counts.sum()
    if pooled_ref or pooled_cur:
        categories.append(RARE)
        ref_counts = np.append(ref_counts, pooled_ref)
        cur_counts = np.append(cur_counts, pooled_cur)
    chi2 = p_value = None
    if len(categories) > 1:
        result = stats.chi2_contingency(np.vstack([ref_counts, cur_counts]))
        chi2, p_value = float(result.statistic), float(result.pvalue)
    ref_share, cur_share = _shares(ref_counts), _shares(cur_counts)
    return CategoricalDrift(
        field=name,
        psi=psi(ref_share, cur_share),
        chi2=chi2,
        chi2_p_value=p_value,
        reference_n=len(ref),
        current_n=len(cur),
        reference_share={c: float(s) for c, s in zip(categories, ref_share, strict=True)},
        current_share={c: float(s) for c, s in zip(categories, cur_share, strict=True)},
        unseen_share=unseen_share,
    )


def _tokens(texts) -> list[list[str]]:
    return [TOKEN.findall(str(t).lower()) for t in texts if isinstance(t, str)]


def _oov(vocabulary: set, documents: list[list[str]]) -> float:
    total = sum(len(d) for d in documents)
    if total == 0:
        return 0.0
    unseen = sum(1 for d in documents for token in d if token not in vocabulary)
    return unseen / total


def text_drift(
    name: str, reference: Sequence, current: Sequence, *, max_features: int = 20_000
) -> TextDrift:
    """Out-of-vocabulary share and TF-IDF centroid distance.

    ``reference_oov_share`` is the OOV share of the reference's odd-numbered
    texts against a vocabulary built from its even-numbered ones: how many
    unseen tokens new text of the *same* distribution brings, so a reader can
    tell a real rise from the long tail every text has.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    ref_texts = [t for t in reference if isinstance(t, str) and t.strip()]
    cur_texts = [t for t in current if isinstance(t, str) and t.strip()]
    if not ref_texts or not cur_texts:
        raise ValueError(f"field {name!r}: text drift needs non-empty texts on both sides")
    ref_docs, cur_docs = _tokens(ref_texts), _tokens(cur_texts)
    vocabulary = {token for doc in ref_docs for token in doc}
    # Interleaved, not first/second half: references often come sorted.
    even = {token for doc in ref_docs[::2] for token in doc}
    reference_oov = _oov(even, ref_docs[1::2]) if len(ref_docs) > 1 else 0.0
    vectorizer = TfidfVectorizer(max_features=max_features, sublinear_tf=True)
    ref_matrix = vectorizer.fit_transform(ref_texts)
    cur_matrix = vectorizer.transform(cur_texts)
    a = np.asarray(ref_matrix.mean(axis=0)).ravel()
    b = np.asarray(cur_matrix.mean(axis=0)).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    distance = 1.0 - float(a @ b / norm) if norm else 1.0
    return TextDrift(
        field=name,
        oov_share=_oov(vocabulary, cur_docs),
        reference_oov_share=reference_oov,
        centroid_distance=max(0.0, distance),
        reference_n=len(ref_texts),
        current_n=len(cur_texts),
    )


def prediction_drift(reference_pred: Sequence, current_pred: Sequence) -> CategoricalDrift:
    """How the predicted-class mix moved: PSI and chi-square of the classes."""
    return class_mix_drift("predicted class", reference_pred, current_pred)


def class_mix_drift(name: str, reference: Sequence, current: Sequence) -> CategoricalDrift:
    """``categorical_drift`` of a class mix (predicted or true): every class
    keeps its own cell, however rare, since a rare class is the one to watch."""
    return categorical_drift(name, reference, current, rare_below=0, max_categories=None)


@dataclass(frozen=True)
class Thresholds:
    """When a drift measure raises an alert; None switches a measure off."""

    psi: float | None = PSI_MAJOR
    p_value: float | None = None  # KS / chi-square p-values flag everything at scale; off
    # A category's share moving by more than this (0.05 = 5 points) with the
    # chi-square test below share_p_value: for class mixes (predicted or true),
    # where PSI stays small.
    share_points: float | None = 0.05
    share_p_value: float = 0.01
    oov_increase: float | None = 0.10  # OOV share above the reference's own by this much
    centroid_distance: float | None = 0.2


def alerts(results, thresholds: Thresholds = Thresholds()) -> list[Alert]:
    """Alerts for the drift results that cross a threshold, with a sentence each."""
    out = []
    for r in results:
        if isinstance(r, NumericDrift | CategoricalDrift):
            if thresholds.psi is not None and r.psi > thresholds.psi:
                out.append(
                    Alert(
                        r.field,
                        "psi",
                        r.psi,
                        thresholds.psi,
                        f"{r.field}: population stability index {number(r.psi)} is above "
                        f"the alert threshold {number(thresholds.psi)} ({_psi_words(r.psi)}).",
                    )
                )
            if isinstance(r, CategoricalDrift) and thresholds.share_points is not None:
                category, change = r.largest_share_change
                significant = (
                    r.chi2_p_value is not None and r.chi2_p_value < thresholds.share_p_value
                )
                if abs(change) > thresholds.share_points and significant:
                    before = r.reference_share.get(category, 0.0)
                    out.append(
                        Alert(
                            r.field,
                            "share_change",
                            change,
                            thresholds.share_points,
                            f"{r.field}: the share of {category!r} moved from {before:.1%} "
                            f"to {before + change:.1%} ({change * 100:+.1f} points, "
                            f"chi-square p = {r.chi2_p_value:.2g}).",
                        )
                    )
            p = r.ks_p_value if isinstance(r, NumericDrift) else r.chi2_p_value
            if thresholds.p_value is not None and p is not None and p < thresholds.p_value:
                test = "Kolmogorov-Smirnov" if isinstance(r, NumericDrift) else "chi-square"
                out.append(
                    Alert(
                        r.field,
                        "p_value",
                        p,
                        thresholds.p_value,
                        f"{r.field}: the {test} test says the distributions differ "
                        f"(p = {p:.2g} < {thresholds.p_value:g}).",
                    )
                )
        elif isinstance(r, TextDrift):
            rise = r.oov_share - r.reference_oov_share
            if thresholds.oov_increase is not None and rise > thresholds.oov_increase:
                out.append(
                    Alert(
                        r.field,
                        "oov_share",
                        r.oov_share,
                        r.reference_oov_share + thresholds.oov_increase,
                        f"{r.field}: {r.oov_share:.0%} of words were never seen in training "
                        f"(new text of the training kind brings {r.reference_oov_share:.0%}).",
                    )
                )
            if (
                thresholds.centroid_distance is not None
                and r.centroid_distance > thresholds.centroid_distance
            ):
                out.append(
                    Alert(
                        r.field,
                        "centroid_distance",
                        r.centroid_distance,
                        thresholds.centroid_distance,
                        f"{r.field}: the average text moved {number(r.centroid_distance)} "
                        f"(cosine distance) from the training texts, above the alert "
                        f"threshold {number(thresholds.centroid_distance)}.",
                    )
                )
        else:
            raise TypeError(f"not a drift result: {r!r}")
    return out


def number(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits, written out (0.0001,
    not 1e-04 nor a rounded-away 0.000): thresholds can be set that small."""
    if value is None:
        return "—"
    value = float(value)
    if not np.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return np.format_float_positional(value, precision=digits, fractional=False, trim="-")


def _psi_words(value: float) -> str:
    """How the usual reading of PSI calls ``value``; worded so that it never
    contradicts the alert's "above the threshold" (a threshold may be set
    below the usual 0.1)."""
    if value > PSI_MAJOR:
        return "a major shift"
    if value > PSI_MODERATE:
        return "a moderate shift"
    return f"a minor shift: the usual reading calls under {PSI_MODERATE:g} stable"
