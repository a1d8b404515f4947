'''Sub-models: the members of a project's ensemble.

A sub-model reads a few sample fields, learns from labelled rows, and returns
class probabilities. The ensemble (``ml.ensemble``) combines several of them,
and retraining one while reusing the others is the small, safe change LeanML
is built around.

Built-ins (``available()`` lists them):

- ``tfidf_logreg``: TF-IDF word 1-2 grams + logistic regression on one text field;
- ``hist_gbm``: histogram gradient boosting on numeric and categorical fields,
  missing values allowed;
- ``keyword_rules``: patterns → class written by domain experts.

Adding a sub-model
------------------

Write a class that subclasses ``SubModel``, give it a unique ``name``, a
``version`` (bump it when its behaviour changes, so model versions record
what was really run), a ``Params`` dataclass of hyper-parameters with
defaults, and implement ``_fit`` and ``_predict_proba``. Decorate it with
``@register`` and import its module from this package's ``__init__`` (or from
any module loaded at start-up), so the registry knows it by name.

The base class already checks that the frame has the fields, that labels are
present and have two or more classes, and sets ``self.classes_`` (sorted) before
``_fit`` runs. ``_predict_proba`` must return an array of shape
``(len(frame), len(self.classes_))`` with columns in ``classes_`` order. Use
``seed`` for every random choice, so a retrain on the same snapshot gives the
same model. Store fitted state in attributes ending in ``_``.

A complete example: a sub-model that predicts from text length alone::

    from dataclasses import dataclass

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ml.submodels import SubModel, register


    @dataclass
    class TextLengthParams:
        C: float = 1.0


    @register
    class TextLength(SubModel):
        """Long reviews tend to be complaints: a one-feature baseline."""

        name = "text_length"
        version = "1"
        Params = TextLengthParams
        n_fields = 1  # reads exactly one field

        def _features(self, frame):
            lengths = frame[self.fields[0]].fillna("").astype(str).str.len()
            return np.log1p(lengths.to_numpy(dtype=float)).reshape(-1, 1)

        def _fit(self, frame, y, seed):
            self.model_ = LogisticRegression(C=self.params.C, random_state=seed)
            self.model_.fit(self._features(frame), y)

        def _predict_proba(self, frame):
            order = [list(self.model_.classes_).index(c) for c in self.classes_]
            return self.model_.predict_proba(self._features(frame))[:, order]

Use it like a built-in::

    model = create("text_length", fields=["review"], params={"C": 0.5})
    model.fit(frame, labels, seed=1)
    model.predict_proba(frame)  # columns follow model.classes_

``tests/ml/test_submodels.py`` runs this very example, so it stays correct.
'''

from . import gbm, rules, tfidf  # noqa: F401  (registers the built-ins)
from .base import (
    MissingFieldError,
    NotFittedError,
    SubModel,
    SubModelError,
    align_proba,
    available,
    create,
    get,
    register,
    registered_types,
    unregister,
)
from .gbm import HistGBM
from .rules import KeywordRules, RuleError, parse_rules
from .tfidf import TfidfLogReg

__all__ = [
    "HistGBM",
    "KeywordRules",
    "MissingFieldError",
    "NotFittedError",
    "RuleError",
    "SubModel",
    "SubModelError",
    "TfidfLogReg",
    "align_proba",
    "available",
    "create",
    "get",
    "parse_rules",
    "register",
    "registered_types",
    "unregister",
]
