"""Surfacing runs: spend a labelling budget on the production predictions
worth an expert's look, and put them in the labelling queue with why.

``surfacing_request`` checks a budget and a mix and queues a run;
``surfacing_run`` (the Celery task's body) does the work:

1. Candidates: the project's logs since ``run.since`` (default: the last 7
   days) served by the production version, never surfaced before.
2. A pool, so a million candidates stay cheap: every candidate's
   uncertainty comes from the ``confidence`` column and its random rank
   from its predicted class alone; only the ``POOL_UNCERTAIN`` most
   uncertain, the ``POOL_RANDOM`` first in the stratified random order and
   every log an end user corrected have their data and probabilities read.
   The model-based strategies (disagreement, novelty) score the pool only.
   With a budget in the hundreds, the top of uncertainty, disagreement
   and novelty all sit well inside the pool's 100,000 rows; disagreement
   and novelty among the confident-and-not-randomly-drawn rest are not
   looked at (bench/README.md "Surfacing run" has the time this saves).
3. De-duplication: a log whose content (the project's fields, hashed as
   labelling hashes samples) is already a sample of the project —
   labelled, queued or not — is passed over, and so are repeats within the
   pool.
4. ``ml.surfacing.surface`` picks the budget across the mix; samples
   (source "monitoring", external id ``log-<request id>``), open queue
   items with the strategy, score and reason, and ``SurfacedSample`` links
   are written in one transaction with the run's result and an audit event.

Suspected label errors among already labelled samples are not surfaced
here (see the module's last note in bench/README.md): they belong to the
review page, not to the relabelling queue.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from datetime import timedelta

import numpy as np
import pandas as pd
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from iterations.models import ModelVersion
from labelling.models import Project, QueueItem, Sample
from leanml_site.audit import audit_record
from leanml_site.errors import Refusal
from ml import surfacing as strategies
from ml.hashing import content_hash, split_for

from ..models import GroundTruth, MonitoringSettings, PredictionLog, SurfacedSample, SurfacingRun

logger = logging.getLogger(__name__)

DEFAULT_SINCE = timedelta(days=7)
MAX_BUDGET = 10_000
# The pool read in full (see the module docstring).
POOL_UNCERTAIN = 50_000
POOL_RANDOM = 50_000
# Rows per query when reading the pool or looking up hashes: stays under
# SQLite's bound-parameter limit and keeps each round trip short.
CHUNK = 5_000
# Training rows the novelty representation is fitted on (a random sample
# beyond it: k-means centres need no more).
NOVELTY_FIT_ROWS = 20_000
NOVELTY_CACHE_SIZE = 4
SVD_COMPONENTS = 50
TOP_CATEGORIES = 20


class SurfacingError(Refusal):
    """A surfacing run cannot start as asked (budget, mix, window)."""


# --- requests ---------------------------------------------------------------------------


def production_version(project):
    return project.model_versions.filter(status=ModelVersion.Status.PRODUCTION).first()


def surfacing_settings(project) -> MonitoringSettings:
    found = MonitoringSettings.objects.filter(project=project).first()
    return found or MonitoringSettings(project=project)


def mix_parse(raw) -> dict:
    """A mix from {strategy: share} (numbers or numeric strings); shares
    need not add up to 1. Errors name the strategy."""
    if raw is None or raw == {}:
        return dict(strategies.DEFAULT_MIX)
    if not isinstance(raw, dict):
        raise SurfacingError("mix must be an object {strategy: share}.", field="mix")
    mix = {}
    for name, share in raw.items():
        if name not in strategies.STRATEGIES:
            raise SurfacingError(
                f"Unknown strategy “{name}”; known: {', '.join(strategies.STRATEGIES)}.",
                field="mix",
            )
        if name == "label_error":
            raise SurfacingError(
                "label_error picks already labelled samples for review, not production logs "
                "for the queue; leave it out of a surfacing run's mix.",
                field="mix",
            )
        try:
            value = float(share)
        except (TypeError, ValueError):
            raise SurfacingError(
                f"The share of {name} must be a number, not “{share}”.", "mix"
            ) from None
        if not np.isfinite(value) or value < 0:
            raise SurfacingError(f"The share of {name} must be 0 or more, not {share}.", "mix")
        mix[name] = value
    if sum(mix.values()) <= 0:
        raise SurfacingError("At least one strategy needs a share above 0.", field="mix")
    return {name: share for name, share in mix.items() if share > 0}


def surfacing_request(*, project, by, budget=None, mix=None, since=None, queue=True):
    """Check the budget and mix, create a queued run and (``queue``) send it
    to a worker once the transaction commits."""
    config = surfacing_settings(project)
    budget = config.surfacing_budget if budget is None else budget
    try:
        budget = int(budget)
    except (TypeError, ValueError):
        raise SurfacingError(
            f"The budget must be a whole number, not “{budget}”.", "budget"
        ) from None
    if not 1 <= budget <= MAX_BUDGET:
        raise SurfacingError(f"The budget must be between 1 and {MAX_BUDGET:,}.", "budget")
    mix = mix_parse(config.surfacing_mix if mix is None else mix)
    version = production_version(project)
    if version is None:
        raise SurfacingError(
            "The project has no production model: surfacing reads the predictions it logged.",
            field=None,
        )
    now = timezone.now()
    if since is not None and since > now:
        raise SurfacingError("“since” is in the future: no log is that recent.", field="since")
    with transaction.atomic():
        run = SurfacingRun.objects.create(
            project=project,
            model_version=version,
            budget=budget,
            mix=mix,
            since=since or now - DEFAULT_SINCE,
            requested_by=by,
        )
        audit_record(
            actor=by,
            project=project,
            action="surfacing.request",
            target=run,
            after={"budget": budget, "mix": mix, "since": run.since.isoformat()},
        )
        if queue:
            from ..tasks import surfacing_run_task

            transaction.on_commit(lambda: surfacing_run_task.delay(run.pk))
    return run


def surfacing_due(*, now=None) -> list[SurfacingRun]:
    """Runs for every project whose "surface every N hours" is due: no run
    (of any state but failed) was created in the last N hours. The beat task
    calls this hourly."""
    now = now or timezone.now()
    runs = []
    for config in MonitoringSettings.objects.filter(
        surfacing_every_hours__isnull=False
    ).select_related("project"):
        recent = SurfacingRun.objects.filter(
            project=config.project,
            created_at__gt=now - timedelta(hours=config.surfacing_every_hours),
        ).exclude(state=SurfacingRun.State.FAILED)
        if recent.exists() or production_version(config.project) is None:
            continue
        last = (
            SurfacingRun.objects.filter(project=config.project, state=SurfacingRun.State.SUCCEEDED)
            .order_by("-created_at")
            .first()
        )
        # Scheduled runs read the logs since the previous one (a week at most).
        since = max(last.created_at, now - DEFAULT_SINCE) if last else None
        try:
            runs.append(surfacing_request(project=config.project, by=None, since=since))
        except SurfacingError as error:
            logger.warning("Scheduled surfacing of %s not started: %s", config.project, error)
    return runs


# --- the run ----------------------------------------------------------------------------


# A run still "running" this long after it was requested outlived the task's
# hard time limit (16 minutes): its worker died (SIGKILL, OOM) and the broker
# gave the message back. Nothing of it was written (all writes are one
# transaction at the end), so it is run again.
ORPHANED_AFTER = timedelta(minutes=20)


def _claim(run_id) -> bool:
    """Queued → running, once: a re-delivered message finds it taken, unless
    the run was orphaned (see ORPHANED_AFTER). Even two runs at once could not
    surface a log twice: ``_write`` re-checks under the project's row lock."""
    orphaned = Q(state=SurfacingRun.State.RUNNING, created_at__lt=timezone.now() - ORPHANED_AFTER)
    return bool(
        SurfacingRun.objects.filter(
            Q(state=SurfacingRun.State.QUEUED) | orphaned, pk=run_id
        ).update(state=SurfacingRun.State.RUNNING)
    )


