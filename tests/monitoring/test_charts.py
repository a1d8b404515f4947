"""Monitoring charts: the legend never sits on top of the chart's label."""

import re
from datetime import UTC, datetime, timedelta

from monitoring import charts


def _series(field, measure):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    points = [{"window_start": start + timedelta(days=i), "value": 0.05 * i} for i in range(5)]
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
