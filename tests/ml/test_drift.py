import math

import numpy as np
import pytest
from scipy import stats

from ml import drift


def test_psi_matches_the_formula_by_hand():
    ref, cur = [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]
    expected = sum((c - r) * math.log(c / r) for r, c in zip(ref, cur, strict=True))
    assert drift.psi(ref, cur) == pytest.approx(expected)


def test_psi_of_an_empty_bin_is_large_but_finite():
    value = drift.psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2])
    assert math.isfinite(value) and value > 1


def test_psi_rejects_misaligned_vectors():
    with pytest.raises(ValueError, match="differ in length"):
        drift.psi([0.5, 0.5], [1.0])


def test_numeric_drift_is_quiet_on_the_same_distribution_and_loud_on_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 20_000)
    same = drift.numeric_drift("delay", reference, rng.normal(0, 1, 5_000))
    shifted = drift.numeric_drift("delay", reference, rng.normal(1, 1, 5_000))
    assert same.psi < drift.PSI_MODERATE
    assert shifted.psi > drift.PSI_MAJOR
    assert len(same.bins) == 9  # deciles of the reference


def test_numeric_drift_ks_agrees_with_scipy_and_ignores_missing_values():
    rng = np.random.default_rng(1)
    reference = rng.exponential(2, 3_000)
    current = np.append(rng.exponential(2.5, 2_000), [np.nan] * 500)
    result = drift.numeric_drift("distance", reference, current)
    expected = stats.ks_2samp(reference, current[~np.isnan(current)])
    assert result.ks_statistic == pytest.approx(expected.statistic)
    assert result.ks_p_value == pytest.approx(expected.pvalue)
    assert result.current_missing == pytest.approx(0.2)
    assert result.reference_missing == 0


def test_missing_values_appearing_count_as_drift():
    reference = list(range(1000))
    current = list(range(500)) + [None] * 500
    assert drift.numeric_drift("x", reference, current).psi > drift.PSI_MAJOR


def test_numeric_drift_needs_numbers_in_the_reference():
    with pytest.raises(ValueError, match="'x'.*no numeric values"):
        drift.numeric_drift("x", ["a", "b"], [1, 2])
    with pytest.raises(ValueError, match="'x'.*both sides"):
        drift.numeric_drift("x", [1, 2], [])


def test_categorical_drift_chi_square_matches_scipy():
    reference = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    current = ["a"] * 200 + ["b"] * 200 + ["d"] * 100
    result = drift.categorical_drift("carrier", reference, current)
    table = np.array([[600, 300, 100, 0], [200, 200, 0, 100]])
    expected = stats.chi2_contingency(table)
    assert result.chi2 == pytest.approx(expected.statistic)
    assert result.chi2_p_value == pytest.approx(expected.pvalue)
    assert result.current_share["d"] == pytest.approx(0.2)
    assert result.reference_share["d"] == 0
    assert result.psi > drift.PSI_MAJOR


def test_a_field_of_identifiers_is_not_a_major_shift_but_all_unseen():
    # One review per product: every product id is new in production.
    reference = [f"B{i:05d}" for i in range(4000)]
    current = [f"C{i:05d}" for i in range(1000)]
    result = drift.categorical_drift("product", reference, current)
    assert result.reference_share == {drift.RARE: 1.0}
    assert result.current_share == {drift.RARE: 1.0}
    assert result.psi == pytest.approx(0) and result.chi2 is None
    assert result.unseen_share == 1.0
    assert drift.alerts([result]) == []


def test_rare_categories_are_pooled_and_chi_square_matches_scipy_on_the_pooled_table():
    # "x" and "y" are seen under 5 times on both sides; "d" is new but common.
    reference = ["a"] * 600 + ["b"] * 396 + ["x"] * 3 + ["y"]
    current = ["a"] * 200 + ["b"] * 196 + ["d"] * 100 + ["y"] * 4
    result = drift.categorical_drift("carrier", reference, current)
    assert list(result.reference_share) == ["a", "b", "d", drift.RARE]
    table = np.array([[600, 396, 0, 4], [200, 196, 100, 4]])
    expected = stats.chi2_contingency(table)
    assert result.chi2 == pytest.approx(expected.statistic)
    assert result.chi2_p_value == pytest.approx(expected.pvalue)
    assert result.reference_share[drift.RARE] == pytest.approx(0.004)
    assert result.unseen_share == pytest.approx(100 / 500)


def test_only_the_most_common_categories_keep_a_cell_of_their_own():
    reference = [f"c{i}" for i in range(150) for _ in range(10 + i)]
    result = drift.categorical_drift("dest", reference, reference, max_categories=20)
    assert len(result.reference_share) == 21  # 20 and the pool
    assert "c149" in result.reference_share and "c0" not in result.reference_share
    assert result.psi == pytest.approx(0)


