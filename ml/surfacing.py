"""Which production samples are worth an expert's look?

Each strategy scores candidates (higher = more worth labelling) and says in
words why, and ``surface`` spends a labelling budget across a mix of
strategies without picking a sample twice. Inputs are arrays and DataFrames
aligned with a list of candidate ids; nothing here touches a database.

Strategies:

- ``uncertainty``: least confidence (1 − top probability) of the ensemble;
  the margin between the top two classes is reported beside it;
- ``disagreement``: the sub-models of the ensemble disagree (mean KL
  divergence of each sub-model's probabilities from their average, the
  "query by committee" measure), among the sub-models that hold an opinion
  on the sample: a sub-model that says every class is equally likely (a
  keyword rule set where no rule fires) abstains, and a sample with fewer
  than two opinions is not a candidate;
- ``novelty``: far from the training data (distance to the nearest of a few
  hundred k-means centres of the training rows, as a percentile of the
  training rows' own distances, so 0.99 means "further out than 99% of what
  the model learnt from");
- ``feedback``: an end user contradicted the prediction; the more confident
  the contradicted prediction, the higher the score;
- ``label_error``: an already labelled sample whose out-of-fold
  probabilities say another class with more confidence than that class
  usually gets (confident learning's per-class thresholds); these go to
  review, not back to the person who labelled them;
- ``random``: a stratified random slice (by predicted class), for unbiased
  estimates of accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

STRATEGIES = ("uncertainty", "disagreement", "novelty", "feedback", "label_error", "random")
# The default mix: mostly what teaches the model, a random slice to keep
# estimates honest. Shares of the budget; a strategy with too few candidates
# (disagreement where only one sub-model has an opinion) hands its share on
# to the others in proportion to theirs. Contradicted end-user feedback is a
# strategy to add, not part of the default: on the demo reviews a 10%
# feedback share cost most of what the uncertain picks taught (the model's
# most confident mistakes are the ambiguous reviews). bench/README.md
# ("Surfacing") has the simulated loop on the demo reviews and the 2013
# flights behind these shares, every variant tried and what each achieves.
DEFAULT_MIX = {
    "uncertainty": 0.6,
    "disagreement": 0.15,
    "novelty": 0.05,
    "random": 0.1,
}


# A sub-model whose probabilities all lie this close together abstains.
ABSTAIN_SPREAD = 1e-6


@dataclass(frozen=True)
class Scored:
    """One strategy's view of the candidates: a score per candidate (NaN =
    not a candidate for this strategy) and a reason per candidate."""

    strategy: str
    scores: np.ndarray
    reasons: list[str]


@dataclass(frozen=True)
class Pick:
    id: object
    strategy: str
    score: float
    priority: float  # for the queue: higher first
    reason: str


def _proba(proba, n_classes=None) -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be a 2-D array with ≥ 2 columns, got {p.shape}")
    if n_classes is not None and p.shape[1] != n_classes:
        raise ValueError(f"probabilities have {p.shape[1]} columns for {n_classes} classes")
    return p


def _fmt(label, p) -> str:
    return f"{label} {p:.2f}"


def uncertainty(proba, classes: Sequence) -> Scored:
    p = _proba(proba, len(classes))
    order = np.argsort(-p, axis=1)
    top, second = order[:, 0], order[:, 1]
    rows = np.arange(len(p))
    p1, p2 = p[rows, top], p[rows, second]
    reasons = [
        f"uncertain: {_fmt(classes[a], x)} vs {_fmt(classes[b], y)}"
        for a, b, x, y in zip(top, second, p1, p2, strict=True)
    ]
    return Scored("uncertainty", 1.0 - p1, reasons)


def margin(proba) -> np.ndarray:
    """Top probability minus the second: small = uncertain."""
    p = np.sort(_proba(proba), axis=1)
    return p[:, -1] - p[:, -2]


def disagreement(submodel_proba: Mapping[str, np.ndarray], classes: Sequence) -> Scored:
    """Mean KL divergence from the committee's average, over the sub-models
    with an opinion on each sample (NaN where fewer than two have one)."""
    if len(submodel_proba) < 2:
        raise ValueError("disagreement needs at least two sub-models")
    names = list(submodel_proba)
    stack = np.stack([_proba(submodel_proba[k], len(classes)) for k in names])  # (m, n, k)
    opinion = (stack.max(axis=2) - stack.min(axis=2)) > ABSTAIN_SPREAD  # (m, n)
    voters = opinion.sum(axis=0)
    stack = np.clip(stack, 1e-9, 1.0)
    weight = opinion / np.maximum(voters, 1)  # (m, n): each voter's share
    mean = (stack * weight[:, :, None]).sum(axis=0)  # (n, k)
    # A sample no sub-model has an opinion on has a mean of zeros: its KL is
    # 0/0, and NaN below anyway.
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = (stack * np.log(stack / mean)).sum(axis=2)  # (m, n)
        score = np.where(voters >= 2, (kl * weight).sum(axis=0), np.nan)
    votes = stack.argmax(axis=2)  # (m, n)
    reasons = []
    for i in range(stack.shape[1]):
        if voters[i] < 2:
            reasons.append("")
            continue
        members = [m for m in range(len(names)) if opinion[m, i]]
        said = [
            f"{names[m]} model says {_fmt(classes[votes[m, i]], stack[m, i, votes[m, i]])}"
            for m in members
        ]
        if len({int(votes[m, i]) for m in members}) > 1:
            reasons.append("sub-models disagree: " + ", ".join(said))
        else:
            reasons.append("sub-models differ in confidence: " + ", ".join(said))
    return Scored("disagreement", score, reasons)


@dataclass
class NoveltyModel:
    """Centres of the training rows in a numeric representation, and the
    training rows' own distances to them (the reference for percentiles)."""

    centres: np.ndarray
    reference: np.ndarray  # sorted distances of training rows to their nearest centre

    @classmethod
    def fit(cls, train: np.ndarray, *, n_centres: int = 256, seed: int = 0) -> NoveltyModel:
        from sklearn.cluster import MiniBatchKMeans

        x = np.asarray(train, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError("novelty needs a non-empty 2-D training matrix")
        k = max(1, min(n_centres, len(x) // 4 or 1))
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096).fit(x)
        centres = km.cluster_centers_.astype(np.float32)
        model = cls(centres, np.empty(0))
        model.reference = np.sort(model.distances(x))
        return model

    def distances(self, x: np.ndarray, chunk: int = 50_000) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        c2 = (self.centres**2).sum(axis=1)
        out = np.empty(len(x), dtype=np.float32)
        for start in range(0, len(x), chunk):
            block = x[start : start + chunk]
            d2 = (block**2).sum(axis=1)[:, None] - 2 * block @ self.centres.T + c2[None, :]
            out[start : start + chunk] = np.sqrt(np.maximum(d2.min(axis=1), 0))
        return out

    def percentile(self, x: np.ndarray) -> np.ndarray:
        d = self.distances(x)
        return np.searchsorted(self.reference, d, side="right") / max(len(self.reference), 1)


def novelty(model: NoveltyModel, x: np.ndarray) -> Scored:
    score = model.percentile(x)
    reasons = [
        f"unlike the training data: further out than {s:.0%} of training samples" for s in score
    ]
    return Scored("novelty", score, reasons)


def feedback(proba, classes: Sequence, predicted, corrected) -> Scored:
    """``corrected``: the end user's class per candidate (None/NaN where no
    feedback, or where the user confirmed the prediction)."""
    p = _proba(proba, len(classes))
    predicted = pd.Series(predicted, dtype=object).to_numpy()
    corrected = pd.Series(corrected, dtype=object).to_numpy()
    if not len(p) == len(predicted) == len(corrected):
        raise ValueError("proba, predicted and corrected must have one row per candidate")
    contradicted = ~pd.isna(corrected) & (corrected != predicted)
    score = np.where(contradicted, p.max(axis=1), np.nan)
    reasons = [
        f"end user says {c}, model said {_fmt(pr, s)}" if ok else ""
        for c, pr, s, ok in zip(corrected, predicted, p.max(axis=1), contradicted, strict=True)
    ]
    return Scored("feedback", score, reasons)


def label_error(oof_proba, classes: Sequence, given) -> Scored:
    """Confident learning: per class j, the threshold t_j is the mean
    out-of-fold probability of j over samples labelled j. A sample labelled
    y is suspected when some other class j reaches t_j while y stays below
    t_y; its score is how far the best such class beats the given one."""
    p = _proba(oof_proba, len(classes))
    index = {c: i for i, c in enumerate(classes)}
    given = list(given)
    unknown = sorted({str(g) for g in given if g not in index})
    if unknown:
        raise ValueError(f"labels outside the classes {list(classes)}: {unknown[:5]}")
    y = np.array([index[g] for g in given], dtype=np.int64)
    k = len(classes)
    thresholds = np.array([p[y == j, j].mean() if (y == j).any() else np.inf for j in range(k)])
    rows = np.arange(len(p))
    above = p >= thresholds[None, :]
    above[rows, y] = False
    candidate = np.where(above, p, -np.inf)
    best = candidate.argmax(axis=1)
    suspected = above.any(axis=1) & (p[rows, y] < thresholds[y])
    score = np.where(suspected, p[rows, best] - p[rows, y], np.nan)
    reasons = [
        f"possible label error: labelled {classes[y[i]]}, but the model gives "
        f"{_fmt(classes[best[i]], p[i, best[i]])} (samples of {classes[best[i]]} "
        f"typically get {thresholds[best[i]]:.2f})"
        if suspected[i]
        else ""
        for i in range(len(p))
    ]
    return Scored("label_error", score, reasons)


def stratified_random(strata: Sequence, n: int, *, seed: int = 0) -> np.ndarray:
    """Positions of ``n`` candidates drawn at random, proportionally from
    each stratum (largest remainders), so rare strata are represented."""
    strata = pd.Series(strata, dtype=object).fillna("(missing)").astype(str)
    n = min(n, len(strata))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    counts = strata.value_counts()
    exact = counts / counts.sum() * n
    take = np.floor(exact).astype(int)
    for name in (exact - take).sort_values(ascending=False).index[: n - take.sum()]:
        take[name] += 1
    picks = []
    for name, k in take.items():
        positions = np.flatnonzero(strata.to_numpy() == name)
        picks.append(rng.choice(positions, size=min(k, len(positions)), replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.empty(0, dtype=np.int64)


def random_scored(strata: Sequence, *, seed: int = 0) -> Scored:
    """A random order that is stratified at every prefix: ranking by it and
    taking the top n gives a stratified sample of any size."""
    strata = pd.Series(strata, dtype=object).fillna("(missing)").astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    score = np.empty(len(strata))
    for name in np.unique(strata):
        positions = np.flatnonzero(strata == name)
        # Evenly spaced ranks within the stratum, in random order: the top n
        # overall hold each stratum in proportion.
        ranks = (np.arange(len(positions)) + rng.random()) / len(positions)
        score[rng.permutation(positions)] = 1.0 - ranks
    reasons = [f"random slice (stratum: {s}) for an unbiased estimate" for s in strata]
    return Scored("random", score, reasons)


def surface(
    ids: Sequence,
    scored: Mapping[str, Scored],
    budget: int,
    *,
    mix: Mapping[str, float] | None = None,
    exclude: set | None = None,
) -> list[Pick]:
    """Spend ``budget`` across strategies in ``mix`` proportions, best scores
    first, never the same id twice and never an id in ``exclude`` (already
    labelled or queued). A strategy short of candidates passes its unspent
    share to the others, in proportion to their shares. Priorities: the
    strategy's share of the mix plus the within-strategy rank, so the queue
    interleaves them."""
    if budget < 0:
        raise ValueError("budget must be ≥ 0")
    mix = dict(DEFAULT_MIX if mix is None else mix)
    unknown = [s for s in mix if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategy {unknown}; known: {list(STRATEGIES)}")
    if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError("mix shares must be ≥ 0 and add up to more than 0")
    mix = {s: v for s, v in mix.items() if v > 0 and s in scored}
    if not mix:
        return []
    ids = list(ids)
    n = len(ids)
    for name, s in scored.items():
        if len(s.scores) != n or len(s.reasons) != n:
            raise ValueError(f"strategy {name!r} scored {len(s.scores)} rows for {n} candidates")
    taken = np.zeros(n, dtype=bool)
    if exclude:
        taken |= np.fromiter((i in exclude for i in ids), dtype=bool, count=n)
    total = sum(mix.values())
    quotas = _quotas(budget, {s: v / total for s, v in mix.items()})
    orders = {
        s: [
            i
            for i in np.argsort(-np.nan_to_num(scored[s].scores, nan=-np.inf), kind="stable")
            if not np.isnan(scored[s].scores[i])
        ]
        for s in mix
    }
    cursor = dict.fromkeys(mix, 0)
    counts = dict.fromkeys(mix, 0)
    picks: list[Pick] = []

    def take_one(s) -> bool:
        order = orders[s]
        while cursor[s] < len(order):
            i = order[cursor[s]]
            cursor[s] += 1
            if taken[i]:
                continue
            taken[i] = True
            picks.append(
                Pick(
                    id=ids[i],
                    strategy=s,
                    score=float(scored[s].scores[i]),
                    priority=round(mix[s] / total + 1.0 / (2 + counts[s]), 6),
                    reason=scored[s].reasons[i],
                )
            )
            counts[s] += 1
            return True
        return False

    for s in mix:
        while counts[s] < quotas[s] and take_one(s):
            pass
    # Shares left unspent by strategies short of candidates go to the others
    # in proportion to their shares, until the budget or the candidates run out.
    active = [s for s in mix if cursor[s] < len(orders[s])]
    while len(picks) < budget and active:
        weight = sum(mix[s] for s in active)
        extra = _quotas(budget - len(picks), {s: mix[s] / weight for s in active})
        exhausted = set()
        for s in active:
            goal = counts[s] + extra[s]
            while counts[s] < goal:
                if not take_one(s):
                    exhausted.add(s)
                    break
        active = [s for s in active if s not in exhausted and cursor[s] < len(orders[s])]
    return picks


def _quotas(budget: int, shares: Mapping[str, float]) -> dict[str, int]:
    # Rounded so that float noise (20 × 0.6 / 0.9 = 13.333333333333332) does
    # not decide ties between remainders; ties go to the earlier strategy.
    exact = {s: round(budget * v, 9) for s, v in shares.items()}
    quotas = {s: int(np.floor(v)) for s, v in exact.items()}
    rest = budget - sum(quotas.values())
    for s in sorted(exact, key=lambda s: exact[s] - quotas[s], reverse=True)[:rest]:
        quotas[s] += 1
    return quotas