def surfacing_run(*, run_id) -> SurfacingRun:
    """Run one queued surfacing run; a run not queued (taken by another
    delivery, or finished) is returned as it is."""
    if not _claim(run_id):
        return SurfacingRun.objects.get(pk=run_id)
    run = SurfacingRun.objects.select_related("project", "model_version", "requested_by").get(
        pk=run_id
    )
    timings = {}
    try:
        timings = _surface(run)
    except Exception as error:  # noqa: BLE001 (any failure is the run's result, with why)
        logger.exception("Surfacing run %s failed", run_id)
        message = (
            f"{type(error).__name__}: {error}"
            if not isinstance(error, SurfacingError)
            else str(error)
        )
        SurfacingRun.objects.filter(pk=run_id).update(
            state=SurfacingRun.State.FAILED, message=message[:255], finished_at=timezone.now()
        )
        audit_record(
            actor=run.requested_by,
            project=run.project,
            action="surfacing.fail",
            target=run,
            after={"message": message[:255]},
        )
    run.refresh_from_db()
    run.timings = timings  # seconds per phase, for the log and the benchmark (not stored)
    return run


def _candidates(run):
    """(ids, request ids, predicted, confidence) of every candidate, as arrays."""
    logs = (
        PredictionLog.objects.filter(
            project=run.project, model_version=run.model_version, timestamp__gte=run.since
        )
        .exclude(Exists(SurfacedSample.objects.filter(prediction_log=OuterRef("pk"))))
        .order_by("id")
        .values_list("id", "request_id", "predicted", "confidence")
    )
    ids, request_ids, predicted, confidence = [], [], [], []
    for pk, request_id, label, conf in logs.iterator(chunk_size=20_000):
        ids.append(pk)
        request_ids.append(request_id)
        predicted.append(label)
        confidence.append(conf)
    return (
        np.asarray(ids, dtype=np.int64),
        np.asarray(request_ids, dtype=object),
        np.asarray(predicted, dtype=object),
        np.asarray(confidence, dtype=float),
    )