def test_a_class_mix_keeps_a_rare_class_in_its_own_cell():
    reference = ["ok"] * 990 + ["fraud"] * 2 + ["spam"] * 8
    current = ["ok"] * 960 + ["fraud"] * 3 + ["spam"] * 37
    mix = drift.class_mix_drift("predicted class", reference, current)
    assert set(mix.reference_share) == {"ok", "fraud", "spam"}
    assert mix.current_share["fraud"] == pytest.approx(0.003)
    assert drift.RARE in drift.categorical_drift("x", reference, current).reference_share


def test_categorical_drift_of_a_single_category_has_no_test():
    result = drift.categorical_drift("x", ["a"] * 10, ["a"] * 5)
    assert result.chi2 is None and result.psi == pytest.approx(0)


def test_text_drift_sees_new_words_and_a_moved_centroid():
    reference = ["the tea is delicious and fresh"] * 50 + ["stale coffee, bad taste"] * 50
    similar = ["the tea is delicious and fresh"] * 20 + ["stale coffee, bad taste"] * 25
    foreign = ["la livraison était en retard"] * 60
    quiet = drift.text_drift("review", reference, similar)
    loud = drift.text_drift("review", reference, foreign)
    assert quiet.oov_share == 0 and quiet.reference_oov_share == 0
    assert quiet.centroid_distance < 0.05
    assert loud.oov_share == 1 and loud.centroid_distance > 0.9
    alerts = drift.alerts([quiet, loud])
    assert [(a.field, a.measure) for a in alerts] == [
        ("review", "oov_share"),
        ("review", "centroid_distance"),
    ]
    assert "100% of words were never seen" in alerts[0].sentence


def test_prediction_drift_and_alert_sentences():
    result = drift.prediction_drift(
        ["on time"] * 87 + ["late"] * 13, ["on time"] * 67 + ["late"] * 33
    )
    assert result.field == "predicted class"
    (alert,) = drift.alerts([result], drift.Thresholds(psi=0.1, share_points=None))
    assert alert.measure == "psi" and "above the alert threshold 0.1" in alert.sentence


def test_a_small_threshold_is_written_out_and_the_sentence_never_says_stable_alone():
    result = drift.prediction_drift(["a"] * 50 + ["b"] * 50, ["a"] * 48 + ["b"] * 52)
    (alert,) = drift.alerts([result], drift.Thresholds(psi=0.0001, share_points=None))
    assert "above the alert threshold 0.0001" in alert.sentence
    assert "(stable)" not in alert.sentence
    assert "a minor shift: the usual reading calls under 0.1 stable" in alert.sentence
    assert drift.number(0.0001) == "0.0001"
    assert drift.number(0.00001) == "0.00001"
    assert drift.number(0.04412) == "0.0441"
    assert drift.number(-0.054) == "-0.054"
    assert drift.number(0.25) == "0.25"
    assert drift.number(12345.4) == "12,345"
    assert drift.alerts([result], drift.Thresholds(psi=None, share_points=None)) == []


def test_a_class_share_moving_raises_an_alert_that_psi_alone_misses():
    reference = ["late"] * 2200 + ["on time"] * 7800
    moved = ["late"] * 3300 + ["on time"] * 6700
    same = ["late"] * 225 + ["on time"] * 775
    result = drift.categorical_drift("arrived late", reference, moved)
    assert result.psi < drift.PSI_MODERATE
    assert result.largest_share_change[1] == pytest.approx(0.11)
    (alert,) = drift.alerts([result])
    assert alert.measure == "share_change"
    assert alert.sentence.startswith("arrived late: the share of 'late' moved from 22.0% to 33.0%")
    assert "(+11.0 points" in alert.sentence
    # The same share on fewer rows: a 0.5-point wobble, no alert.
    assert drift.alerts([drift.categorical_drift("arrived late", reference, same)]) == []


def test_a_large_share_change_on_a_handful_of_rows_is_not_significant():
    result = drift.categorical_drift("x", ["a"] * 5 + ["b"] * 5, ["a"] * 7 + ["b"] * 3)
    assert abs(result.largest_share_change[1]) == pytest.approx(0.2)
    assert drift.alerts([result]) == []


def test_p_value_alerts_are_opt_in():
    reference = ["a"] * 5000 + ["b"] * 5000
    current = ["a"] * 5400 + ["b"] * 4600
    result = drift.categorical_drift("x", reference, current)
    assert drift.alerts([result]) == []  # PSI is small, the share moved 4 points
    (alert,) = drift.alerts([result], drift.Thresholds(psi=None, p_value=0.05))
    assert "chi-square" in alert.sentence
