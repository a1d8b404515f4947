"""Server-side SVG charts of a report: labelled, escaped, and robust to odd payloads."""

import re
import xml.etree.ElementTree as ET

from iterations import charts

HOSTILE = '</text><script>alert(1)</script>"&'
SVG = "{http://www.w3.org/2000/svg}"


def parse(svg):
    # Our own output, parsed to prove it is well-formed XML.
    root = ET.fromstring(str(svg))  # noqa: S314
    assert root.get("role") == "img" and root.get("aria-label")
    assert root.find(f"{SVG}title").text == root.get("aria-label")
    return root


def texts(root):
    return [t.text for t in root.iter(f"{SVG}text")]


def test_recall_deltas_draw_each_class_with_its_interval_and_escape_names():
    svg = charts.recall_deltas(
        [
            {"label": HOSTILE, "difference": 0.03, "low": 0.01, "high": 0.05},
            {"label": "other", "difference": -0.02, "low": -0.06, "high": 0.01},
        ]
    )
    root = parse(svg)
    assert "<script>" not in svg
    assert HOSTILE[:17] in "".join(texts(root))  # shown as text (truncated), not markup
    colours = [c.get("fill") for c in root.iter(f"{SVG}circle")]
    assert colours == [charts.GOOD, charts.NEUTRAL]  # surely better; not sure either way


def test_confusion_shows_counts_and_survives_a_short_class_list():
    root = parse(charts.confusion([[5, 1], [2, 7]], ["great"], title=f"v2 {HOSTILE}"))
    assert {"5", "1", "2", "7", "great", "#2"} <= set(texts(root))
    assert HOSTILE in root.get("aria-label")


def test_calibration_skips_empty_bins_and_draws_one_line_per_version():
    bins = [
        {"confidence": 0.55, "accuracy": 0.5, "count": 10},
        {"confidence": None, "accuracy": None, "count": 0},
        {"confidence": 0.9, "accuracy": 0.85, "count": 40},
    ]
    root = parse(charts.calibration([("v2 candidate", bins), ("v1 production", bins[:1])]))
    lines = list(root.iter(f"{SVG}polyline"))
    assert [len(line.get("points").split()) for line in lines] == [2, 1]
    assert charts.calibration([("v1", [bins[1]])]) == ""


def test_value_chart_marks_the_baseline_and_orders_points():
    root = parse(
        charts.value_over_versions(
            [("v1", 80.0), ("v2", None), ("v3", 95.5)], baseline=90.0, unit="EUR"
        )
    )
    labels = texts(root)
    assert "baseline 90.0" in labels and "95.5" in labels and "v2" not in labels
    xs = [float(c.get("cx")) for c in root.iter(f"{SVG}circle")]
    assert xs == sorted(xs) and len(xs) == 2


def test_empty_inputs_draw_nothing():
    assert charts.recall_deltas([]) == ""
    assert charts.confusion([], ["a"], title="t") == ""
    assert charts.value_over_versions([("v1", None)]) == ""


def test_nice_ticks_are_round():
    assert charts._nice_ticks(-430, 400) == [-400, -200, 0, 200, 400]
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", f"{t:g}") for t in charts._nice_ticks(0.1, 0.13))


def test_nice_ticks_never_leave_an_axis_with_one_label():
    # The demo's value per 1,000, whose daily intervals are wide: the step of
    # 5,000 that the range asks for puts only 0 inside it.
    assert charts._nice_ticks(-4540, 3933, 4) == [-4000, -2000, 0, 2000]
    for low, high in [(-4540, 3933), (-9000, 9500), (-1.2, 0.9), (0, 0.06), (3, 4), (-405, 900)]:
        assert len(charts._nice_ticks(low, high, 4)) >= 2, (low, high)
