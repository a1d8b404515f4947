import numpy as np
import pytest

from ml import surfacing

CLASSES = ["refund", "billing", "other"]


def test_uncertainty_ranks_the_flattest_prediction_first_and_says_why():
    proba = [[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.6, 0.3, 0.1]]
    result = surfacing.uncertainty(proba, CLASSES)
    assert np.argsort(-result.scores).tolist() == [1, 2, 0]
    assert result.scores[1] == pytest.approx(0.6)
    assert result.reasons[1] == "uncertain: refund 0.40 vs billing 0.35"
    assert surfacing.margin(proba).tolist() == pytest.approx([0.85, 0.05, 0.3])


def test_disagreement_is_the_mean_kl_from_the_committee_average():
    text = np.array([[0.81, 0.19, 0.0], [0.5, 0.5, 0.0]])
    rules = np.array([[0.1, 0.9, 0.0], [0.5, 0.5, 0.0]])
    result = surfacing.disagreement({"text": text, "rules": rules}, CLASSES)
    mean = (text[0] + rules[0]) / 2
    kl = lambda p: sum(x * np.log(x / m) for x, m in zip(p, mean, strict=True) if x > 0)  # noqa: E731
    assert result.scores[0] == pytest.approx((kl(text[0]) + kl(rules[0])) / 2, rel=1e-6)
    # Both rule out "other" and no more: the same opinion, no disagreement.
    assert result.scores[1] == pytest.approx(0, abs=1e-9)
    assert result.reasons[0] == (
        "sub-models disagree: text model says refund 0.81, rules model says billing 0.90"
    )


def test_a_sub_model_with_no_opinion_abstains_from_the_committee():
    # Keyword rules where none fires say every class is equally likely.
    silent = [1 / 3, 1 / 3, 1 / 3]
    text = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.6, 0.3, 0.1]])
    rules = np.array([silent, silent, [0.2, 0.7, 0.1]])
    fields = np.array([silent, [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]])
    result = surfacing.disagreement({"text": text, "rules": rules, "fields": fields}, CLASSES)
    # Only the text model has an opinion on the first sample: not a candidate.
    assert np.isnan(result.scores[0]) and result.reasons[0] == ""
    # The second: text against fields alone, as if the rules were not there.
    alone = surfacing.disagreement({"text": text[1:2], "fields": fields[1:2]}, CLASSES)
    assert result.scores[1] == pytest.approx(alone.scores[0])
    assert result.reasons[1] == (
        "sub-models disagree: text model says refund 0.90, fields model says billing 0.80"
    )
    assert result.scores[2] > 0
    assert "rules model says billing 0.70" in result.reasons[2]


