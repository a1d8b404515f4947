"""TF-IDF features + logistic regression on one text field."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from .base import SubModel, register

# The demo reviews (and most scraped HTML text) carry literal "<br />" line
# breaks; left in, "br" becomes the most frequent token of every review.
_TAGS = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")


def clean_text(values: pd.Series) -> pd.Series:
    return values.fillna("").astype(str).str.replace(_TAGS, " ", regex=True)


@dataclass
class TfidfLogRegParams:
    ngram_max: int = 2
    min_df: int = 2
    max_features: int | None = 200_000
    sublinear_tf: bool = True
    C: float = 10.0
    class_weight: str | None = None
    max_iter: int = 1000


@register
class TfidfLogReg(SubModel):
    """Word 1..n-grams, sublinear tf, L2-normalised, into a multinomial
    logistic regression. Fast to fit and strong on short texts."""

    name = "tfidf_logreg"
    version = "1"
    Params = TfidfLogRegParams
    n_fields = 1

    def _fit(self, frame, y, seed):
        p = self.params
        text = clean_text(frame[self.fields[0]])
        self.vectorizer_ = self._vectorizer(p.min_df)
        try:
            features = self.vectorizer_.fit_transform(text)
        except ValueError:
            # Too few documents for min_df (a small class or a tiny fold):
            # keep every term rather than fail, the regulariser copes.
            self.vectorizer_ = self._vectorizer(1)
            features = self.vectorizer_.fit_transform(text)
        self.model_ = LogisticRegression(
            C=p.C, class_weight=p.class_weight, max_iter=p.max_iter, random_state=seed
        )
        self.model_.fit(features, y)

    def _vectorizer(self, min_df):
        p = self.params
        return TfidfVectorizer(
            ngram_range=(1, p.ngram_max),
            min_df=min_df,
            max_features=p.max_features,
            sublinear_tf=p.sublinear_tf,
            lowercase=True,
            strip_accents="unicode",
            dtype=np.float32,
        )

    # skops writes a dict entry by entry: a 32,000-term vocabulary made a
    # 25 MB artifact that took ~30 s to write and ~5 s to check and load
    # (bench/bench_iterations.py), more than fitting. Stored as one string of
    # the terms in column order it is a few hundred KB, written and read at once.
    def __getstate__(self):
        state = dict(self.__dict__)
        vectorizer = state.get("vectorizer_")
        vocabulary = getattr(vectorizer, "vocabulary_", None)
        if vocabulary and sorted(vocabulary.values()) == list(range(len(vocabulary))):
            terms = [""] * len(vocabulary)
            for term, column in vocabulary.items():
                terms[column] = term
            if not any("\n" in term for term in terms):
                vectorizer = copy.copy(vectorizer)
                del vectorizer.vocabulary_
                state["vectorizer_"] = vectorizer
                state["vocabulary_terms_"] = "\n".join(terms)
        return state

    def __setstate__(self, state):
        state = dict(state)
        terms = state.pop("vocabulary_terms_", None)
        self.__dict__.update(state)
        if terms is not None:
            self.vectorizer_.vocabulary_ = {t: i for i, t in enumerate(terms.split("\n"))}

    def _predict_proba(self, frame):
        features = self.vectorizer_.transform(clean_text(frame[self.fields[0]]))
        # LogisticRegression orders its columns by sorted label, which is how
        # SubModel.fit sorted classes_ too; reorder anyway in case they differ.
        order = [list(self.model_.classes_).index(c) for c in self.classes_]
        return self.model_.predict_proba(features)[:, order]
