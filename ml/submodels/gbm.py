"""Histogram gradient boosting on numeric and categorical fields."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.preprocessing import OrdinalEncoder

from .base import SubModel, register


@dataclass
class HistGBMParams:
    # Fields to treat as categories; by default every non-numeric field is one.
    categorical: list[str] | None = None
    learning_rate: float = 0.1
    max_iter: int = 200
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    max_bins: int = 255
    class_weight: str | None = None
    extra: dict = field(default_factory=dict)  # any other HistGradientBoostingClassifier argument


@register
class HistGBM(SubModel):
    """Missing values go to the learned side of each split (no imputation);
    categories use the estimator's native categorical splits, encoded by an
    OrdinalEncoder whose unknown values become missing at predict time."""

    name = "hist_gbm"
    version = "1"
    Params = HistGBMParams

    def _fit(self, frame, y, seed):
        p = self.params
        if p.categorical is None:
            self.categorical_ = [f for f in self.fields if not _is_numeric(frame[f])]
        else:
            unknown = sorted(set(p.categorical) - set(self.fields))
            if unknown:
                raise ValueError(f"hist_gbm: categorical field(s) {unknown} are not in fields")
            self.categorical_ = [f for f in self.fields if f in p.categorical]
        self.numeric_ = [f for f in self.fields if f not in self.categorical_]
        self.encoder_ = None
        if self.categorical_:
            self.encoder_ = OrdinalEncoder(
                handle_unknown="use_encoded_value",
                unknown_value=np.nan,
                encoded_missing_value=np.nan,
                # The estimator accepts at most max_bins categories a feature;
                # rarer ones are pooled instead of failing the fit.
                max_categories=p.max_bins,
                dtype=np.float64,
            )
            self.encoder_.fit(self._categories(frame))
        self.model_ = HistGradientBoostingClassifier(
            learning_rate=p.learning_rate,
            max_iter=p.max_iter,
            max_leaf_nodes=p.max_leaf_nodes,
            min_samples_leaf=p.min_samples_leaf,
            l2_regularization=p.l2_regularization,
            max_bins=p.max_bins,
            class_weight=p.class_weight,
            categorical_features=[False] * len(self.numeric_) + [True] * len(self.categorical_),
            # Early stopping would carve a seed-dependent validation split out
            # of small data; a fixed number of iterations keeps fits comparable.
            early_stopping=False,
            random_state=seed,
            **p.extra,
        )
        self.model_.fit(self._matrix(frame), y)

    def _predict_proba(self, frame):
        order = [list(self.model_.classes_).index(c) for c in self.classes_]
        return self.model_.predict_proba(self._matrix(frame))[:, order]

    def _categories(self, frame):
        # Strings throughout, so mixed types (1 and "1") and pandas' string
        # dtypes encode the same way at fit and predict time.
        cats = frame[self.categorical_].astype(object)
        return cats.where(cats.notna(), np.nan).map(lambda v: v if v is np.nan else str(v))

    def _matrix(self, frame):
        parts = []
        if self.numeric_:
            numeric = frame[self.numeric_].apply(pd.to_numeric, errors="coerce")
            parts.append(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
        if self.categorical_:
            parts.append(self.encoder_.transform(self._categories(frame)))
        return np.hstack(parts)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