def _corrections(project, since, request_ids) -> dict:
    """request id → the end user's class, from the latest feedback per request
    (a later "confirm" withdraws an earlier correction)."""
    latest = {}
    wanted = set(request_ids.tolist())
    rows = (
        GroundTruth.objects.filter(
            project=project, source=GroundTruth.Source.FEEDBACK, created_at__gte=since
        )
        .order_by("created_at", "id")
        .values_list("request_id", "label", "kind")
    )
    for request_id, label, kind in rows.iterator(chunk_size=20_000):
        if request_id in wanted:
            latest[request_id] = label if kind == GroundTruth.Kind.CORRECT else None
    return {k: v for k, v in latest.items() if v is not None}


def _read_pool(ids) -> dict:
    """log id → (data, probabilities)."""
    found = {}
    for start in range(0, len(ids), CHUNK):
        chunk = [int(i) for i in ids[start : start + CHUNK]]
        for pk, data, proba in PredictionLog.objects.filter(pk__in=chunk).values_list(
            "id", "data", "probabilities"
        ):
            found[pk] = (data, proba)
    return found


def _sample_data(project, data) -> dict:
    """What a sample of this project holds: the project's fields (a log may
    carry more), or everything when the project has none declared."""
    names = [f["name"] for f in project.fields or []]
    if not names:
        return dict(data)
    return {name: data[name] for name in names if name in data}


