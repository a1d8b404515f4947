"""Reads of logs and ground truth worth naming."""

from iterations.models import ModelVersion
from ml.windows import Aggregate, summarise

from .models import DriftCheck, GroundTruth, MetricWindow, MonitoringSettings, PredictionLog


def ground_truth_latest(*, project, request_ids) -> dict:
    """request id -> the GroundTruth row that counts for it: the highest
    source priority (outcome, expert, feedback), the newest within it."""
    rank = GroundTruth.SOURCE_PRIORITY
    chosen = {}
    ids = list(request_ids)
    for start in range(0, len(ids), 1000):
        for row in GroundTruth.objects.filter(
            project=project, request_id__in=ids[start : start + 1000]
        ).order_by("created_at", "id"):
            current = chosen.get(row.request_id)
            if current is None or rank[row.source] >= rank[current.source]:
                chosen[row.request_id] = row
    return chosen


def prediction_logs_with_truth(*, project, request_ids):
    """The project's logs among ``request_ids``, each with ``.truth`` (the
    GroundTruth that counts, or None) — ground truth that arrived before its
    log joins it here like any other."""
    logs = list(
        PredictionLog.objects.filter(project=project, request_id__in=list(request_ids))
        .select_related("model_version")
        .order_by("timestamp", "id")
    )
    truth = ground_truth_latest(project=project, request_ids=[log.request_id for log in logs])
    for log in logs:
        log.truth = truth.get(log.request_id)
    return logs


def metric_windows_summary(*, project, granularity, version_id=None, segment="", since=None):
    """The project's windows of one granularity and segment, oldest first, as
    ``[(start, model_version_id, ml.windows.Summary, Aggregate)]``; windows of
    the same start are merged across versions when no version is chosen."""
    query = MetricWindow.objects.filter(
        project=project, granularity=granularity, segment=segment
    ).order_by("start")
    if version_id is not None:
        query = query.filter(model_version_id=version_id)
    if since is not None:
        query = query.filter(start__gte=since)
    merged = {}
    for start, aggregate in query.values_list("start", "aggregate"):
        merged[start] = merged.get(start, Aggregate()) + Aggregate.from_dict(aggregate)
    return [(start, summarise(agg), agg) for start, agg in merged.items()]


def metric_versions_summary(
    *, project, segment="", granularity=MetricWindow.Granularity.DAY, since=None, version_id=None
):
    """Per model version, its windows of ``granularity`` from ``since`` on
    (its whole logged life without one) merged: ``[(ModelVersion, Summary,
    first window start, last window start)]``, newest version first;
    ``version_id``: that version only."""
    totals, spans = {}, {}
    query = MetricWindow.objects.filter(project=project, granularity=granularity, segment=segment)
    if since is not None:
        query = query.filter(start__gte=since)
    if version_id is not None:
        query = query.filter(model_version_id=version_id)
    for served_by, start, aggregate in query.values_list("model_version_id", "start", "aggregate"):
        totals[served_by] = totals.get(served_by, Aggregate()) + Aggregate.from_dict(aggregate)
        first, last = spans.get(served_by, (start, start))
        spans[served_by] = (min(first, start), max(last, start))
    versions = ModelVersion.objects.filter(pk__in=totals).order_by("-number")
    return [(v, summarise(totals[v.pk]), *spans[v.pk]) for v in versions]


def metric_segments(*, project) -> list[str]:
    """The segment windows the page can filter on ("field=value"), sorted."""
    return sorted(
        MetricWindow.objects.filter(project=project, granularity=MetricWindow.Granularity.DAY)
        .exclude(segment="")
        .values_list("segment", flat=True)
        .distinct()
    )


# The drift measures worth a line on a chart, per result kind, with the
# MonitoringSettings threshold each is held against (None: shown, never an
# alert: new values of a field of identifiers are expected).
_DRIFT_MEASURES = {
    "numeric": (("psi", "psi_threshold"),),
    "categorical": (
        ("psi", "psi_threshold"),
        ("share_change", "share_points"),
        ("unseen_share", None),
    ),
    "prediction": (("psi", "psi_threshold"), ("share_change", "share_points")),
    "label": (("psi", "psi_threshold"), ("share_change", "share_points")),
    "text": (("oov_rise", "oov_increase"), ("centroid_distance", "centroid_distance")),
}


def _drift_value(result, measure):
    if measure == "share_change":
        change = (result.get("largest_share_change") or {}).get("change")
        return abs(change) if change is not None else None
    if measure == "oov_rise":  # what the OOV alert compares with its threshold
        return result["oov_share"] - result["reference_oov_share"]
    return result.get(measure)


def drift_series(project, version=None, period=None) -> list[dict]:
    """Per field and measure, the value of each drift check over time, for
    the monitoring page's chart: ``[{"field", "kind", "measure",
    "threshold", "points": [{"window_start", "window_end", "version",
    "value"}]}]``, ordered by field then measure, points by window. A field a
    check could not measure (no values on one side) has no point there.
    A window checked more than once counts with its latest check.
    ``threshold`` is the project's current one (None: switched off); share
    changes are absolute (points as a fraction), OOV as the rise above the
    training texts' own rate, as the alerts read them. ``period`` (start,
    end): only the checks whose window read logs of it."""
    settings_row = MonitoringSettings.objects.filter(project=project).first()
    checks = DriftCheck.objects.filter(project=project).select_related("model_version")
    if version is not None:
        checks = checks.filter(model_version=version)
    if period is not None:
        checks = checks.filter(window_end__gt=period[0], window_start__lt=period[1])
    # A window checked twice ("check now", then the daily run): its latest check.
    latest = {}
    for check in checks.order_by("window_start", "id"):
        latest[(check.model_version_id, check.window_start, check.window_end)] = check
    series = {}
    for check in latest.values():
        for result in check.results:
            if result.get("error"):
                continue
            for measure, setting in _DRIFT_MEASURES.get(result.get("kind"), ()):
                value = _drift_value(result, measure)
                if value is None:
                    continue
                key = (result["field"], measure)
                if key not in series:
                    if setting is None:
                        threshold = None
                    elif settings_row is not None:
                        threshold = getattr(settings_row, setting)
                    else:
                        threshold = MonitoringSettings._meta.get_field(setting).default
                    series[key] = {
                        "field": result["field"],
                        "kind": result["kind"],
                        "measure": measure,
                        "threshold": threshold,
                        "points": [],
                    }
                series[key]["points"].append(
                    {
                        "window_start": check.window_start,
                        "window_end": check.window_end,
                        "version": check.model_version.number,
                        "value": float(value),
                    }
                )
    return [series[k] for k in sorted(series)]
