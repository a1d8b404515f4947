"""The sub-model interface, the registry, and class alignment."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits


class SubModelError(ValueError):
    """A sub-model cannot be built, fitted or used with the data given."""


class MissingFieldError(SubModelError):
    """The frame lacks a field a sub-model reads."""


class NotFittedError(SubModelError):
    """predict_proba was called before fit."""


class SubModel:
    """One member of an ensemble.

    Subclasses set ``name`` and ``version`` (class attributes), ``Params`` (a
    dataclass of hyper-parameters with defaults) and implement ``_fit`` and
    ``_predict_proba``; the base class checks fields, labels and fitted state so
    every sub-model fails the same way on bad input.

    ``key`` names the instance inside an ensemble (defaults to ``name``), so one
    ensemble can hold two TF-IDF models on different text fields.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    Params: ClassVar[type] = dataclasses.make_dataclass("Params", [])
    # How many fields the sub-model reads: None means "one or more".
    n_fields: ClassVar[int | None] = None

    def __init__(
        self,
        *,
        fields: Sequence[str],
        params: Mapping[str, Any] | Any | None = None,
        key: str | None = None,
    ):
        if isinstance(fields, str):
            fields = [fields]
        self.fields: tuple[str, ...] = tuple(fields)
        if not self.fields:
            raise SubModelError(f"sub-model {self.name!r} needs at least one field")
        if self.n_fields is not None and len(self.fields) != self.n_fields:
            raise SubModelError(
                f"sub-model {self.name!r} reads exactly {self.n_fields} field(s), "
                f"got {list(self.fields)}"
            )
        self.params = self._make_params(params)
        self.key = key or self.name
        self.classes_: np.ndarray | None = None

    # --- public API -----------------------------------------------------------

    def fit(self, frame: pd.DataFrame, labels, seed: int) -> SubModel:
        self.check_fields(frame)
        y = np.asarray(labels, dtype=object)
        if len(y) != len(frame):
            raise SubModelError(f"sub-model {self.key!r}: {len(frame)} rows but {len(y)} labels")
        if len(y) == 0:
            raise SubModelError(f"sub-model {self.key!r}: cannot fit on an empty frame")
        if pd.isna(y).any():
            raise SubModelError(f"sub-model {self.key!r}: labels contain missing values")
        classes = np.array(sorted(set(y.tolist()), key=str), dtype=object)
        if len(classes) < 2:
            raise SubModelError(
                f"sub-model {self.key!r}: needs at least two classes, got {classes.tolist()}"
            )
        self.classes_ = classes
        with single_thread_below(len(frame)):
            self._fit(frame, y, int(seed))
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Probabilities with one column per ``classes_`` entry, in that order."""
        if self.classes_ is None:
            raise NotFittedError(f"sub-model {self.key!r} is not fitted")
        self.check_fields(frame)
        if len(frame) == 0:
            return np.zeros((0, len(self.classes_)))
        with single_thread_below(len(frame)):
            proba = np.asarray(self._predict_proba(frame), dtype=float)
        if proba.shape != (len(frame), len(self.classes_)):
            raise SubModelError(
                f"sub-model {self.key!r} returned probabilities of shape {proba.shape}, "
                f"expected {(len(frame), len(self.classes_))}"
            )
        return proba

    def clone(self) -> SubModel:
        """An unfitted copy with the same fields, hyper-parameters and key."""
        return type(self)(fields=self.fields, params=copy.deepcopy(self.params), key=self.key)

    def check_fields(self, frame: pd.DataFrame) -> None:
        missing = [f for f in self.fields if f not in frame.columns]
        if missing:
            raise MissingFieldError(
                f"sub-model {self.key!r} reads field(s) {missing} that the data lacks "
                f"(columns: {sorted(map(str, frame.columns))})"
            )

    def describe(self) -> dict:
        """JSON-ready configuration: what a model version records."""
        return {
            "name": self.name,
            "version": self.version,
            "key": self.key,
            "fields": list(self.fields),
            "params": dataclasses.asdict(self.params),
        }

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r} fields={list(self.fields)}>"

    # --- for subclasses ---------------------------------------------------------

    def _fit(self, frame: pd.DataFrame, y: np.ndarray, seed: int) -> None:
        raise NotImplementedError

    def _predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def _make_params(self, params):
        if params is None:
            return self.Params()
        if isinstance(params, self.Params):
            return params
        if not isinstance(params, Mapping):
            raise SubModelError(
                f"sub-model {self.name!r}: params must be a mapping or {self.Params.__name__}"
            )
        known = {f.name for f in dataclasses.fields(self.Params)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise SubModelError(
                f"sub-model {self.name!r}: unknown hyper-parameter(s) {unknown}; "
                f"known: {sorted(known)}"
            )
        return self.Params(**params)


SINGLE_THREAD_ROWS = 50_000


def single_thread_below(n_rows: int, limit: int = SINGLE_THREAD_ROWS):
    """One BLAS/OpenMP thread for small data.

    Measured on the 2-core server with other jobs running: a 600-review
    TF-IDF fit took 0.85 s with two threads and 0.32 s with one, a 800-row
    gradient boosting fit 0.2 s vs up to tens of seconds when OpenMP threads
    spin-waited on busy cores. Threads only pay off on large matrices, and the
    Celery training worker is one process a core anyway.
    """
    if n_rows < limit:
        return threadpool_limits(limits=1)
    return contextlib.nullcontext()


# --- registry --------------------------------------------------------------------------

_REGISTRY: dict[str, type[SubModel]] = {}


def register(cls: type[SubModel]) -> type[SubModel]:
    """Class decorator: make a sub-model available by its ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, SubModel)):
        raise TypeError(f"{cls!r} is not a SubModel subclass")
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(
            f"a sub-model named {cls.name!r} is already registered "
            f"({existing.__module__}.{existing.__qualname__})"
        )
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a sub-model (tests register throw-away classes)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> type[SubModel]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"no sub-model named {name!r}; available: {', '.join(available())}"
        ) from None