def _existing(project, hashes, external_ids) -> tuple[set, set]:
    have_hash, have_id = set(), set()
    hashes, external_ids = list(hashes), list(external_ids)
    for start in range(0, len(hashes), CHUNK):
        have_hash.update(
            Sample.objects.filter(
                project=project, content_hash__in=hashes[start : start + CHUNK]
            ).values_list("content_hash", flat=True)
        )
    for start in range(0, len(external_ids), CHUNK):
        have_id.update(
            Sample.objects.filter(
                project=project, external_id__in=external_ids[start : start + CHUNK]
            ).values_list("external_id", flat=True)
        )
    return have_hash, have_id


# Novelty representations, per training snapshot, in this process: fitting
# TF-IDF, SVD and k-means on 20,000 rows takes seconds, and scheduled runs
# of one project read the same snapshot until a new model is promoted.
_NOVELTY_CACHE: OrderedDict = OrderedDict()


class _Representation:
    """Numeric features for novelty: TF-IDF + SVD of each text field,
    standardised numbers, one-hot of each category's commonest values."""

    def __init__(self, fields):
        self.fields = fields

    def fit(self, frame: pd.DataFrame):
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.parts = []
        for field in self.fields:
            name, kind = field["name"], field.get("kind", "text")
            if name not in frame:
                continue
            column = frame[name]
            if kind == "number":
                values = pd.to_numeric(column, errors="coerce")
                centre = float(values.median()) if values.notna().any() else 0.0
                scale = float(values.std()) or 1.0
                self.parts.append(("number", name, (centre, scale if np.isfinite(scale) else 1.0)))
            elif kind == "category":
                top = column.astype(str).value_counts().index[:TOP_CATEGORIES].tolist()
                self.parts.append(("category", name, top))
            else:
                text = column.fillna("").astype(str)
                tfidf = TfidfVectorizer(max_features=20_000, sublinear_tf=True, min_df=2)
                try:
                    matrix = tfidf.fit_transform(text)
                except ValueError:  # too few rows for min_df
                    tfidf = TfidfVectorizer(max_features=20_000, sublinear_tf=True)
                    matrix = tfidf.fit_transform(text)
                k = max(1, min(SVD_COMPONENTS, matrix.shape[1] - 1, len(text) - 1))
                svd = TruncatedSVD(n_components=k, random_state=0).fit(matrix)
                self.parts.append(("text", name, (tfidf, svd)))
        if not self.parts:
            raise SurfacingError("novelty needs at least one of the project's fields in the data")
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        for kind, name, state in self.parts:
            column = frame[name] if name in frame else pd.Series([None] * len(frame))
            if kind == "number":
                centre, scale = state
                values = pd.to_numeric(column, errors="coerce").fillna(centre).to_numpy(float)
                blocks.append(((values - centre) / scale)[:, None])
            elif kind == "category":
                values = column.astype(str).to_numpy()
                blocks.append(np.stack([values == v for v in state], axis=1).astype(np.float32))
            else:
                tfidf, svd = state
                blocks.append(svd.transform(tfidf.transform(column.fillna("").astype(str))))
        return np.hstack(blocks).astype(np.float32)


def _novelty_model(project, snapshot):
    key = (snapshot.pk, tuple((f["name"], f.get("kind")) for f in project.fields or []))
    if key in _NOVELTY_CACHE:
        _NOVELTY_CACHE.move_to_end(key)
        return _NOVELTY_CACHE[key]
    from iterations.services.training import snapshot_train_frame

    frame, _labels = snapshot_train_frame(snapshot)
    if len(frame) < 8:
        raise SurfacingError(f"the training snapshot has {len(frame)} rows; novelty needs 8")
    if len(frame) > NOVELTY_FIT_ROWS:
        frame = frame.sample(NOVELTY_FIT_ROWS, random_state=0)
    fields = project.fields or [{"name": c, "kind": "text"} for c in frame.columns]
    representation = _Representation(fields).fit(frame)
    model = strategies.NoveltyModel.fit(representation.transform(frame))
    _NOVELTY_CACHE[key] = (representation, model)
    while len(_NOVELTY_CACHE) > NOVELTY_CACHE_SIZE:
        _NOVELTY_CACHE.popitem(last=False)
    return representation, model


