"""Agreement metrics against values computed by hand or published in the literature."""

from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from ml.agreement import ONE_CLASS, agreement_report

# Two raters, ten items. By hand: 7 of 10 agree (p_o = 0.7).
# Cohen: x says a 6/10, y says a 5/10 → p_e = .6·.5 + .4·.5 = .5 → κ = .2/.5 = 0.4.
# Fleiss with two raters is Scott's pi: pooled a = 11/20 → p_e = .55² + .45² = .505
#   → π = (.7 − .505)/.495 = 13/33.
# Krippendorff (nominal, coincidences): n = 20, Σo_cc = 14, Σn_c(n_c−1) = 110 + 72
#   → α = (19·14 − 182)/(380 − 182) = 84/198 = 14/33.
X = list("aaaaaabbbb")
Y = list("aaaabbbbba")


def frame(rows, seconds=False):
    columns = ["item", "annotator", "label"] + (["seconds"] if seconds else [])
    return pd.DataFrame(rows, columns=columns)


def two_raters():
    return frame(
        [(i, "x", label, 10.0) for i, label in enumerate(X)]
        + [(i, "y", label, 20.0 + i) for i, label in enumerate(Y)],
        seconds=True,
    )


def test_two_raters_match_hand_computed_values():
    report = agreement_report(two_raters())
    assert report.labels == 20 and report.items == 10 and report.items_multi == 10
    assert report.observed_agreement.value == pytest.approx(0.7)
    assert report.cohen_kappa.value == pytest.approx(0.4)
    assert report.cohen_kappa.items == 10
    assert report.fleiss_kappa.value == pytest.approx(13 / 33)
    assert report.krippendorff_alpha.value == pytest.approx(14 / 33)


def test_alpha_and_scotts_pi_obey_their_small_sample_relation():
    # For two coders and no missing values α = π + (1 − π)/(2N) (Krippendorff 2004).
    report = agreement_report(two_raters())
    pi, alpha = report.fleiss_kappa.value, report.krippendorff_alpha.value
    assert alpha == pytest.approx(pi + (1 - pi) / (2 * 10))


def test_pairwise_confusion_and_specific_agreement():
    confusion = agreement_report(two_raters()).confusion
    # Items 0-3 both a, 6-8 both b, three mixed pairs.
    assert confusion.classes == ["a", "b"]
    assert confusion.counts == [[4, 3], [3, 3]]
    assert confusion.specific_agreement == pytest.approx([8 / 11, 6 / 9])


def test_throughput_from_seconds():
    by_name = {row.annotator: row for row in agreement_report(two_raters()).per_annotator}
    assert by_name["x"].labelled_seconds == 100
    assert by_name["x"].labels_per_hour == pytest.approx(360)
    assert by_name["x"].median_seconds == 10
    # y spent 20..29 s: total 245 s for 10 labels; median 24.5 s.
    assert by_name["y"].labels_per_hour == pytest.approx(10 * 3600 / 245)
    assert by_name["y"].median_seconds == pytest.approx(24.5)


def test_missing_seconds_do_not_count_as_zero():
    labels = two_raters()
    labels.loc[labels["annotator"] == "x", "seconds"] = [np.nan] * 5 + [30.0] * 5
    x = next(r for r in agreement_report(labels).per_annotator if r.annotator == "x")
    assert x.labels == 10
    assert x.labels_per_hour == pytest.approx(5 * 3600 / 150)
    assert x.median_seconds == 30


def test_agreement_with_a_given_consensus():
    # Adjudicated: item 4 → b, item 5 → a, item 9 → a; the rest as the pair agreed.
    consensus = {i: (x if x == y else None) for i, (x, y) in enumerate(zip(X, Y, strict=True))}
    consensus.update({4: "b", 5: "a", 9: "a"})
    by_name = {
        row.annotator: row
        for row in agreement_report(two_raters(), consensus=consensus).per_annotator
    }
    x, y = by_name["x"], by_name["y"]
    assert x.compared == y.compared == 10
    # x disagrees on item 4 (a vs b) and item 9 (b vs a); y on item 5 (b vs a).
    assert x.agreement_with_consensus == pytest.approx(0.8)
    assert y.agreement_with_consensus == pytest.approx(0.9)
    # Consensus says a on 0-3, 5, 9 (6 of 10). x: a on 0-5 → p_o .8, p_e .6·.6 + .4·.4 = .52
    #   → κ = .28/.48 = 7/12.
    assert x.kappa_with_consensus.value == pytest.approx(7 / 12)
    # y: a on 0-3, 9 (5 of 10) → p_o .9, p_e .5·.6 + .5·.4 = .5 → κ = .4/.5 = 0.8.
    assert y.kappa_with_consensus.value == pytest.approx(0.8)


def test_consensus_defaults_to_the_plurality_and_skips_ties():
    by_name = {row.annotator: row for row in agreement_report(two_raters()).per_annotator}
    # With two raters the mixed items are ties, so only the 7 agreed items compare.
    assert by_name["x"].compared == 7
    assert by_name["x"].agreement_with_consensus == 1.0


