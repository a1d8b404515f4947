"""Monitoring charts: the legend never sits on top of the chart's label."""

import re
from datetime import UTC, datetime, timedelta

from monitoring import charts


def _series(field, measure):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    points = [
        {
            "window_start": start + timedelta(days=i),
            "window_end": start + timedelta(days=i + 1),
            "value": 0.05 * i,
        }
        for i in range(5)
    ]
    return {"field": field, "measure": measure, "threshold": 0.2, "points": points}


def _text_rows(svg, text):
    return [float(y) for y in re.findall(rf'<text[^>]*y="([\d.]+)"[^>]*>{re.escape(text)}<', svg)]


def test_a_short_label_keeps_the_legend_beside_it():
    svg = charts.drift(_series("stars", "psi"))
    assert _text_rows(svg, "alert above 0.2") == [14]
    assert f'height="{charts.TOP + charts.PLOT_H + 26}"' in svg


def test_a_long_label_moves_the_legend_under_the_chart():
    svg = charts.drift(_series("review_text_of_the_customer", "text_centroid_distance"))
    (row,) = _text_rows(svg, "alert above 0.2")
    assert row == charts.LEGEND_BELOW
    assert f'height="{charts.TOP + charts.PLOT_H + 46}"' in svg
    # The label itself is still there, whole, on the top row.
    assert "review_text_of_the_customer · text_centroid_distance" in svg


def test_legend_entries_are_not_cut_short():
    series = {**_series("review", "centroid_distance"), "threshold": 0.0001}
    svg = charts.drift(series)
    assert _text_rows(svg, "centroid_distance") == [charts.LEGEND_BELOW]
    assert _text_rows(svg, "alert above 0.0001") == [charts.LEGEND_BELOW]
    assert "…" not in svg and "e-0" not in svg


def test_a_legend_too_wide_for_one_row_wraps_and_the_chart_grows():
    start = datetime(2026, 3, 1, tzinfo=UTC)
    names = [f"a rather long class name {i}" for i in range(4)]
    points = [(start + timedelta(days=i), {n: 0.25 for n in names}) for i in range(3)]
    svg = charts.class_shares(points, "day")
    rows = sorted({y for name in names for y in _text_rows(svg, name)})
    assert len(rows) > 1 and rows[0] == charts.LEGEND_BELOW
    bottom = charts.TOP + charts.PLOT_H + 46 + (len(rows) - 1) * charts.LEGEND_ROW
    assert f'height="{bottom}"' in svg
    # Every entry is whole and inside the chart's width.
    for x in re.findall(r'<text x="(-?[\d.]+)"', svg):
        assert float(x) >= 0


def _line_x(svg):
    return [
        (float(a), float(b))
        for a, b in re.findall(
            r'<line x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)"[^>]*stroke-width="3">', svg
        )
    ]


def test_a_check_is_drawn_across_the_window_it_read_clipped_to_the_period():
    end = datetime(2026, 3, 15, tzinfo=UTC)
    series = {
        "field": "stars",
        "measure": "psi",
        "threshold": 0.25,
        "points": [{"window_start": end - timedelta(days=15), "window_end": end, "value": 0.1}],
    }
    svg = charts.drift(series, period=(end - timedelta(days=7), end), granularity="hour")
    # The 15-day check spans the whole 7-day period, its dot at the window's end.
    assert _line_x(svg) == [(charts.LEFT, charts.LEFT + charts.PLOT_W)]
    assert f'<circle cx="{charts.LEFT + charts.PLOT_W:.1f}"' in svg
    # A one-day check at the end of the period spans its last seventh.
    series["points"] = [{"window_start": end - timedelta(days=1), "window_end": end, "value": 0.1}]
    svg = charts.drift(series, period=(end - timedelta(days=7), end), granularity="hour")
    ((x1, x2),) = _line_x(svg)
    assert round(x1, 1) == round(charts.LEFT + charts.PLOT_W * 6 / 7, 1)
    assert x2 == charts.LEFT + charts.PLOT_W
