"""Reads of logs and ground truth worth naming."""

from iterations.models import ModelVersion
from ml.windows import Aggregate, summarise

from .models import GroundTruth, MetricWindow, PredictionLog


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


def metric_windows_summary(*, project, granularity, version_id=None, segment=""):
    """The project's windows of one granularity and segment, oldest first, as
    ``[(start, model_version_id, ml.windows.Summary, Aggregate)]``; windows of
    the same start are merged across versions when no version is chosen."""
    query = MetricWindow.objects.filter(
        project=project, granularity=granularity, segment=segment
    ).order_by("start")
    if version_id is not None:
        query = query.filter(model_version_id=version_id)
    merged = {}
    for start, aggregate in query.values_list("start", "aggregate"):
        merged[start] = merged.get(start, Aggregate()) + Aggregate.from_dict(aggregate)
    return [(start, summarise(agg), agg) for start, agg in merged.items()]


def metric_versions_summary(*, project, segment=""):
    """Per model version, its whole logged life merged from its day windows:
    ``[(ModelVersion, Summary, first day, last day)]``, newest version first."""
    totals, spans = {}, {}
    for version_id, start, aggregate in MetricWindow.objects.filter(
        project=project, granularity=MetricWindow.Granularity.DAY, segment=segment
    ).values_list("model_version_id", "start", "aggregate"):
        totals[version_id] = totals.get(version_id, Aggregate()) + Aggregate.from_dict(aggregate)
        first, last = spans.get(version_id, (start, start))
        spans[version_id] = (min(first, start), max(last, start))
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
