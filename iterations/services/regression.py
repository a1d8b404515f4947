"""The regression test: the candidate, the production model and the last few
versions, all re-scored on the *current* holdout, so every comparison is fair.

What it writes is a ``RegressionReport`` whose payload follows the contract
in docs (schema 1): per-version metrics, slices, value and latency; for
candidate vs production the paired bootstrap intervals, per-class recall
deltas, McNemar's exact test and the flipped samples; and the project's
gates. The report is immutable and hashed; running the test again on
identical evidence returns the report already written.

Gates are configured in ``ModelSettings.gates`` as a JSON list, one object
per gate (``gates_parse`` checks it and says what is wrong)::

    [{"gate": "value_not_worse", "margin": 0},          # CI low of Δ value/1,000 ≥ −margin
     {"gate": "max_recall_drop", "points": 5},          # no class recall down > 5 points
     {"gate": "max_latency_ms_per_1000", "ms": 50},     # candidate latency ≤ 50 ms / 1,000
     {"gate": "accuracy_not_worse", "tolerance": 0.01}, # accuracy down ≤ 0.01 (one point)
     {"gate": "macro_f1_not_worse", "tolerance": 0.01}]

A gate not listed is off. An empty list means ml.gates' default GateConfig,
except that its value gate is left out when no gain matrix is set (a
project that never set one did not ask for a value gate; one that lists
``value_not_worse`` without a gain matrix gets a failed gate saying so).
"""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import pandas as pd
from django.db import IntegrityError, transaction

from leanml_site.audit import audit_record
from ml.evaluation import evaluate, gain_array, latency_per_1000, slice_summary, value_per_1000
from ml.gates import GateConfig, GateReport, GateResult, evaluate_gates
from ml.hashing import content_hash
from ml.stats import flipped_samples, mcnemar_exact, paired_comparison
from ml.submodels import align_proba

from ..models import ModelSettings, ModelVersion, RegressionReport
from .artifacts import ensemble_load
from .snapshots import usable_samples

logger = logging.getLogger(__name__)

SCHEMA = 1
# Versions that finished training: they have artifacts and can be scored.
SCORED_STATES = (
    ModelVersion.Status.CANDIDATE,
    ModelVersion.Status.APPROVED,
    ModelVersion.Status.REJECTED,
    ModelVersion.Status.CANARY,
    ModelVersion.Status.PRODUCTION,
    ModelVersion.Status.RETIRED,
)
N_RESAMPLES = 2000
CONFIDENCE = 0.95
FLIPS_LISTED = 200
# Latency is timed once (no repeats) on the first rows of the holdout, right
# after the whole holdout was scored (which is the warm-up): a number for the
# report and the latency gate, cheap enough to take for five versions.
LATENCY_ROWS = 2000
RUN_SOFT_TIME_LIMIT = 10 * 60
RUN_TIME_LIMIT = RUN_SOFT_TIME_LIMIT + 60

GATE_KEYS = {
    "value_not_worse": ("margin", "value_margin"),
    "max_recall_drop": ("points", "max_recall_drop_points"),
    "max_latency_ms_per_1000": ("ms", "max_latency_ms_per_1000"),
    "accuracy_not_worse": ("tolerance", "accuracy_tolerance"),
    "macro_f1_not_worse": ("tolerance", "macro_f1_tolerance"),
}
GATE_EXAMPLE = '[{"gate": "max_recall_drop", "points": 5}]'


class RegressionError(ValueError):
    """The regression test cannot run; the message says why, for people."""


class GatesError(ValueError):
    """The gates configuration is not valid; the message names the gate and key."""


# --- gates -----------------------------------------------------------------------------


