"""Drift checks: a window of production logs against the training snapshot
of the model version that served them (the numbers come from ``ml.drift``).

Choices worth knowing:

- Reference: the version's snapshot *training* rows, with each sample's data
  as it was when snapshotted; above ``MAX_REFERENCE`` rows a seeded (seed 0)
  random subset of that size. Snapshots never change, so the reference frame
  is kept in a small per-process cache keyed by the snapshot's id, content
  hash and creation time.
- Current: the window's logs of that version. Above ``MAX_CURRENT`` logs a
  uniform random subset of that size is read, seeded by the window's start,
  so re-running a check reads the same rows; the check stores how many it read.
- Prediction drift is "predicted class vs training labels": the window's
  predicted-class mix against the class mix the version was trained on. The
  version's predictions on its own training rows are not stored, and the
  training labels are what a well-calibrated model's predictions average to.
- Label drift ("true class vs training labels") where at least
  ``MIN_TRUTH`` of the window's logs have ground truth (the one that counts,
  see ``ground_truth_latest``).
- A field one side has no usable values for is stored with its error
  instead of numbers, and raises no alert.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict

import numpy as np
import pandas as pd
from django.db import transaction

from iterations.models import ModelVersion
from iterations.services.training import snapshot_train_frame
from leanml_site.errors import Refusal
from ml import drift as ml_drift

from ..models import DriftCheck, MonitoringSettings, PredictionLog
from ..selectors import ground_truth_latest

logger = logging.getLogger(__name__)

MAX_CURRENT = 50_000
MAX_REFERENCE = 50_000
MIN_TRUTH = 30
PREDICTION_FIELD = "predicted class vs training labels"
LABEL_FIELD = "true class vs training labels"

_REFERENCE_CACHE: OrderedDict = OrderedDict()
_REFERENCE_CACHE_SIZE = 4


class DriftError(Refusal):
    """A drift check cannot run as asked (its window)."""


def monitoring_settings_get(project) -> MonitoringSettings:
    """The project's settings; an unsaved row of the defaults when it has
    none yet (reading never writes: monitoring_settings_update creates it)."""
    row = MonitoringSettings.objects.filter(project=project).first()
    return row if row is not None else MonitoringSettings(project=project)


def thresholds_for(settings_row: MonitoringSettings) -> ml_drift.Thresholds:
    return ml_drift.Thresholds(
        psi=settings_row.psi_threshold,
        share_points=settings_row.share_points,
        oov_increase=settings_row.oov_increase,
        centroid_distance=settings_row.centroid_distance,
    )


def _reference(snapshot):
    # The creation time too: a test database reuses ids after a rollback.
    key = (snapshot.pk, snapshot.content_hash, snapshot.created_at)
    if key in _REFERENCE_CACHE:
        _REFERENCE_CACHE.move_to_end(key)
        return _REFERENCE_CACHE[key]
    frame, labels = snapshot_train_frame(snapshot)
    if len(frame) > MAX_REFERENCE:
        keep = np.sort(np.random.default_rng(0).choice(len(frame), MAX_REFERENCE, replace=False))
        frame, labels = frame.iloc[keep], labels[keep]
    _REFERENCE_CACHE[key] = (frame, labels)
    while len(_REFERENCE_CACHE) > _REFERENCE_CACHE_SIZE:
        _REFERENCE_CACHE.popitem(last=False)
    return frame, labels


def _current(project, version, window_start, window_end):
    """(frame of the logs' data, predicted classes, request ids), at most MAX_CURRENT rows."""
    logs = PredictionLog.objects.filter(
        project=project,
        model_version=version,
        timestamp__gte=window_start,
        timestamp__lt=window_end,
    )
    ids = np.asarray(logs.order_by("id").values_list("id", flat=True), dtype=np.int64)
    if len(ids) > MAX_CURRENT:
        rng = np.random.default_rng(int(window_start.timestamp()))
        ids = np.sort(rng.choice(ids, size=MAX_CURRENT, replace=False))
    records, predicted, request_ids = [], [], []
    for start in range(0, len(ids), 5000):
        chunk = [int(i) for i in ids[start : start + 5000]]
        for data, pred, rid in (
            PredictionLog.objects.filter(id__in=chunk)
            .order_by("id")
            .values_list("data", "predicted", "request_id")
        ):
            records.append(data if isinstance(data, dict) else {})
            predicted.append(pred)
            request_ids.append(rid)
    return pd.DataFrame.from_records(records), predicted, request_ids


def _as_dict(result, kind):
    out = dataclasses.asdict(result)
    out["kind"] = kind
    if isinstance(result, ml_drift.CategoricalDrift):
        category, change = result.largest_share_change
        out["largest_share_change"] = {"category": category, "change": change}
    return out


def _column(frame, name):
    return frame[name].tolist() if name in frame.columns else [None] * len(frame)


def drift_results(project, reference, labels, current, predicted, truths):
    """ml.drift results (dataclasses) and their JSON form, one per field and measure."""
    results, stored = [], []
    kinds = {"number": "numeric", "category": "categorical", "text": "text"}
    for spec in project.fields:
        name, kind = spec["name"], kinds.get(spec.get("kind", "text"), "text")
        ref, cur = _column(reference, name), _column(current, name)
        try:
            if kind == "numeric":
                result = ml_drift.numeric_drift(name, ref, cur)
            elif kind == "categorical":
                result = ml_drift.categorical_drift(name, ref, cur)
            else:
                result = ml_drift.text_drift(name, ref, cur)
        except ValueError as error:
            stored.append({"kind": kind, "field": name, "error": str(error)})
            continue
        results.append(result)
        stored.append(_as_dict(result, kind))
    prediction = ml_drift.class_mix_drift(PREDICTION_FIELD, list(labels), predicted)
    results.append(prediction)
    stored.append(_as_dict(prediction, "prediction"))
    if len(truths) >= MIN_TRUTH:
        label = ml_drift.class_mix_drift(LABEL_FIELD, list(labels), truths)
        results.append(label)
        stored.append(_as_dict(label, "label"))
    return results, stored


def drift_check(*, project, window_start, window_end, notify=True) -> list[DriftCheck]:
    """Check drift for each model version that served logs in
    [window_start, window_end): store a DriftCheck per version and raise
    (or refresh) alerts for the thresholds crossed. Returns the checks."""
    from .alerts import alerts_raise

    if window_end <= window_start:
        raise DriftError("The window must end after it starts.", field="window_end")
    version_ids = (
        PredictionLog.objects.filter(
            project=project, timestamp__gte=window_start, timestamp__lt=window_end
        )
        .values_list("model_version_id", flat=True)
        .distinct()
    )
    versions = ModelVersion.objects.filter(pk__in=list(version_ids)).select_related("snapshot")
    thresholds = thresholds_for(monitoring_settings_get(project))
    checks = []
    for version in sorted(versions, key=lambda v: v.number):
        reference, labels = _reference(version.snapshot)
        if len(reference) == 0:
            logger.warning("version %s has no training rows to compare with", version.pk)
            continue
        current, predicted, request_ids = _current(project, version, window_start, window_end)
        truth = ground_truth_latest(project=project, request_ids=request_ids)
        truths = [truth[r].label for r in request_ids if r in truth]
        results, stored = drift_results(project, reference, labels, current, predicted, truths)
        with transaction.atomic():
            check = DriftCheck.objects.create(
                project=project,
                model_version=version,
                window_start=window_start,
                window_end=window_end,
                n_current=len(current),
                n_reference=len(reference),
                results=stored,
            )
            alerts_raise(
                project=project,
                check=check,
                alerts=ml_drift.alerts(results, thresholds),
                notify=notify,
            )
        checks.append(check)
    return checks
