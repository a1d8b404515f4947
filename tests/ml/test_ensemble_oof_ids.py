"""The row ids stored with out-of-fold probabilities: a plain string array
when the ids are strings (written by skops as one block), objects otherwise,
and reuse matches them either way."""

import numpy as np
import pandas as pd
import skops.io as sio

from ml.ensemble import Ensemble
from ml.submodels import HistGBM


def frame_and_labels(index):
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b"] * 40, dtype=object)
    frame = pd.DataFrame({"num": rng.normal(size=80) + (labels == "b") * 2}, index=pd.Index(index))
    return frame, labels


def fit_then_reuse(index):
    frame, labels = frame_and_labels(index)
    model = HistGBM(fields=["num"], params={"max_iter": 10, "min_samples_leaf": 5}, key="gbm")
    other = HistGBM(fields=["num"], params={"max_iter": 5, "min_samples_leaf": 5}, key="gbm2")
    first = Ensemble([model, other], combiner="stacking").fit(frame, labels, seed=1)
    stored = sio.loads(sio.dumps(first.submodel("gbm")), trusted=_trusted(first.submodel("gbm")))
    second = Ensemble([model.clone(), other.clone()], combiner="stacking").fit(
        frame, labels, seed=1, refit={"gbm2"}, reuse={"gbm": stored}
    )
    return first, second, stored


def _trusted(model):
    return sio.get_untrusted_types(data=sio.dumps(model))


def test_string_ids_are_stored_as_a_string_array_and_matched_on_reuse():
    first, second, stored = fit_then_reuse([f"r{i}" for i in range(80)])
    assert stored.oof_["ids"].dtype.kind == "U"
    assert stored.oof_["ids"].tolist() == [f"r{i}" for i in range(80)]
    assert second.fit_report_.oof_source["gbm"] == "stored"
    np.testing.assert_array_equal(stored.oof_["proba"], first.submodel("gbm").oof_["proba"])


def test_other_ids_stay_objects_and_are_matched_on_reuse():
    _, second, stored = fit_then_reuse(list(range(100, 180)))
    assert stored.oof_["ids"].dtype == object
    assert stored.oof_["ids"].tolist() == list(range(100, 180))
    assert second.fit_report_.oof_source["gbm"] == "stored"
    # An id ending in NUL would be cut by a NumPy string array: kept as objects.
    _, second, stored = fit_then_reuse([f"r{i}\x00" for i in range(80)])
    assert stored.oof_["ids"].dtype == object
    assert second.fit_report_.oof_source["gbm"] == "stored"