def test_a_lone_label_is_not_compared_with_its_own_consensus():
    labels = frame([(1, "x", "a"), (1, "y", "a"), (2, "x", "b")])
    x = next(r for r in agreement_report(labels, consensus={1: "a", 2: "b"}).per_annotator)
    assert x.annotator == "x"
    assert x.labels == 2
    assert x.compared == 1


def three_raters():
    # p: a a a b b b, q: a a b b b b, r: same as p.
    p = list("aaabbb")
    q = list("aabbbb")
    return frame(
        [
            (i, who, label)
            for who, labels in (("p", p), ("q", q), ("r", p))
            for i, label in enumerate(labels)
        ]
    )


def test_pairwise_cohen_is_the_mean_over_pairs():
    # p–q: p_o 5/6; p says a 1/2, q says a 1/3 → p_e 1/2 → κ = (5/6 − 1/2)/(1/2) = 2/3.
    # p–r: identical → 1. q–r: as p–q → 2/3. Mean 7/9.
    report = agreement_report(three_raters(), min_pair_items=6)
    assert [(p.a, p.b, p.items) for p in report.pairs] == [
        ("p", "q", 6),
        ("p", "r", 6),
        ("q", "r", 6),
    ]
    assert [p.kappa for p in report.pairs] == pytest.approx([2 / 3, 1.0, 2 / 3])
    assert report.cohen_kappa.value == pytest.approx(7 / 9)
    assert "3 of 3 annotator pairs" in report.cohen_kappa.detail


def test_pairs_with_too_few_shared_items_are_left_out():
    report = agreement_report(three_raters(), min_pair_items=7)
    assert report.cohen_kappa.value is None
    assert report.cohen_kappa.reason == "no annotator pair shares 7 or more items"


def test_fleiss_on_three_raters_by_hand():
    # Items 0,1: aaa; item 2: aab; items 3-5: bbb. P̄ = (5 + 1/3)/6 = 8/9;
    # p_a = 8/18, p_b = 10/18 → P_e = 41/81 → κ = (8/9 − 41/81)/(40/81) = 31/40.
    report = agreement_report(three_raters())
    assert report.fleiss_kappa.value == pytest.approx(31 / 40)
    assert report.fleiss_kappa.items == 6
    assert report.observed_agreement.value == pytest.approx(8 / 9)


def test_fleiss_matches_the_worked_example_of_fleiss_1971():
    # The 10 subjects × 14 raters × 5 categories example (Wikipedia, "Fleiss' kappa"):
    # P̄ = 0.378, P̄e = 0.213, κ = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    rows = []
    for item, row in enumerate(table):
        raters = iter(range(14))
        rows += [(item, next(raters), c + 1) for c, n in enumerate(row) for _ in range(n)]
    report = agreement_report(frame(rows))
    assert round(report.observed_agreement.value, 3) == 0.378
    assert round(report.fleiss_kappa.value, 3) == 0.210


def test_fleiss_uses_items_with_the_most_common_rater_count_and_says_so():
    labels = pd.concat([three_raters(), frame([(9, "p", "a"), (9, "q", "b")])])
    report = agreement_report(labels, min_pair_items=1)
    assert report.items_multi == 7
    assert report.fleiss_kappa.items == 6
    assert report.fleiss_kappa.value == pytest.approx(31 / 40)
    assert "labelled by exactly 3 annotators" in report.fleiss_kappa.detail
    assert "1 items with a different number of labels left out" in report.fleiss_kappa.detail


# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", example C:
# 4 coders × 12 units with missing values; nominal α = 0.743.
KRIPPENDORFF_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _reference_nominal_alpha(units):
    """Krippendorff's coincidence-matrix definition, in exact fractions."""
    values = sorted({v for unit in units for v in unit})
    index = {v: i for i, v in enumerate(values)}
    o = [[Fraction(0)] * len(values) for _ in values]
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        for i, a in enumerate(unit):
            for j, b in enumerate(unit):
                if i != j:
                    o[index[a]][index[b]] += Fraction(1, m - 1)
    n_c = [sum(row) for row in o]
    n = sum(n_c)
    observed = sum(o[c][c] for c in range(len(values)))
    expected = sum(nc * (nc - 1) for nc in n_c)
    return ((n - 1) * observed - expected) / (n * (n - 1) - expected)


def test_krippendorff_alpha_on_the_textbook_example():
    rows = [
        (unit, f"coder{c}", value)
        for c, coder in enumerate(KRIPPENDORFF_C)
        for unit, value in enumerate(coder)
        if value is not None
    ]
    report = agreement_report(frame(rows))
    units = [[coder[u] for coder in KRIPPENDORFF_C if coder[u] is not None] for u in range(12)]
    reference = _reference_nominal_alpha(units)
    assert reference == Fraction(113, 152)  # 0.74342…
    assert report.krippendorff_alpha.value == pytest.approx(float(reference))
    assert round(report.krippendorff_alpha.value, 3) == 0.743
    # Unit 12 has one value only and does not count.
    assert report.krippendorff_alpha.items == 11