def _pool_positions(confidence, predicted, corrected_mask, seed):
    """Positions (into the candidate arrays) read in full, and every
    candidate's stratified random score."""
    n = len(confidence)
    random_scores = strategies.random_scored(predicted, seed=seed).scores
    keep = np.zeros(n, dtype=bool)
    if n > POOL_UNCERTAIN:
        keep[np.argpartition(confidence, POOL_UNCERTAIN)[:POOL_UNCERTAIN]] = True
    else:
        keep[:] = True
    if n > POOL_RANDOM:
        keep[np.argpartition(-random_scores, POOL_RANDOM)[:POOL_RANDOM]] = True
    keep |= corrected_mask
    return np.flatnonzero(keep), random_scores


def _surface(run):
    started = time.perf_counter()
    timings = {}
    project, version = run.project, run.model_version
    if version is None:
        raise SurfacingError("The run has no model version (it was deleted).")
    classes = list(project.label_classes.order_by("order", "id").values_list("name", flat=True))
    mix = mix_parse(run.mix)
    notes = []

    ids, request_ids, predicted, confidence = _candidates(run)
    timings["candidates_s"] = time.perf_counter() - started
    corrections = _corrections(project, run.since, request_ids) if "feedback" in mix else {}
    corrected_mask = np.fromiter(
        (r in corrections for r in request_ids), dtype=bool, count=len(request_ids)
    )
    pool, random_all = _pool_positions(confidence, predicted, corrected_mask, seed=run.pk)
    pool_ids = ids[pool]
    read = _read_pool(pool_ids)
    timings["read_pool_s"] = time.perf_counter() - started

    # De-duplicate by content, as labelling does: the project's fields, hashed.
    datas = [_sample_data(project, read[int(i)][0]) for i in pool_ids]
    hashes = [content_hash(d) for d in datas]
    external_ids = [f"log-{r}" for r in request_ids[pool]]
    have_hash, have_id = _existing(project, hashes, external_ids)
    exclude, seen = set(), set()
    for log_id, digest, external_id in zip(pool_ids.tolist(), hashes, external_ids, strict=True):
        if digest in have_hash or external_id in have_id or digest in seen:
            exclude.add(log_id)
        seen.add(digest)

    scored = {}
    if len(pool):
        proba_frame = pd.DataFrame.from_records(
            [read[int(i)][1] for i in pool_ids], columns=classes
        ).fillna(0.0)
        proba = proba_frame.to_numpy(float)
        if "uncertainty" in mix:
            scored["uncertainty"] = strategies.uncertainty(proba, classes)
        if "random" in mix:
            scores = random_all[pool]
            reasons = [
                f"random slice (stratum: predicted {p}) for an unbiased estimate"
                for p in predicted[pool]
            ]
            scored["random"] = strategies.Scored("random", scores, reasons)
        if "feedback" in mix:
            corrected = [corrections.get(r) for r in request_ids[pool]]
            scored["feedback"] = strategies.feedback(proba, classes, predicted[pool], corrected)
        frame = pd.DataFrame.from_records(datas)
        if "disagreement" in mix:
            try:
                from iterations.services.artifacts import ensemble_load

                ensemble = ensemble_load(version)
                if len(ensemble.submodels) < 2:
                    raise SurfacingError("the production model has a single sub-model")
                parts = ensemble.submodel_proba(frame)
                scored["disagreement"] = strategies.disagreement(parts, list(ensemble.classes_))
            except Exception as error:  # noqa: BLE001 (the other strategies still run)
                notes.append(f"disagreement skipped: {error}")
            timings["disagreement_s"] = time.perf_counter() - started
        if "novelty" in mix:
            try:
                representation, model = _novelty_model(project, version.snapshot)
                scored["novelty"] = strategies.novelty(model, representation.transform(frame))
            except Exception as error:  # noqa: BLE001 (the other strategies still run)
                notes.append(f"novelty skipped: {error}")
            timings["novelty_s"] = time.perf_counter() - started

    picks = strategies.surface(pool_ids.tolist(), scored, run.budget, mix=mix, exclude=exclude)
    timings["surface_s"] = time.perf_counter() - started
    position = {int(log_id): k for k, log_id in enumerate(pool_ids.tolist())}
    _write(run, picks, position, datas, hashes, external_ids, pool_ids, len(ids), notes)
    timings["total_s"] = time.perf_counter() - started
    timings = {k: round(v, 3) for k, v in timings.items()}
    timings["pool"] = len(pool_ids)
    logger.info("Surfacing run %s: %s", run.pk, timings)
    return timings