def available() -> list[str]:
    return sorted(_REGISTRY)


def registered_types() -> list[str]:
    """Dotted names of every registered sub-model class and its Params: the
    project's own types a skops trusted-types list needs (scikit-learn's
    come on top, e.g. its HistGradientBoosting TreePredictor)."""
    names = set()
    for cls in _REGISTRY.values():
        for kind in (cls, cls.Params):
            names.add(f"{kind.__module__}.{kind.__qualname__}")
    return sorted(names)


def create(name: str, *, fields: Sequence[str], params=None, key: str | None = None) -> SubModel:
    """Build a registered sub-model from its stored configuration."""
    return get(name)(fields=fields, params=params, key=key)


# --- alignment -------------------------------------------------------------------------


def align_proba(proba: np.ndarray, from_classes, to_classes) -> np.ndarray:
    """Re-order ``proba`` columns from ``from_classes`` to ``to_classes``.

    A class the sub-model never saw gets probability 0; a class the ensemble
    does not know is dropped; rows are renormalised so they sum to 1 again (a
    row left with no mass becomes uniform rather than NaN).
    """
    proba = np.asarray(proba, dtype=float)
    from_classes = list(from_classes)
    to_classes = list(to_classes)
    if from_classes == to_classes:
        return proba
    position = {c: i for i, c in enumerate(from_classes)}
    out = np.zeros((proba.shape[0], len(to_classes)))
    for j, c in enumerate(to_classes):
        i = position.get(c)
        if i is not None:
            out[:, j] = proba[:, i]
    total = out.sum(axis=1, keepdims=True)
    empty = total[:, 0] <= 0
    out[~empty] /= total[~empty]
    out[empty] = 1.0 / len(to_classes)
    return out