def gates_parse(value) -> GateConfig:
    """Check a gates configuration (a list, or its JSON text) and return the
    GateConfig it means. Raises GatesError (a ValueError) naming the gate
    and key at fault. An empty list (or empty text) is the default config."""
    if isinstance(value, str):
        if not value.strip():
            return GateConfig()
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise GatesError(f"Gates must be JSON, like {GATE_EXAMPLE}: {error}.") from None
    if value is None:
        return GateConfig()
    if not isinstance(value, list):
        raise GatesError(
            f"Gates must be a list of objects, like {GATE_EXAMPLE}; got {type(value).__name__}."
        )
    if not value:
        return GateConfig()
    chosen = {}
    for position, entry in enumerate(value, start=1):
        if not isinstance(entry, dict):
            raise GatesError(f"Gate {position} must be an object like {GATE_EXAMPLE}.")
        name = entry.get("gate")
        if name not in GATE_KEYS:
            raise GatesError(
                f"Gate {position}: unknown gate {name!r}; known gates: {', '.join(GATE_KEYS)}."
            )
        key, attribute = GATE_KEYS[name]
        extra = sorted(set(entry) - {"gate", key})
        if extra:
            raise GatesError(
                f"Gate {name!r}: unknown key(s) {', '.join(map(repr, extra))}; "
                f"it takes {key!r} only."
            )
        if key not in entry:
            raise GatesError(f"Gate {name!r}: give its {key!r}.")
        number = entry[key]
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise GatesError(f"Gate {name!r}: {key!r} must be a number, got {number!r}.")
        if not math.isfinite(number) or number < 0:
            raise GatesError(
                f"Gate {name!r}: {key!r} must be a finite number of at least 0, got {number!r}."
            )
        if key == "tolerance" and number > 1:
            raise GatesError(
                f"Gate {name!r}: {key!r} is a fraction (0.01 = one point), got {number!r}."
            )
        if attribute in chosen:
            raise GatesError(f"Gate {name!r} is listed twice; keep one.")
        chosen[attribute] = float(number)
    off = {attribute: None for _, attribute in GATE_KEYS.values()}
    return GateConfig(**{**off, **chosen})


def _gate_config(model_settings, has_value) -> GateConfig:
    try:
        config = gates_parse(model_settings.gates)
    except GatesError as error:
        raise RegressionError(f"The project's gates are not valid: {error}") from None
    if not model_settings.gates and not has_value:
        config = GateConfig(**{**config.__dict__, "value_margin": None})
    return config


# --- holdout ---------------------------------------------------------------------------


class Holdout:
    """The current holdout: usable labelled samples of split holdout, with
    each sample's current data (the same selection rules as snapshots)."""

    def __init__(self, project):
        rows = list(
            usable_samples(project)
            .filter(split="holdout")
            .order_by("external_id")
            .values_list("id", "external_id", "revision", "consensus_label__name", "data")
        )
        if not rows:
            raise RegressionError(
                f"{project} has no holdout samples with a settled label: there is nothing "
                "to test on. Label some holdout samples first."
            )
        self.sample_ids = [r[0] for r in rows]
        self.external_ids = [r[1] for r in rows]
        self.labels = np.asarray([r[3] for r in rows], dtype=object)
        self.frame = pd.DataFrame.from_records(
            [r[4] for r in rows], index=pd.Index(self.external_ids, name="external_id")
        )
        self.hash = content_hash([[r[1], r[2], r[3]] for r in rows])

    def __len__(self):
        return len(self.labels)


# --- scoring ---------------------------------------------------------------------------


class _Scorer:
    """Loads and scores versions on one holdout. A sub-model reused by
    several versions (same artifact sha256) is loaded and predicted once."""

    def __init__(self, holdout, classes):
        self.holdout = holdout
        self.classes = classes
        self.loaded = {}
        self.parts = {}
        self.load_s = 0.0
        self.score_s = 0.0

    def load(self, version):
        start = time.perf_counter()
        try:
            return ensemble_load(version, loaded=self.loaded)
        finally:
            self.load_s += time.perf_counter() - start

    def proba(self, version, ensemble) -> np.ndarray:
        start = time.perf_counter()
        frame = self.holdout.frame
        sha = {a.key: a.sha256 for a in version.artifacts.all()}
        parts = {}
        for model in ensemble.submodels:
            model.check_fields(frame)
            if sha[model.key] not in self.parts:
                self.parts[sha[model.key]] = (model.predict_proba(frame), model.classes_)
            raw, model_classes = self.parts[sha[model.key]]
            parts[model.key] = align_proba(raw, model_classes, ensemble.classes_)
        proba = align_proba(ensemble.combine(parts, len(frame)), ensemble.classes_, self.classes)
        self.score_s += time.perf_counter() - start
        return proba