def _write(run, picks, position, datas, hashes, external_ids, pool_ids, n_candidates, notes):
    project = run.project
    counts = {}
    with transaction.atomic():
        # One surfacing write per project at a time: the checks below then
        # see every sample an earlier run created.
        Project.objects.select_for_update().filter(pk=project.pk).values_list("id").first()
        chosen = list(picks)
        have_hash, have_id = _existing(
            project,
            [hashes[position[p.id]] for p in chosen],
            [external_ids[position[p.id]] for p in chosen],
        )
        already = set(
            SurfacedSample.objects.filter(prediction_log_id__in=[p.id for p in chosen]).values_list(
                "prediction_log_id", flat=True
            )
        )
        chosen = [
            p
            for p in chosen
            if p.id not in already
            and hashes[position[p.id]] not in have_hash
            and external_ids[position[p.id]] not in have_id
        ]
        samples = Sample.objects.bulk_create(
            [
                Sample(
                    project=project,
                    external_id=external_ids[position[p.id]],
                    data=datas[position[p.id]],
                    content_hash=hashes[position[p.id]],
                    source=Sample.Source.MONITORING,
                    split=_split(p.strategy, external_ids[position[p.id]], project),
                )
                for p in chosen
            ],
            batch_size=1000,
        )
        # The samples are new, so none has an open queue item yet: the items
        # are written in one statement, each with its own priority and reason.
        QueueItem.objects.bulk_create(
            [
                QueueItem(
                    project=project,
                    sample=sample,
                    priority=p.priority,
                    strategy=p.strategy,
                    score=p.score,
                    reason=p.reason,
                )
                for p, sample in zip(chosen, samples, strict=True)
            ],
            batch_size=1000,
        )
        SurfacedSample.objects.bulk_create(
            [
                SurfacedSample(
                    run=run,
                    sample=sample,
                    prediction_log_id=p.id,
                    strategy=p.strategy,
                    score=p.score,
                    reason=p.reason,
                )
                for p, sample in zip(chosen, samples, strict=True)
            ],
            batch_size=1000,
        )
        for p in chosen:
            counts[p.strategy] = counts.get(p.strategy, 0) + 1
        message = f"{len(chosen)} of {n_candidates:,} candidate logs surfaced"
        if len(chosen) < run.budget:
            message += f" (budget {run.budget}: fewer new candidates than that)"
        if notes:
            message += "; " + "; ".join(notes)
        SurfacingRun.objects.filter(pk=run.pk).update(
            state=SurfacingRun.State.SUCCEEDED,
            counts=counts,
            candidates=n_candidates,
            message=message[:255],
            finished_at=timezone.now(),
        )
        audit_record(
            actor=run.requested_by,
            project=project,
            action="surfacing.run",
            target=run,
            after={"counts": counts, "candidates": n_candidates, "pool": len(pool_ids)},
        )


def _split(strategy, external_id, project):
    """Only the random slice may enter the holdout (by the usual hash): the
    other strategies pick what the model finds hard or unusual, and a holdout
    filled with those would make every regression report look worse than
    production really is, and no longer comparable from one report to the next."""
    if strategy != "random":
        return Sample.Split.TRAIN
    return split_for(external_id, project.holdout_fraction)
