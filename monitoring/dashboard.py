"""What the monitoring page shows: the metric windows of the chosen version,
segment and granularity, read back as series and drawn as SVG charts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from iterations.models import ModelSettings, ModelVersion

from . import charts, selectors
from .models import MetricWindow, MonitoringCursor, PredictionLog
from .services.metrics import SEGMENT_VALUES_CAP

# How far back each granularity looks from the newest window: a week of
# hours (168 bars) and a quarter of days stay readable at 450 px.
# Small multiples: one chart per field and measure, the first few.
DRIFT_CHARTS = 8
SPAN = {"hour": timedelta(days=7), "day": timedelta(days=90)}


@dataclass
class Filters:
    granularity: str = "day"
    version: ModelVersion | None = None
    segment: str = ""
    errors: list = field(default_factory=list)


def filters_from(project, params) -> Filters:
    """Read the page's GET parameters; a bad value is named in ``errors`` and
    its filter left off, so the page still shows everything else."""
    chosen = Filters()
    granularity = params.get("granularity") or "day"
    if granularity in SPAN:
        chosen.granularity = granularity
    else:
        chosen.errors.append(f"granularity “{granularity}”: choose hour or day.")
    number = params.get("version") or ""
    if number:
        version = (
            ModelVersion.objects.filter(project=project, number=number).first()
            if number.isdigit()
            else None
        )
        if version is None:
            chosen.errors.append(f"version “{number}”: this project has no such model version.")
        chosen.version = version
    segment = params.get("segment") or ""
    if segment:
        if segment in selectors.metric_segments(project=project):
            chosen.segment = segment
        else:
            chosen.errors.append(f"segment “{segment}”: no predictions were logged with it.")
    return chosen


def page_context(project, params) -> dict:
    chosen = filters_from(project, params)
    model_settings = ModelSettings.objects.filter(project=project).first()
    baseline = model_settings.useful_baseline if model_settings else None
    unit = model_settings.value_unit if model_settings else ""
    has_gains = bool(model_settings and model_settings.gain_matrix)
    newest = (
        MetricWindow.objects.filter(project=project, granularity=chosen.granularity)
        .order_by("-start")
        .values_list("start", flat=True)
        .first()
    )
    g = chosen.granularity
    rows, period = [], None
    if newest is not None:
        # The page's period: the span back from the newest window through
        # that window's end. The table, the charts and the drift checks all
        # read it.
        period = (newest - SPAN[g], newest + charts.STEP[g])
        rows = selectors.metric_windows_summary(
            project=project,
            granularity=g,
            version_id=chosen.version.pk if chosen.version else None,
            segment=chosen.segment,
            since=period[0],
        )
    context = {
        "filters": chosen,
        "versions": ModelVersion.objects.filter(project=project).order_by("-number"),
        "segments": selectors.metric_segments(project=project),
        "cursor": MonitoringCursor.objects.filter(project=project).first(),
        "logged": newest is not None or PredictionLog.objects.filter(project=project).exists(),
        "has_windows": bool(rows),
        "summary": [
            {
                "version": version,
                "summary": summary,
                "first": first,
                "last": last,
                "labelled": round((summary.coverage or 0) * summary.n),
                "coverage_pct": 100 * (summary.coverage or 0),
            }
            for version, summary, first, last in selectors.metric_versions_summary(
                project=project,
                segment=chosen.segment,
                granularity=g,
                since=period[0] if period else None,
                version_id=chosen.version.pk if chosen.version else None,
            )
        ],
        "period": period,
        "baseline": baseline,
        "unit": unit,
        "has_gains": has_gains,
        "span_days": SPAN[g].days,
        "segment_values_cap": SEGMENT_VALUES_CAP,
    }
    if rows:
        context["charts"] = {
            "volume": charts.volume([(s, summary.n) for s, summary, _ in rows], g),
            "accuracy": charts.accuracy(
                [(s, x.accuracy, x.accuracy_ci, x.coverage) for s, x, _ in rows], g
            ),
            "classes": charts.class_shares([(s, x.predicted_share) for s, x, _ in rows], g),
            "latency": charts.latency([(s, x.latency_p50, x.latency_p95) for s, x, _ in rows], g),
            "value": charts.value(
                [(s, x.value_per_1000, x.value_ci) for s, x, _ in rows],
                g,
                baseline=baseline,
                unit=unit,
            ),
        }
    # Drift is measured per version and check window over all predictions,
    # not per segment; the checks shown are those that read logs of the
    # period, drawn on the time axis of the charts above (from their first window).
    span = (rows[0][0], period[1]) if rows else period
    context["drift_charts"] = [
        chart
        for chart in (
            charts.drift(series, period=span, granularity=g)
            for series in selectors.drift_series(project, chosen.version, period=period)[
                :DRIFT_CHARTS
            ]
        )
        if chart
    ]
    return context