def _versions_to_score(candidate, compare_last):
    project = candidate.project
    production = (
        project.model_versions.filter(status=ModelVersion.Status.PRODUCTION)
        .exclude(pk=candidate.pk)
        .first()
    )
    earlier = list(
        project.model_versions.filter(
            status__in=SCORED_STATES, number__lt=candidate.number, artifacts__isnull=False
        )
        .exclude(pk__in=[candidate.pk] + ([production.pk] if production else []))
        .distinct()
        .order_by("-number")[:compare_last]
    )
    return production, earlier


def _metrics_dict(metrics) -> dict:
    return {
        "n": metrics.n,
        "accuracy": metrics.accuracy,
        "macro_f1": metrics.macro_f1,
        "log_loss": metrics.log_loss,
        "ece": metrics.ece,
        "per_class": [
            {
                "label": c.label,
                "precision": c.precision,
                "recall": c.recall,
                "f1": c.f1,
                "support": c.support,
            }
            for c in metrics.per_class
        ],
        "calibration": [
            {
                "lower": b.lower,
                "upper": b.upper,
                "count": b.count,
                "confidence": b.confidence,
                "accuracy": b.accuracy,
            }
            for b in metrics.calibration
        ],
        "confusion": metrics.confusion,
    }


def _plain(value):
    """Slice values come from sample data: keep JSON types, name the rest."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _plain(value.item())
    return str(value)


def _no_negative_zero(value):
    if isinstance(value, float):
        return 0.0 if value == 0 else value
    if isinstance(value, dict):
        return {k: _no_negative_zero(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_negative_zero(v) for v in value]
    return value


def _entry(version, role):
    return {
        "number": version.number,
        "role": role,
        "status": version.status,
        "created_at": version.created_at.isoformat(),
        "metrics": None,
        "slices": None,
        "value_per_1000": None,
        "beats_baseline": None,
        "latency_ms_per_1000": None,
        "artifact_bytes": sum(a.size_bytes for a in version.artifacts.all()),
        "error": None,
    }


# --- the test --------------------------------------------------------------------------


def regression_run(*, version_id, by=None) -> RegressionReport:
    """Run the regression test of model version ``version_id`` and write its
    report (or return the report already written on identical evidence).

    Raises RegressionError with a sentence for people when the test cannot
    run: a version that is not trained, an empty holdout, a holdout class the
    candidate never saw, settings that do not fit the data.
    """
    started = time.perf_counter()
    candidate = (
        ModelVersion.objects.select_related("project")
        .prefetch_related("artifacts")
        .filter(pk=version_id)
        .first()
    )
    if candidate is None:
        raise RegressionError(f"There is no model version with id {version_id}.")
    if candidate.status not in SCORED_STATES:
        raise RegressionError(
            f"Version {candidate.number} is {candidate.get_status_display().lower()}: only a "
            "trained version (a candidate or later) can be tested."
        )
    project = candidate.project
    model_settings = ModelSettings.objects.filter(project=project).first() or ModelSettings(
        project=project
    )

    start = time.perf_counter()
    holdout = Holdout(project)
    production, earlier = _versions_to_score(candidate, model_settings.compare_last)
    load_s = time.perf_counter() - start

    scorer = _Scorer(holdout, classes=None)
    try:
        candidate_model = scorer.load(candidate)
    except Exception as error:
        raise RegressionError(
            f"Version {candidate.number} could not be loaded for testing: {error}"
        ) from error
    classes = [c for c in candidate_model.classes_.tolist()]
    scorer.classes = classes
    unseen = sorted(set(holdout.labels.tolist()) - set(classes), key=str)
    if unseen:
        raise RegressionError(
            f"The holdout has samples of class(es) {unseen} that version {candidate.number} "
            f"was never trained on (it knows {classes}); train a new version first."
        )
    gains = model_settings.gain_matrix or None
    if gains is not None:
        try:
            gain_array(gains, classes)
        except ValueError as error:
            raise RegressionError(f"The project's gain matrix does not fit: {error}.") from None
    for field in model_settings.slice_fields or []:
        if field not in holdout.frame.columns:
            raise RegressionError(
                f"Slice field {field!r} is in no holdout sample's data; fix the slice fields "
                "in the model settings."
            )
    gate_config = _gate_config(model_settings, has_value=gains is not None)

    scored = {}  # version pk -> (proba, predictions, Metrics, latency)
    entries = []
    slices_s = 0.0
    plan = [(candidate, "candidate")]
    plan += [(production, "production")] if production else []
    plan += [(v, "earlier") for v in earlier]
    for version, role in plan:
        entry = _entry(version, role)
        entries.append(entry)
        try:
            model = candidate_model if version is candidate else scorer.load(version)
            proba = scorer.proba(version, model)
            latency = latency_per_1000(
                model.predict_proba,
                holdout.frame.iloc[:LATENCY_ROWS],
                repeats=1,
                warmup=False,
            )
        except Exception as error:
            if version is candidate:
                raise RegressionError(
                    f"Version {candidate.number} could not be scored on the holdout: {error}"
                ) from error
            logger.warning("regression test: %s could not be re-scored: %s", version, error)
            entry["error"] = f"could not be re-scored: {type(error).__name__}: {error}"
            continue
        start = time.perf_counter()
        predictions = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
        metrics = evaluate(holdout.labels, proba, classes)
        entry["metrics"] = _metrics_dict(metrics)
        if gains is not None:
            value = value_per_1000(holdout.labels, predictions, gains, classes)
            entry["value_per_1000"] = value
            if model_settings.useful_baseline is not None:
                entry["beats_baseline"] = value > model_settings.useful_baseline
        entry["latency_ms_per_1000"] = latency.ms_per_1000
        scorer.score_s += time.perf_counter() - start

        start = time.perf_counter()
        entry["slices"] = {
            column: [
                {"value": _plain(value), "n": n, "accuracy": accuracy, "macro_f1": macro_f1}
                for value, n, accuracy, macro_f1 in slice_summary(
                    holdout.labels, predictions, classes, holdout.frame[column]
                )
            ]
            for column in model_settings.slice_fields or []
        }
        slices_s += time.perf_counter() - start
        scored[version.pk] = (proba, predictions, metrics, latency.ms_per_1000)

    start = time.perf_counter()
    comparison, gate_report = _compare(
        candidate, production, scored, entries, holdout, classes, gains, gate_config
    )
    bootstrap_s = time.perf_counter() - start

    payload = {
        "schema": SCHEMA,
        "classes": classes,
        "holdout": {"n": len(holdout), "hash": holdout.hash},
        "candidate": candidate.number,
        "production": production.number if production else None,
        "value": (
            {"unit": model_settings.value_unit, "baseline": model_settings.useful_baseline}
            if gains is not None
            else None
        ),
        "versions": entries,
        "comparison": comparison,
        "gates": {
            "passed": gate_report.passed,
            "results": [
                {
                    "name": r.name,
                    "passed": r.passed,
                    "value": r.value,
                    "threshold": r.threshold,
                    "sentence": r.sentence,
                }
                for r in gate_report.results
            ],
        },
    }
    # Plain JSON types, no NaN, and no -0.0: PostgreSQL's jsonb stores numbers
    # as numeric, which has no negative zero, so a -0.0 (a threshold of
    # "−margin" with margin 0) would come back as 0 and the stored payload
    # would no longer match its own content hash.
    payload = _no_negative_zero(json.loads(json.dumps(payload, allow_nan=False)))
    payload["timings"] = {
        "load_s": round(load_s + scorer.load_s, 4),
        "score_s": round(scorer.score_s, 4),
        "bootstrap_s": round(bootstrap_s, 4),
        "slices_s": round(slices_s, 4),
        "total_s": round(time.perf_counter() - started, 4),
    }
    compared = [v for v, _ in plan if v.pk in scored]
    return _write(candidate, production, payload, holdout.hash, compared, by)


def _compare(candidate, production, scored, entries, holdout, classes, gains, gate_config):
    """(comparison block, GateReport) of candidate vs production."""
    candidate_proba, candidate_pred, candidate_metrics, latency = scored[candidate.pk]
    if production is None:
        sentence = (
            f"First model: no production model to compare version {candidate.number} with."
            if candidate.status != ModelVersion.Status.PRODUCTION
            else f"Version {candidate.number} is the production model: nothing to compare with."
        )
        results = [GateResult("first_model", True, None, None, sentence)]
        if gate_config.max_latency_ms_per_1000 is not None:
            # Latency needs no baseline: it holds for a first model too.
            results += evaluate_gates(
                GateConfig(
                    value_margin=None,
                    max_recall_drop_points=None,
                    max_latency_ms_per_1000=gate_config.max_latency_ms_per_1000,
                    accuracy_tolerance=None,
                    macro_f1_tolerance=None,
                ),
                production=candidate_metrics,
                candidate=candidate_metrics,
                latency_ms_per_1000=latency,
            ).results
        return None, GateReport(results)
    if production.pk not in scored:
        error = next(e["error"] for e in entries if e["number"] == production.number)
        return None, GateReport(
            [
                GateResult(
                    "production_scored",
                    False,
                    None,
                    None,
                    f"The production model (version {production.number}) {error}; "
                    "the candidate cannot be compared with it.",
                )
            ]
        )
    production_proba, production_pred, production_metrics, _ = scored[production.pk]
    metrics = ["accuracy", "macro_f1"] + (["value_per_1000"] if gains is not None else [])
    paired = paired_comparison(
        holdout.labels,
        production_pred,
        candidate_pred,
        classes,
        metrics=metrics,
        gain_matrix=gains,
        n_resamples=N_RESAMPLES,
        confidence=CONFIDENCE,
        seed=candidate.seed,
    )
    mcnemar = mcnemar_exact(holdout.labels, production_pred, candidate_pred)
    flips = flipped_samples(holdout.labels, production_pred, candidate_pred)
    production_confidence = production_proba.max(axis=1)
    candidate_confidence = candidate_proba.max(axis=1)

    def listed(positions):
        return [
            {
                "sample_id": holdout.sample_ids[i],
                "external_id": holdout.external_ids[i],
                "true": holdout.labels[i],
                "before": production_pred[i],
                "after": candidate_pred[i],
                "confidence_before": float(production_confidence[i]),
                "confidence_after": float(candidate_confidence[i]),
            }
            for i in positions[:FLIPS_LISTED]
        ]

    comparison = {
        "against": production.number,
        "bootstrap": {
            "n_resamples": N_RESAMPLES,
            "seed": candidate.seed,
            "confidence": CONFIDENCE,
            "metrics": {
                name: {
                    "a": ci.a,
                    "b": ci.b,
                    "difference": ci.difference,
                    "low": ci.low,
                    "high": ci.high,
                }
                for name, ci in paired.metrics.items()
            },
        },
        "per_class": [
            {
                "label": r.label,
                "recall_a": r.a,
                "recall_b": r.b,
                "difference": r.difference,
                "low": r.low,
                "high": r.high,
            }
            for r in paired.recall
        ],
        "mcnemar": {"b": mcnemar.b, "c": mcnemar.c, "n": mcnemar.n, "p_value": mcnemar.p_value},
        "flips": {
            "fixed_count": len(flips.fixed),
            "broken_count": len(flips.broken),
            "fixed": listed(flips.fixed),
            "broken": listed(flips.broken),
        },
    }
    gate_report = evaluate_gates(
        gate_config,
        production=production_metrics,
        candidate=candidate_metrics,
        value_ci=paired.metrics.get("value_per_1000"),
        latency_ms_per_1000=latency,
    )
    return comparison, gate_report


def _evidence(payload) -> str:
    """The payload's hash without what varies from run to run on the same
    evidence: timings and the latency measurement (only whether the latency
    gate passed counts). Two runs with equal evidence share one report."""
    data = {k: v for k, v in payload.items() if k != "timings"}
    data["versions"] = [{**v, "latency_ms_per_1000": None} for v in data["versions"]]
    data["gates"] = {
        **data["gates"],
        "results": [
            {"name": r["name"], "passed": r["passed"]} if r["name"] == "latency_under" else r
            for r in data["gates"]["results"]
        ],
    }
    return content_hash(data)


def _write(candidate, production, payload, holdout_hash, compared, by) -> RegressionReport:
    from .iterations import iteration_report_ready  # imports training, which imports tasks

    digest = content_hash({k: v for k, v in payload.items() if k != "timings"})
    evidence = _evidence(payload)
    with transaction.atomic():
        # One writer per version at a time: the automatic run after training
        # and a manual re-run must not both write the same evidence.
        ModelVersion.objects.select_for_update().filter(pk=candidate.pk).first()
        existing = next(
            (
                report
                for report in RegressionReport.objects.filter(
                    candidate=candidate, holdout_hash=holdout_hash
                ).order_by("-created_at", "-pk")
                if _evidence(report.payload) == evidence
            ),
            None,
        )
        created = existing is None
        if created:
            try:
                with transaction.atomic():
                    report = RegressionReport.objects.create(
                        project=candidate.project,
                        candidate=candidate,
                        baseline=production,
                        holdout_hash=holdout_hash,
                        payload=payload,
                        passed=payload["gates"]["passed"],
                        content_hash=digest,
                    )
                    report.compared.set(compared)
            except IntegrityError:
                report, created = RegressionReport.objects.get(content_hash=digest), False
        else:
            report = existing
        audit_record(
            actor=by,
            action="regression.report",
            project=candidate.project,
            target=report,
            after={
                "version": candidate.number,
                "production": production.number if production else None,
                "passed": report.passed,
                "content_hash": report.content_hash,
                "holdout": payload["holdout"]["n"],
                "new": created,
            },
        )
        iteration_report_ready(report)
    return report


def regression_run_recorded(*, version_id, by=None) -> RegressionReport | None:
    """``regression_run`` for the worker: a test that cannot run (settings
    that do not fit the data, say) is recorded in the audit log as
    ``regression.failed`` with its sentence, where the iteration page can
    show it, and None is returned; running it again would fail the same way,
    so nothing is retried until someone fixes the cause and re-runs it."""
    try:
        return regression_run(version_id=version_id, by=by)
    except RegressionError as error:
        logger.warning("regression test of version id %s: %s", version_id, error)
        version = ModelVersion.objects.select_related("project").filter(pk=version_id).first()
        if version is not None:
            audit_record(
                actor=by,
                action="regression.failed",
                project=version.project,
                target=version,
                after={"version": version.number, "message": str(error)},
            )
        return None


# --- queueing --------------------------------------------------------------------------


def regression_request(*, version, by) -> None:
    """Queue the regression test of ``version`` (the page, API and command
    call this). Raises RegressionError when the version cannot be tested or
    the task queue is unreachable: nothing is queued then, and the caller
    shows the message."""
    if version.status not in SCORED_STATES:
        raise RegressionError(
            f"Version {version.number} is {version.get_status_display().lower()}: only a "
            "trained version (a candidate or later) can be tested."
        )
    try:
        _send(version.pk, by.pk if by is not None else None)
    except Exception as error:
        logger.exception("could not queue the regression test of %s", version)
        raise RegressionError(
            f"The task queue is unreachable ({type(error).__name__}: {error}); the regression "
            "test was not queued. Try again in a moment."
        ) from None
    audit_record(
        actor=by,
        action="regression.request",
        project=version.project,
        target=version,
        after={"version": version.number},
    )


def regression_queue_after_training(version_id) -> None:
    """on_commit hook of a successful training: queue the test. A broker
    that is down here must not undo the training, so it is logged; the
    version stays a candidate and its page offers to run the test again."""
    try:
        _send(version_id, None)
    except Exception:
        logger.exception("could not queue the regression test of version id %s", version_id)


def _send(version_id, by_id):
    from ..tasks import regression_run_task

    regression_run_task.delay(version_id, by_id)
