"""An ensemble of sub-models and its combiner.

Stacking (a multinomial logistic regression on the sub-models' out-of-fold
probabilities) when every class has enough labels for the folds; weighted soft
voting otherwise, because with a handful of labels per class the out-of-fold
probabilities are too noisy to learn weights from.

Rows are identified by the frame's index (the Django side uses the sample's
external id): a reused sub-model's stored out-of-fold probabilities are matched
to the new snapshot by it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from .submodels import SubModel, align_proba
from .submodels.base import MissingFieldError, NotFittedError

MIN_LABELS_PER_CLASS = 2
STACKING = "stacking"
VOTING = "voting"


class EnsembleError(ValueError):
    """The ensemble cannot be fitted on this data; the message says why."""


def _id_array(index) -> np.ndarray:
    """Row ids as stored in ``oof_``: a fixed-width string array when every
    id is a string (skops writes it as one block of bytes; an object array of
    80,000 ids took ~3.5 s to write and as long to load, for every reused
    sub-model), else an object array. NumPy strings drop trailing NULs, so
    ids ending in one stay objects."""
    values = index.tolist()
    if all(isinstance(v, str) and not v.endswith("\x00") for v in values):
        return np.asarray(values, dtype=str)
    return np.asarray(values, dtype=object)


@dataclass(frozen=True)
class FitReport:
    combiner: str  # "stacking" or "voting"
    reason: str  # why that combiner
    refitted: list[str]
    reused: list[str]
    # key -> how the stacking features of a sub-model were obtained:
    # "cross-validated", "stored", "stored+predicted", "cross-validated clone".
    oof_source: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # key -> fit (incl. folds)
    combiner_seconds: float = 0.0


class Ensemble:
    """Sub-models plus a combiner.

    ``combiner`` is "auto" (stacking when the smallest class has at least
    ``stacking_min_per_class`` labels, else voting), "stacking" or "voting".
    ``weights`` (key -> weight, default 1) are used by soft voting.
    """

    def __init__(
        self,
        submodels: Sequence[SubModel],
        *,
        classes: Sequence | None = None,
        combiner: str = "auto",
        weights: Mapping[str, float] | None = None,
        n_folds: int = 5,
        stacking_min_per_class: int = 20,
        meta_C: float = 1.0,
    ):
        if not submodels:
            raise EnsembleError("an ensemble needs at least one sub-model")
        keys = [m.key for m in submodels]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            raise EnsembleError(
                f"sub-model keys must be unique in an ensemble; repeated: {duplicated} "
                "(give one a different key=)"
            )
        if combiner not in {"auto", STACKING, VOTING}:
            raise EnsembleError(f"combiner must be auto, stacking or voting, got {combiner!r}")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(keys))
        if unknown:
            raise EnsembleError(f"weights name unknown sub-models {unknown}; known: {keys}")
        if any(not (w >= 0) for w in weights.values()) or (
            weights and sum(weights.get(k, 1.0) for k in keys) <= 0
        ):
            raise EnsembleError("weights must be non-negative with a positive total")
        if n_folds < 2:
            raise EnsembleError("n_folds must be at least 2")
        self.submodels: list[SubModel] = list(submodels)
        self.classes = list(classes) if classes is not None else None
        self.combiner = combiner
        self.weights = weights
        self.n_folds = n_folds
        # At least n_folds labels per class are needed for StratifiedKFold;
        # 20 leaves ~4 per class in every fold, which is where stacking
        # stopped losing to plain voting on our small-data checks.
        self.stacking_min_per_class = max(stacking_min_per_class, n_folds)
        self.meta_C = meta_C
        self.classes_: np.ndarray | None = None
        self.meta_: LogisticRegression | None = None
        self.fit_report_: FitReport | None = None

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.submodels]

    def submodel(self, key: str) -> SubModel:
        for model in self.submodels:
            if model.key == key:
                return model
        raise KeyError(f"no sub-model {key!r} in this ensemble; keys: {self.keys}")

    # --- fitting --------------------------------------------------------------------------

    def fit(
        self,
        frame: pd.DataFrame,
        labels,
        seed: int,
        refit: set[str] | None = None,
        reuse: Mapping[str, SubModel] | None = None,
    ) -> Ensemble:
        """Fit on ``frame``/``labels``.

        ``reuse`` maps sub-model keys to already fitted sub-models to keep as
        they are (not refitted); ``refit`` names the sub-models to fit anew
        (None: every one not in ``reuse``). Every sub-model must be one or the
        other. After fitting, ``self.submodels`` holds the fitted objects (the
        reused ones are the very objects passed in).
        """
        y = self._check_data(frame, labels)
        reused = self._plan(refit, dict(reuse or {}))
        classes = self._check_classes(y)
        counts = pd.Series(y).value_counts()
        smallest = int(counts.reindex(classes, fill_value=0).min())
        combiner, reason = self._choose_combiner(smallest)

        seconds: dict[str, float] = {}
        oof_source: dict[str, str] = {}
        oof: dict[str, np.ndarray] = {}
        folds = None
        if combiner == STACKING:
            splitter = StratifiedKFold(n_splits=self.n_folds, shuffle=True, random_state=seed)
            folds = list(splitter.split(np.zeros(len(y)), y))

        fitted: list[SubModel] = []
        for position, model in enumerate(self.submodels):
            key = model.key
            start = time.perf_counter()
            if key in reused:
                new = reused[key]
                if combiner == STACKING:
                    oof[key], oof_source[key] = self._reused_oof(
                        new, frame, y, classes, folds, seed
                    )
            else:
                new = model.clone()
                model_seed = seed + position
                if combiner == STACKING:
                    oof[key] = self._cross_validate(new, frame, y, classes, folds, model_seed)
                    oof_source[key] = "cross-validated"
                try:
                    new.fit(frame, y, seed=model_seed)
                except Exception as error:
                    raise EnsembleError(f"sub-model {key!r} failed to fit: {error}") from error
                if combiner == STACKING:
                    # Stored with the artifact so a later retrain that reuses
                    # this sub-model gets honest stacking features for free.
                    # Plain arrays, not a DataFrame: skops cannot load pandas.
                    new.oof_ = {
                        "ids": _id_array(frame.index),
                        "proba": oof[key],
                        "classes": np.asarray(classes, dtype=object),
                    }
            seconds[key] = time.perf_counter() - start
            fitted.append(new)

        start = time.perf_counter()
        self.meta_ = None
        if combiner == STACKING:
            features = np.hstack([oof[m.key] for m in fitted])
            self.meta_ = LogisticRegression(C=self.meta_C, max_iter=1000, random_state=seed)
            self.meta_.fit(features, y)
        self.submodels = fitted
        self.classes_ = np.array(classes, dtype=object)
        self.combiner_ = combiner
        self.fit_report_ = FitReport(
            combiner=combiner,
            reason=reason,
            refitted=[m.key for m in fitted if m.key not in reused],
            reused=[m.key for m in fitted if m.key in reused],
            oof_source=oof_source,
            seconds=seconds,
            combiner_seconds=time.perf_counter() - start,
        )
        return self

    def _check_data(self, frame, labels) -> np.ndarray:
        if not isinstance(frame, pd.DataFrame):
            raise EnsembleError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
        if len(frame) == 0:
            raise EnsembleError("no rows to train on: the frame is empty")
        y = np.asarray(labels, dtype=object)
        if y.ndim != 1 or len(y) != len(frame):
            raise EnsembleError(f"{len(frame)} rows but {len(y)} labels")
        if pd.isna(y).any():
            first = int(np.flatnonzero(pd.isna(y))[0])
            raise EnsembleError(f"label missing for row {frame.index[first]!r}")
        for model in self.submodels:
            model.check_fields(frame)
        return y

    def _check_classes(self, y) -> list:
        present = sorted(set(y.tolist()), key=str)
        if self.classes is None:
            classes = present
        else:
            classes = list(self.classes)
            unknown = sorted(set(present) - set(classes), key=str)
            if unknown:
                raise EnsembleError(f"labels outside the classes {classes}: {unknown}")
        if len(classes) < 2:
            raise EnsembleError(f"need at least two classes to train, got {classes}")
        counts = pd.Series(y).value_counts()
        few = [
            (c, int(counts.get(c, 0))) for c in classes if counts.get(c, 0) < MIN_LABELS_PER_CLASS
        ]
        if few:
            detail = ", ".join(f"{c!r} has {n}" for c, n in few)
            raise EnsembleError(
                f"too few labels: every class needs at least {MIN_LABELS_PER_CLASS}; {detail}"
            )
        return classes

    def _plan(self, refit, reuse) -> dict[str, SubModel]:
        keys = self.keys
        unknown = sorted((set(refit or ()) | set(reuse)) - set(keys))
        if unknown:
            raise EnsembleError(f"unknown sub-model(s) {unknown}; this ensemble has {keys}")
        if refit is None:
            refit = set(keys) - set(reuse)
        refit = set(refit)
        neither = [k for k in keys if k not in refit and k not in reuse]
        if neither:
            raise EnsembleError(f"sub-model(s) {neither} are neither refitted nor given in reuse")
        reused = {k: m for k, m in reuse.items() if k not in refit}
        for key, model in reused.items():
            configured = self.submodel(key)
            if model.classes_ is None:
                raise EnsembleError(f"reused sub-model {key!r} is not fitted")
            if type(model) is not type(configured) or model.fields != configured.fields:
                raise EnsembleError(
                    f"reused sub-model {key!r} is a {model.name} on {list(model.fields)}, "
                    f"but the ensemble configures a {configured.name} on {list(configured.fields)}"
                )
        return reused

    def _choose_combiner(self, smallest: int) -> tuple[str, str]:
        enough = smallest >= self.stacking_min_per_class
        if self.combiner == VOTING:
            return VOTING, "soft voting was configured"
        if self.combiner == STACKING:
            if not enough:
                raise EnsembleError(
                    f"stacking needs at least {self.stacking_min_per_class} labels in every "
                    f"class; the smallest class has {smallest}"
                )
            return STACKING, "stacking was configured"
        if len(self.submodels) == 1:
            return VOTING, "one sub-model: nothing to combine"
        if enough:
            return STACKING, (
                f"every class has at least {self.stacking_min_per_class} labels "
                f"(smallest: {smallest})"
            )
        return VOTING, (
            f"soft voting: the smallest class has {smallest} labels, fewer than the "
            f"{self.stacking_min_per_class} stacking needs for {self.n_folds} folds"
        )

    def _cross_validate(self, model, frame, y, classes, folds, seed) -> np.ndarray:
        oof = np.zeros((len(y), len(classes)))
        for train, test in folds:
            fold_model = model.clone()
            try:
                fold_model.fit(frame.iloc[train], y[train], seed=seed)
            except Exception as error:
                raise EnsembleError(f"sub-model {model.key!r} failed to fit: {error}") from error
            proba = fold_model.predict_proba(frame.iloc[test])
            oof[test] = align_proba(proba, fold_model.classes_, classes)
        return oof

    def _reused_oof(self, model, frame, y, classes, folds, seed) -> tuple[np.ndarray, str]:
        """Stacking features for a sub-model that is not refitted.

        Two ways: cross-validate a clone (k fits per reused model), or use the
        out-of-fold probabilities stored when it was fitted (``oof_``) for the
        rows it was trained on and its plain predictions for rows it has never
        seen (new labels), which are out-of-sample by construction. Measured
        by bench/bench_ml.py on the demo reviews (3 sub-models, 5 folds):
        retraining one with the others reused took 0.05× the time of
        retraining all three with stored probabilities, but 0.70-0.86× with
        cross-validated clones, which would defeat the point of reuse. So the
        stored ones are used whenever their ids match unambiguously, the clone
        only otherwise (e.g. a sub-model first fitted under soft voting).
        """
        stored = getattr(model, "oof_", None)
        stored_ids = pd.Index(stored["ids"]) if stored is not None else None
        if stored is not None and frame.index.is_unique and stored_ids.is_unique:
            position = stored_ids.get_indexer(frame.index)
            have = position >= 0
            oof = np.zeros((len(y), len(classes)))
            if have.any():
                oof[have] = align_proba(stored["proba"][position[have]], stored["classes"], classes)
            if (~have).any():
                proba = model.predict_proba(frame.loc[~have])
                oof[~have] = align_proba(proba, model.classes_, classes)
            return oof, "stored" if have.all() else "stored+predicted"
        return self._cross_validate(model, frame, y, classes, folds, seed), "cross-validated clone"

    # --- prediction -------------------------------------------------------------------------

    def submodel_proba(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Each sub-model's probabilities, aligned to the ensemble's classes."""
        if self.classes_ is None:
            raise NotFittedError("the ensemble is not fitted")
        for model in self.submodels:
            try:
                model.check_fields(frame)
            except MissingFieldError as error:
                raise EnsembleError(str(error)) from None
        return {
            m.key: align_proba(m.predict_proba(frame), m.classes_, self.classes_)
            for m in self.submodels
        }

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.combine(self.submodel_proba(frame), len(frame))

    def combine(self, parts: Mapping[str, np.ndarray], n_rows: int) -> np.ndarray:
        """The ensemble's probabilities from its sub-models' (as
        ``submodel_proba`` gives them). Separate so a caller scoring several
        versions that share a reused sub-model can predict it once."""
        if self.meta_ is not None:
            features = np.hstack([parts[m.key] for m in self.submodels])
            if n_rows == 0:
                return np.zeros((0, len(self.classes_)))
            order = [list(self.meta_.classes_).index(c) for c in self.classes_]
            return self.meta_.predict_proba(features)[:, order]
        weights = np.array([self.weights.get(m.key, 1.0) for m in self.submodels])
        stacked = np.stack([parts[m.key] for m in self.submodels])  # (models, n, classes)
        return np.tensordot(weights / weights.sum(), stacked, axes=1)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.classes_[self.predict_proba(frame).argmax(axis=1)]

    def describe(self) -> dict:
        return {
            "combiner": self.combiner,
            "classes": None if self.classes is None else list(self.classes),
            "weights": dict(self.weights),
            "n_folds": self.n_folds,
            "stacking_min_per_class": self.stacking_min_per_class,
            "submodels": [m.describe() for m in self.submodels],
        }
