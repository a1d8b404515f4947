import numpy as np
import pandas as pd
import pytest

from ml import surfacing
from ml.ensemble import Ensemble
from ml.submodels import TfidfLogReg


def test_committee_disagreement_is_zero_where_members_agree_however_unsure():
    members = np.array(
        [
            [[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]],
            [[0.5, 0.5], [0.1, 0.9], [0.0, 1.0]],
        ]
    )
    score = surfacing.committee_disagreement(members)
    # Both members say 50/50: ambiguous, but nothing left to learn between them.
    assert score[0] == pytest.approx(0.0, abs=1e-12)
    # 0.9/0.1 against 0.1/0.9: mean KL from (0.5, 0.5) = 0.9 ln 1.8 + 0.1 ln 0.2.
    assert score[1] == pytest.approx(0.9 * np.log(1.8) + 0.1 * np.log(0.2), rel=1e-6)
    # Certain and opposite: the most there is for two classes, ln 2.
    assert score[2] == pytest.approx(np.log(2), rel=1e-6)


def test_committee_disagreement_needs_two_members():
    with pytest.raises(ValueError, match="members ≥ 2"):
        surfacing.committee_disagreement(np.array([[[0.5, 0.5]]]))


def test_shortlist_takes_the_best_scores_skipping_nan_and_excluded():
    scores = [0.1, np.nan, 0.5, 0.3, 0.45, 0.2]
    assert surfacing.shortlist(scores, 3).tolist() == [2, 4, 3]
    excluded = [False, False, False, True, False, False]
    assert surfacing.shortlist(scores, 3, excluded).tolist() == [2, 4, 5]
    assert surfacing.shortlist(scores, 10, excluded).tolist() == [2, 4, 5, 0]


def test_uncertainty_by_committee_ranks_the_shortlist_by_disagreement_only():
    proba = [[0.55, 0.45], [0.5, 0.5], [0.95, 0.05], [0.6, 0.4]]
    uncertain = surfacing.uncertainty(proba, ["great", "other"])
    positions = surfacing.shortlist(uncertain.scores, 3)
    assert positions.tolist() == [1, 0, 3]
    members = np.array(
        [
            [[0.5, 0.5], [0.9, 0.1], [0.6, 0.4]],  # rows: positions 1, 0, 3
            [[0.5, 0.5], [0.2, 0.8], [0.6, 0.4]],
        ]
    )
    result = surfacing.uncertainty_by_committee(uncertain, positions, members)
    assert result.strategy == "uncertainty"
    # The confident sample is no longer a candidate; the most uncertain one
    # (members agree on 50/50) now comes after the one they disagree on.
    assert np.isnan(result.scores[2])
    assert result.scores[0] > result.scores[1] == pytest.approx(0.0, abs=1e-12)
    assert result.scores[3] == pytest.approx(0.0, abs=1e-12)
    assert result.reasons[0].startswith("uncertain: great 0.55 vs other 0.45; models fitted")
    assert result.reasons[2] == uncertain.reasons[2]
    picks = surfacing.surface(range(4), {"uncertainty": result}, 2, mix={"uncertainty": 1})
    assert [p.id for p in picks][0] == 0
    with pytest.raises(ValueError, match="committee rows"):
        surfacing.uncertainty_by_committee(uncertain, positions[:2], members)


def _texts():
    words = {"great": ["lovely", "tasty", "perfect"], "other": ["stale", "awful", "broken"]}
    rows, labels = [], []
    for i in range(30):
        label = "great" if i % 3 else "other"  # 20 great, 10 other
        rows.append(f"{words[label][i % 3]} {words[label][(i + 1) % 3]} item {i % 5}")
        labels.append(label)
    return pd.DataFrame({"text": rows}), np.array(labels, dtype=object)


def test_committee_members_are_the_ensemble_refitted_on_stratified_resamples():
    frame, labels = _texts()
    ensemble = Ensemble([TfidfLogReg(fields=["text"], key="text")], combiner="voting")
    ensemble.fit(frame, labels, seed=0)
    committee = surfacing.Committee.fit(ensemble, frame, labels, members=4, seed=3)
    assert len(committee.members) == 4
    for member in committee.members:
        # Every member saw both classes (the resample keeps each class's count).
        assert list(member["text"].classes_) == ["great", "other"]
        assert member["text"] is not ensemble.submodels[0]
    new = pd.DataFrame({"text": ["lovely tasty", "stale awful", "item 2"]})
    proba = committee.proba(new)
    assert proba.shape == (4, 3, 2)
    assert proba.sum(axis=2) == pytest.approx(np.ones((4, 3)))
    # Columns in the ensemble's class order: every member calls the first great.
    assert (proba[:, 0, 0] > 0.5).all() and (proba[:, 1, 1] > 0.5).all()
    # Seeded: the same seed gives the same members, another seed other ones.
    again = surfacing.Committee.fit(ensemble, frame, labels, members=4, seed=3).proba(new)
    assert again == pytest.approx(proba)
    other = surfacing.Committee.fit(ensemble, frame, labels, members=4, seed=4).proba(new)
    assert not np.allclose(other, proba)
    # Members differ from each other: they saw different resamples.
    assert surfacing.committee_disagreement(proba).max() > 0


def test_committee_needs_two_members_and_labelled_rows():
    frame, labels = _texts()
    ensemble = Ensemble([TfidfLogReg(fields=["text"], key="text")], combiner="voting")
    ensemble.fit(frame, labels, seed=0)
    with pytest.raises(ValueError, match="two members"):
        surfacing.Committee.fit(ensemble, frame, labels, members=1)
    with pytest.raises(ValueError, match="labelled rows"):
        surfacing.Committee.fit(ensemble, frame, labels[:-1])