def test_samples_no_sub_model_has_an_opinion_on_are_left_out_without_warnings():
    import warnings

    silent = [1 / 3, 1 / 3, 1 / 3]
    text = np.array([silent, [0.9, 0.05, 0.05]])
    rules = np.array([silent, [0.2, 0.7, 0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a worker's log is no place for 0/0 warnings
        result = surfacing.disagreement({"text": text, "rules": rules}, CLASSES)
    assert np.isnan(result.scores[0]) and result.reasons[0] == ""
    assert result.scores[1] > 0


def test_disagreement_needs_a_committee():
    with pytest.raises(ValueError, match="two sub-models"):
        surfacing.disagreement({"text": np.ones((1, 3)) / 3}, CLASSES)


def test_novelty_scores_far_points_high_and_training_like_points_low():
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (2000, 5))
    model = surfacing.NoveltyModel.fit(train, n_centres=32)
    near = rng.normal(0, 1, (200, 5))
    far = rng.normal(6, 1, (20, 5))
    result = surfacing.novelty(model, np.vstack([near, far]))
    assert np.median(result.scores[:200]) < 0.8
    assert (result.scores[200:] == 1.0).all()
    assert "further out than 100% of training samples" in result.reasons[-1]


def test_feedback_scores_only_contradicted_predictions_by_their_confidence():
    proba = [[0.95, 0.05, 0.0], [0.6, 0.4, 0.0], [0.7, 0.2, 0.1], [0.5, 0.3, 0.2]]
    predicted = ["refund", "refund", "refund", "refund"]
    corrected = ["billing", None, "refund", "other"]
    result = surfacing.feedback(proba, CLASSES, predicted, corrected)
    assert np.isnan(result.scores[1]) and np.isnan(result.scores[2])
    assert result.scores[0] == pytest.approx(0.95) and result.scores[3] == pytest.approx(0.5)
    assert result.reasons[0] == "end user says billing, model said refund 0.95"


def test_label_error_uses_per_class_thresholds():
    # Samples labelled refund get 0.8 on refund on average, billing ones 0.7.
    oof = np.array(
        [
            [0.9, 0.1, 0.0],
            [0.7, 0.3, 0.0],
            [0.2, 0.8, 0.0],  # labelled refund, model says billing: suspect
            [0.3, 0.7, 0.0],
            [0.4, 0.6, 0.0],
            [0.0, 1.0, 0.0],
        ]
    )
    given = ["refund", "refund", "refund", "billing", "billing", "billing"]
    result = surfacing.label_error(oof, CLASSES[:2] + ["other"], given)
    thresholds_refund = (0.9 + 0.7 + 0.2) / 3
    assert np.flatnonzero(~np.isnan(result.scores)).tolist() == [2]
    assert result.scores[2] == pytest.approx(0.6)
    assert thresholds_refund == pytest.approx(0.6)
    assert "labelled refund, but the model gives billing 0.80" in result.reasons[2]


def test_label_error_names_unknown_labels():
    with pytest.raises(ValueError, match="outside the classes.*'spam'"):
        surfacing.label_error(np.full((1, 3), 1 / 3), CLASSES, ["spam"])


def test_stratified_random_keeps_rare_strata_and_is_seeded():
    strata = ["late"] * 100 + ["on time"] * 900
    picks = surfacing.stratified_random(strata, 50, seed=3)
    assert len(picks) == 50 and len(set(picks.tolist())) == 50
    assert sum(1 for i in picks if strata[i] == "late") == 5
    assert picks.tolist() == surfacing.stratified_random(strata, 50, seed=3).tolist()
    assert picks.tolist() != surfacing.stratified_random(strata, 50, seed=4).tolist()


def test_random_scored_top_n_is_stratified():
    strata = ["late"] * 200 + ["on time"] * 800
    result = surfacing.random_scored(strata, seed=1)
    top = np.argsort(-result.scores)[:100]
    late = sum(1 for i in top if strata[i] == "late")
    assert 19 <= late <= 21


def _scored(name, scores):
    scores = np.asarray(scores, dtype=float)
    return surfacing.Scored(name, scores, [f"{name} {i}" for i in range(len(scores))])


def test_surface_spends_the_budget_by_mix_without_repeats_or_excluded_ids():
    ids = [f"s{i}" for i in range(10)]
    scored = {
        "uncertainty": _scored("uncertainty", [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
        "random": _scored("random", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
    }
    picks = surfacing.surface(
        ids, scored, 6, mix={"uncertainty": 0.5, "random": 0.5}, exclude={"s0"}
    )
    assert [(p.id, p.strategy) for p in picks] == [
        ("s1", "uncertainty"),
        ("s2", "uncertainty"),
        ("s3", "uncertainty"),
        ("s9", "random"),
        ("s8", "random"),
        ("s7", "random"),
    ]
    assert picks[0].reason == "uncertainty 1"
    assert picks[0].priority > picks[1].priority


def test_a_strategy_short_of_candidates_hands_its_share_on():
    ids = list(range(8))
    scored = {
        "feedback": _scored("feedback", [np.nan] * 7 + [0.9]),  # one contradicted prediction
        "uncertainty": _scored("uncertainty", np.linspace(1, 0, 8)),
    }
    picks = surfacing.surface(ids, scored, 4, mix={"feedback": 0.5, "uncertainty": 0.5})
    assert [p.strategy for p in picks].count("feedback") == 1
    assert len(picks) == 4 and len({p.id for p in picks}) == 4


def test_an_unspent_share_goes_to_the_others_in_proportion_to_theirs():
    ids = list(range(100))
    scored = {
        "uncertainty": _scored("uncertainty", np.linspace(1, 0, 100)),
        "disagreement": _scored("disagreement", [np.nan] * 98 + [0.5] * 2),
        "random": _scored("random", np.linspace(0, 1, 100)),
    }
    mix = {"uncertainty": 0.6, "disagreement": 0.3, "random": 0.1}
    picks = surfacing.surface(ids, scored, 20, mix=mix)
    counts = {s: [p.strategy for p in picks].count(s) for s in mix}
    # Disagreement has 2 candidates for its 6; its 4 left go 6:1 → 3 + 1.
    assert counts == {"uncertainty": 15, "disagreement": 2, "random": 3}
    assert len({p.id for p in picks}) == 20
    # Shares need not add up to 1: ten times the shares, the same picks.
    tenfold = surfacing.surface(ids, scored, 20, mix={s: 10 * v for s, v in mix.items()})
    assert [(p.id, p.strategy) for p in tenfold] == [(p.id, p.strategy) for p in picks]
    # A budget of 40: disagreement leaves 10 of its 12; 6:1 of 10 is 9 + 1.
    wide = surfacing.surface(ids, scored, 40, mix={s: 10 * v for s, v in mix.items()})
    counts = {s: [p.strategy for p in wide].count(s) for s in mix}
    assert counts == {"uncertainty": 24 + 9, "disagreement": 2, "random": 4 + 1}
    # When every strategy runs dry, the budget is left unspent, no error.
    few = {"disagreement": scored["disagreement"]}
    assert len(surfacing.surface(ids, few, 20, mix={"disagreement": 1})) == 2


def test_surface_rejects_bad_mixes_and_misaligned_scores():
    ids = [1, 2]
    good = {"uncertainty": _scored("uncertainty", [1, 2])}
    with pytest.raises(ValueError, match="unknown strategy"):
        surfacing.surface(ids, good, 1, mix={"vibes": 1})
    with pytest.raises(ValueError, match="add up"):
        surfacing.surface(ids, good, 1, mix={"uncertainty": 0})
    with pytest.raises(ValueError, match="'uncertainty' scored 2 rows for 3"):
        surfacing.surface([1, 2, 3], good, 1, mix={"uncertainty": 1})
    assert surfacing.surface(ids, good, 0, mix={"uncertainty": 1}) == []
