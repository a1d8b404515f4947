"""Reads of logs and ground truth worth naming."""

from .models import GroundTruth, PredictionLog


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
