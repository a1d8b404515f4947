"""Hourly and daily metric windows, kept up to date from the new rows only.

Invariant the windows hold between runs, with ``L`` and ``T`` the cursor's
``logs_through`` and ``truth_through``:

    every log with id <= L is counted once in the windows of its model
    version, hour and day (and of its segment values), and its ground-truth
    part (labelled, correct, per-class, gain) is that of the ground truth
    that wins among the ground-truth rows with id <= T.

A run moves the cursor in two steps that each keep the invariant:

1. Logs (L → L'): each new log is folded in with the ground truth that wins
   among rows <= T. Ground truth that came before its log is therefore
   counted the moment the log arrives.
2. Ground truth (T → T'): for every request id with new ground-truth rows
   whose log is already counted (id <= L'), the winner among rows <= T is
   compared with the winner among rows <= T'. If it changed — a first label,
   or a later, higher-priority source (``GroundTruth.SOURCE_PRIORITY``)
   replacing an earlier one — the old winner's contribution is *subtracted*
   from the log's windows and the new one's added. Aggregates are sums of
   counts, so subtracting one log's part is exact.

Each chunk runs in its own transaction holding a row lock on the project's
cursor: a second run started at the same time waits, then reads the moved
cursor and folds only what is left — nothing is counted twice. The cost of a
run is the new rows (and the windows they touch), never the logs' total.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, timedelta

import pandas as pd
from django.db import transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from iterations.models import ModelSettings
from ml.windows import Aggregate, aggregate

from ..models import GroundTruth, MetricWindow, MonitoringCursor, PredictionLog

# Each segment value multiplies the stored windows (hours × versions × values)
# and becomes an entry in the page's filter; a field holding ids or free text
# would make millions of rows nobody reads. The first SEGMENT_VALUES_CAP
# distinct values of a field (most frequent first within a run) get their own
# windows; later newcomers share one "(other)" window. Once a value has
# windows it keeps them, so a log and the ground truth that arrives for it
# days later always land in the same window.
SEGMENT_VALUES_CAP = 20
OTHER = "(other)"
SEGMENT_MAX_LENGTH = 200  # MetricWindow.segment
CHUNK = 50_000
# The cursor is an id, and ids are handed out when a row is inserted, not
# when its transaction commits: a 100,000-row request still being written
# holds ids below those of a smaller one that committed after it started.
# A run that read past it would move the cursor over rows it never saw. So a
# run folds rows in id order only up to the first one stored (received_at /
# created_at, both the server's clock at the request's start) less than
# SETTLE_SECONDS ago — far longer than an ingestion request's time limit —
# and the next run takes it from there. Charts lag by that much.
SETTLE_SECONDS = 300
HOUR, DAY = MetricWindow.Granularity.HOUR, MetricWindow.Granularity.DAY
LOG_COLUMNS = [
    "id",
    "project_id",
    "request_id",
    "received_at",
    "timestamp",
    "model_version_id",
    "predicted",
    "confidence",
    "latency_ms",
    "segment",
]


@dataclass(frozen=True)
class MetricsRun:
    logs: int  # new logs folded in
    truth: int  # new ground-truth rows read
    truth_changed: int  # counted logs whose ground truth changed
    windows: int  # window rows written
    seconds: float


def metrics_update(
    *, project, chunk_size: int = CHUNK, settle_seconds: float = SETTLE_SECONDS
) -> MetricsRun:
    """Fold the logs and ground truth that arrived since the last run into
    the project's MetricWindow rows (see the module docstring). Rows stored
    less than ``settle_seconds`` ago wait for the next run (see SETTLE_SECONDS)."""
    started = time.perf_counter()
    horizon = timezone.now() - timedelta(seconds=settle_seconds)
    MonitoringCursor.objects.get_or_create(project=project)
    gains = _gain_matrix(project)
    logs = truth = changed = windows = 0
    while True:
        with transaction.atomic():
            cursor = MonitoringCursor.objects.select_for_update().get(project=project)
            frame = _read_logs(project, after=cursor.logs_through, limit=chunk_size)
            settled = _settled(frame["received_at"], horizon)
            frame = frame.iloc[:settled]
            if frame.empty:
                break
            last_id = int(frame["id"].iloc[-1])
            frame = frame[frame["project_id"] == project.pk].copy()
            if not frame.empty:
                frame["truth"] = _truth_for(
                    project, frame["request_id"].tolist(), through=cursor.truth_through
                )
                windows += _fold(project, frame, gains, sign=1)
                logs += len(frame)
            cursor.logs_through = last_id
            cursor.save(update_fields=["logs_through", "updated_at"])
            if settled < chunk_size:
                break
    while True:
        with transaction.atomic():
            cursor = MonitoringCursor.objects.select_for_update().get(project=project)
            rows = list(
                _new_rows(GroundTruth, cursor.truth_through).values_list(
                    "id", "project_id", "request_id", "created_at"
                )[:chunk_size]
            )
            settled = _settled([created_at for *_, created_at in rows], horizon)
            rows = rows[:settled]
            if not rows:
                break
            new_through = rows[-1][0]
            rows = [row for row in rows if row[1] == project.pk]
            n_changed, n_windows = _apply_truth(
                project,
                sorted({request_id for _, _, request_id, _ in rows}),
                old_through=cursor.truth_through,
                new_through=new_through,
                logs_through=cursor.logs_through,
                gains=gains,
            )
            truth += len(rows)
            changed += n_changed
            windows += n_windows
            cursor.truth_through = new_through
            cursor.save(update_fields=["truth_through", "updated_at"])
            if settled < chunk_size:
                break
    return MetricsRun(logs, truth, changed, windows, round(time.perf_counter() - started, 3))


def _settled(stored_at, horizon) -> int:
    """How many of the rows (in id order) to fold: up to the first one
    stored after ``horizon``."""
    for position, moment in enumerate(stored_at):
        if moment > horizon:
            return position
    return len(stored_at)


def _gain_matrix(project) -> dict:
    settings = ModelSettings.objects.filter(project=project).first()
    return (settings.gain_matrix or {}) if settings else {}


def _new_rows(model, after):
    """Rows of every project with id > ``after``, through the primary key;
    the caller keeps its project's.

    Filtering by project in SQL would let PostgreSQL pick the project's
    index, and with stale statistics (right after a large COPY, before
    autovacuum's ANALYZE) it reads every row of the project that way and
    sorts them: a full rescan at each run, seen at 10,000,000 logs. The
    primary-key range reads the new rows and nothing else, whatever the
    statistics; other projects' new rows are read and skipped, so a run
    costs the site's new rows, not its total."""
    return model.objects.filter(id__gt=after).order_by("id")


def _read_logs(project, *, after, limit=None, request_ids=None) -> pd.DataFrame:
    query = _new_rows(PredictionLog, after)
    if request_ids is not None:
        query = PredictionLog.objects.filter(project=project, request_id__in=request_ids)
        query = query.filter(id__lte=after)  # here "after" is the logs already counted
    # The segment as its JSON text: a handful of distinct texts repeat over
    # millions of rows, so each is decoded once here instead of once a row.
    query = query.annotate(segment_text=Cast("segment", TextField()))
    rows = list(query.order_by("id").values_list(*LOG_COLUMNS[:-1], "segment_text")[:limit])
    frame = pd.DataFrame(rows, columns=LOG_COLUMNS)
    decoded = {text: json.loads(text) for text in frame["segment"].dropna().unique()}
    frame["segment"] = [decoded.get(text) for text in frame["segment"]]
    return frame


def _winners(project, request_ids, *, through) -> dict:
    """request id -> label of the ground truth that wins among the rows with
    id <= ``through``: highest source priority, then newest (created_at, id),
    the same rule as ``selectors.ground_truth_latest``."""
    if through <= 0 or not request_ids:
        return {}
    rank = GroundTruth.SOURCE_PRIORITY
    best = {}
    for start in range(0, len(request_ids), 5000):
        for request_id, label, source, created_at, pk in GroundTruth.objects.filter(
            project=project, request_id__in=request_ids[start : start + 5000], id__lte=through
        ).values_list("request_id", "label", "source", "created_at", "id"):
            key = (rank[source], created_at, pk)
            if request_id not in best or key > best[request_id][0]:
                best[request_id] = (key, label)
    return {request_id: label for request_id, (_key, label) in best.items()}


def _truth_for(project, request_ids, *, through) -> list:
    winners = _winners(project, request_ids, through=through)
    return [winners.get(request_id) for request_id in request_ids]


def _known_segments(project) -> dict:
    """field -> the values that already have their own windows."""
    known = defaultdict(set)
    day_segments = (
        MetricWindow.objects.filter(project=project, granularity=DAY)
        .exclude(segment="")
        .values_list("segment", flat=True)
        .distinct()
    )
    for segment in day_segments:
        field, _, value = segment.partition("=")
        known[field].add(value)
    return known


def _segment_label(field, value) -> str:
    return f"{field}={value}"[:SEGMENT_MAX_LENGTH]


def _segment_keys(frame, known) -> list[list[str]]:
    """Each log's segment windows ("field=value"), admitting new values up to
    the cap, most frequent first. ``known`` is updated in place."""
    parsed = [
        {str(k): ("" if v is None else str(v)) for k, v in s.items()} if isinstance(s, dict) else {}
        for s in frame["segment"]
    ]
    counts = Counter((f, v) for seg in parsed for f, v in seg.items())
    for (field, value), _count in counts.most_common():
        values = known[field]
        if value not in values and len(values) < SEGMENT_VALUES_CAP and value != OTHER:
            values.add(value)
    return [
        [_segment_label(f, v if v in known[f] else OTHER) for f, v in sorted(seg.items())]
        for seg in parsed
    ]


def _fold(project, frame, gains, *, sign, truth_only=False) -> int:
    """Add (sign 1) or subtract (sign -1) the logs of ``frame`` to or from
    their hour and day windows, all predictions and per segment value."""
    frame = frame.copy()
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    frame["hour"] = stamps.dt.floor("h")
    frame["day"] = stamps.dt.floor("D")
    frame["segments"] = _segment_keys(frame, _known_segments(project))
    parts = defaultdict(Aggregate)  # (version id, granularity, start, segment) -> Aggregate
    for (version_id, hour), group in frame.groupby(["model_version_id", "hour"], sort=False):
        base = _aggregate(group, gains, truth_only)
        day = group["day"].iloc[0]
        for granularity, start in ((HOUR, hour), (DAY, day)):
            parts[(version_id, granularity, start, "")] += base
        exploded = group.explode("segments").dropna(subset=["segments"])
        for segment, seg_group in exploded.groupby("segments", sort=False):
            part = _aggregate(seg_group, gains, truth_only)
            for granularity, start in ((HOUR, hour), (DAY, day)):
                parts[(version_id, granularity, start, segment)] += part
    if sign < 0:
        parts = {key: _negate(value) for key, value in parts.items()}
    return _store(project, parts)


def _aggregate(group, gains, truth_only) -> Aggregate:
    latency = group["latency_ms"].astype(float).to_numpy()
    part = aggregate(
        group["predicted"].to_numpy(),
        group["confidence"].to_numpy(dtype=float),
        latency,
        true=group["truth"].to_numpy(),
        gain_matrix=gains,
    )
    if truth_only:
        # Ground truth changing touches only the ground-truth part: the
        # prediction itself (volume, classes, confidence, latency) was counted
        # when its log arrived.
        blank = Aggregate()
        part.n, part.predicted = 0, {}
        part.confidence, part.latency = blank.confidence, blank.latency
    return part


def _negate(agg: Aggregate) -> Aggregate:
    data = agg.as_dict()
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = {k: -v for k, v in value.items()}
        elif isinstance(value, list):
            out[key] = [-v for v in value]
        else:
            out[key] = -value
    return Aggregate.from_dict(out)


def _clean(agg: Aggregate) -> dict:
    """Drop the classes whose count fell back to 0 (a replaced ground truth),
    so that the stored aggregate equals one computed from scratch."""
    data = agg.as_dict()
    for key in ("predicted", "true", "true_correct"):
        data[key] = {k: v for k, v in data[key].items() if v}
    if not data["gain_n"]:
        data["gain_sum"] = data["gain_sq_sum"] = 0.0
    return data


def _store(project, parts) -> int:
    """Merge ``parts`` into the stored windows, locking the rows it updates."""
    if not parts:
        return 0
    starts = {start.to_pydatetime().astimezone(UTC) for _v, _g, start, _s in parts}
    versions = {version_id for version_id, *_ in parts}
    existing = {
        (version_id, granularity, start, segment): aggregate
        for version_id, granularity, start, segment, aggregate in MetricWindow.objects.filter(
            project=project, model_version_id__in=versions, start__in=starts
        )
        .select_for_update()
        .values_list("model_version_id", "granularity", "start", "segment", "aggregate")
    }
    now = timezone.now()
    rows = []
    for (version_id, granularity, start, segment), part in parts.items():
        key = (version_id, granularity, start.to_pydatetime().astimezone(UTC), segment)
        stored = existing.get(key)
        merged = part if stored is None else Aggregate.from_dict(stored) + part
        rows.append(
            MetricWindow(
                project=project,
                model_version_id=version_id,
                granularity=granularity,
                start=key[2],
                segment=segment,
                aggregate=_clean(merged),
                updated_at=now,
            )
        )
    # One INSERT ... ON CONFLICT DO UPDATE for new and existing windows alike
    # (Django's bulk_update would build a CASE per row).
    MetricWindow.objects.bulk_create(
        rows,
        batch_size=2000,
        update_conflicts=True,
        unique_fields=["project", "model_version", "granularity", "start", "segment"],
        update_fields=["aggregate", "updated_at"],
    )
    return len(rows)


def _apply_truth(project, request_ids, *, old_through, new_through, logs_through, gains):
    """Swap the ground-truth part of already-counted logs whose winning
    ground truth changed between ``old_through`` and ``new_through``."""
    logs = []
    for start in range(0, len(request_ids), 5000):
        logs.append(
            _read_logs(project, after=logs_through, request_ids=request_ids[start : start + 5000])
        )
    frame = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame(columns=LOG_COLUMNS)
    if frame.empty:
        return 0, 0  # no log yet: counted when it arrives (step 1)
    ids = frame["request_id"].tolist()
    before = _winners(project, ids, through=old_through)
    after = _winners(project, ids, through=new_through)
    changed = frame[[before.get(r) != after.get(r) for r in ids]]
    if changed.empty:
        return 0, 0
    old = changed.copy()
    old["truth"] = [before.get(r) for r in old["request_id"]]
    new = changed.copy()
    new["truth"] = [after.get(r) for r in new["request_id"]]
    windows = 0
    old = old[old["truth"].notna()]
    if not old.empty:
        windows += _fold(project, old, gains, sign=-1, truth_only=True)
    windows += _fold(project, new, gains, sign=1, truth_only=True)
    return len(changed), windows