def test_single_class_makes_kappa_and_alpha_undefined():
    labels = frame([(i, who, "a") for i in range(5) for who in ("x", "y")])
    report = agreement_report(labels, classes=["a", "b"])
    assert report.observed_agreement.value == 1.0
    assert report.cohen_kappa.value is None and report.cohen_kappa.reason == ONE_CLASS
    assert report.fleiss_kappa.value is None and report.fleiss_kappa.reason == ONE_CLASS
    assert report.krippendorff_alpha.value is None
    assert "alpha is undefined" in report.krippendorff_alpha.reason
    x = report.per_annotator[0]
    assert x.agreement_with_consensus == 1.0
    assert x.kappa_with_consensus.value is None
    assert x.kappa_with_consensus.reason == ONE_CLASS


def test_no_overlap_gives_no_metrics_but_still_throughput():
    labels = frame([(1, "x", "a", 4.0), (2, "y", "b", 6.0), (3, "x", "b", 8.0)], seconds=True)
    report = agreement_report(labels)
    assert report.items_multi == 0
    for metric in (report.observed_agreement, report.fleiss_kappa, report.krippendorff_alpha):
        assert metric.value is None
        assert metric.reason == "no item has labels from two annotators"
    assert report.cohen_kappa.value is None
    assert report.cohen_kappa.reason == "no two annotators have labelled the same item"
    assert report.confusion is None
    x = next(r for r in report.per_annotator if r.annotator == "x")
    assert x.agreement_with_consensus is None
    assert x.kappa_with_consensus.reason.startswith("no item of theirs")
    assert x.median_seconds == 6.0
    assert x.labels_per_hour == pytest.approx(2 * 3600 / 12)


def test_one_annotator_and_no_labels():
    report = agreement_report(frame([(1, "x", "a"), (2, "x", "b")]))
    assert report.cohen_kappa.reason == "fewer than two annotators have labelled"
    empty = agreement_report(frame([]))
    assert (empty.labels, empty.items, empty.annotators) == (0, 0, 0)
    assert empty.per_annotator == [] and empty.pairs == []
    assert empty.krippendorff_alpha.value is None


def test_skips_are_dropped_and_classes_keep_their_order():
    labels = frame([(1, "x", "b"), (1, "y", None), (2, "x", "a"), (2, "y", "a")])
    report = agreement_report(labels, classes=["b", "a", "c"])
    assert report.labels == 3
    assert report.items_multi == 1
    assert report.classes == ["b", "a", "c"]
    assert report.confusion.counts == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert report.confusion.specific_agreement == [None, 1.0, None]


def test_it_rejects_more_than_one_label_per_annotator_and_item():
    with pytest.raises(ValueError, match="item 1 / annotator 'x'"):
        agreement_report(frame([(1, "x", "a"), (1, "x", "b")]))


def test_it_rejects_unknown_classes_and_missing_columns():
    with pytest.raises(ValueError, match=r"outside the given classes: \['c'\]"):
        agreement_report(frame([(1, "x", "c")]), classes=["a", "b"])
    with pytest.raises(ValueError, match=r"consensus labels outside the classes: \['z'\]"):
        agreement_report(frame([(1, "x", "a")]), consensus={1: "z"})
    with pytest.raises(ValueError, match="missing: \\['label'\\]"):
        agreement_report(pd.DataFrame({"item": [1], "annotator": ["x"]}))


def test_report_values_are_plain_python():
    report = agreement_report(frame([(1, np.int64(5), "a"), (1, np.int64(6), "a")]))
    assert type(report.per_annotator[0].annotator) is int
    assert type(report.pairs[0].a) is int


def test_kappas_match_sklearn_on_random_labels():
    """sklearn's cohen_kappa_score is the reference for every pair and annotator."""
    rng = np.random.default_rng(7)
    rows = []
    for item in range(300):
        truth = rng.integers(0, 4)
        for who in rng.choice(6, size=rng.integers(1, 5), replace=False):
            noisy = truth if rng.random() < 0.7 else rng.integers(0, 4)
            rows.append((item, f"a{who}", int(noisy)))
    labels = frame(rows)
    consensus = {i: int(rng.integers(0, 4)) for i in range(0, 300, 2)}
    report = agreement_report(labels, consensus=consensus, classes=[0, 1, 2, 3], min_pair_items=1)

    wide = labels.pivot(index="item", columns="annotator", values="label")
    assert len(report.pairs) == 15
    for pair in report.pairs:
        both = wide[[pair.a, pair.b]].dropna()
        assert pair.items == len(both)
        assert pair.kappa == pytest.approx(cohen_kappa_score(both[pair.a], both[pair.b]))
    assert report.cohen_kappa.value == pytest.approx(np.mean([p.kappa for p in report.pairs]))

    multi = wide.notna().sum(axis=1) >= 2
    for row in report.per_annotator:
        mine = wide[row.annotator].dropna()
        mine = mine[mine.index.isin([i for i in consensus if multi[i]])]
        truth = [consensus[i] for i in mine.index]
        assert row.compared == len(mine)
        assert row.kappa_with_consensus.value == pytest.approx(cohen_kappa_score(mine, truth))
        assert row.agreement_with_consensus == pytest.approx(np.mean(mine.to_numpy() == truth))
