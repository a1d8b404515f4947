"""Regression reports for page tests, built like the real report writer
builds them: metrics, bootstrap, McNemar, flips and gates computed by ``ml``
on seeded predictions, laid out in the payload contract (schema 1)."""

from dataclasses import asdict

import numpy as np

from iterations.models import RegressionReport
from ml.evaluation import evaluate, value_per_1000
from ml.gates import GateConfig, evaluate_gates
from ml.hashing import content_hash
from ml.stats import flipped_samples, mcnemar_exact, paired_bootstrap


def _proba(y, classes, accuracy, rng):
    """Probabilities whose argmax is right about ``accuracy`` of the time."""
    k = len(classes)
    index = np.array([classes.index(v) for v in y])
    right = rng.random(len(y)) < accuracy
    pred = np.where(right, index, (index + rng.integers(1, k, len(y))) % k)
    proba = rng.random((len(y), k)) * 0.3
    proba[np.arange(len(y)), pred] += 0.6 + rng.random(len(y)) * 0.4
    return proba / proba.sum(axis=1, keepdims=True)


def build_payload(
    *,
    classes,
    candidate,
    production=None,
    earlier=(),
    samples=None,
    n=400,
    accuracies=(0.86, 0.8, 0.75),
    gain_matrix=None,
    baseline=None,
    unit="EUR",
    gates=None,
    slice_values=("food", "drinks"),
    seed=0,
):
    """A schema-1 payload. ``candidate``/``production``/``earlier`` are
    ModelVersion rows; ``samples`` (optional) a list of Sample rows whose ids
    and external ids the flipped samples carry."""
    rng = np.random.default_rng(seed)
    classes = list(classes)
    y = np.array([classes[i % len(classes)] for i in range(n)], dtype=object)
    ids = [(s.pk, s.external_id) for s in samples] if samples else []
    ids = [ids[i % len(ids)] if ids else (None, f"h{i}") for i in range(n)]
    slices = np.array([slice_values[i % len(slice_values)] for i in range(n)], dtype=object)
    roles = [(candidate, "candidate")]
    if production is not None:
        roles.append((production, "production"))
    roles += [(v, "earlier") for v in earlier]
    probas, versions = {}, []
    for (version, role), accuracy in zip(roles, list(accuracies) + [0.7] * 10, strict=False):
        proba = _proba(y, classes, accuracy, rng)
        probas[role if role != "earlier" else version.number] = proba
        metrics = evaluate(y, proba, classes, n_bins=5)
        pred = np.array(classes, dtype=object)[proba.argmax(axis=1)]
        value = value_per_1000(y, pred, gain_matrix, classes) if gain_matrix else None
        slice_rows = {}
        for field in ("product",):
            rows = []
            for v in slice_values:
                mask = slices == v
                m = evaluate(y[mask], proba[mask], classes, n_bins=5)
                rows.append(
                    {
                        "value": v,
                        "n": int(mask.sum()),
                        "accuracy": m.accuracy,
                        "macro_f1": m.macro_f1,
                    }
                )
            slice_rows[field] = rows
        versions.append(
            {
                "number": version.number,
                "role": role,
                "status": version.status,
                "created_at": version.created_at.isoformat(),
                "metrics": {
                    "n": metrics.n,
                    "accuracy": metrics.accuracy,
                    "macro_f1": metrics.macro_f1,
                    "log_loss": metrics.log_loss,
                    "ece": metrics.ece,
                    "per_class": [asdict(c) for c in metrics.per_class],
                    "calibration": [asdict(b) for b in metrics.calibration],
                    "confusion": metrics.confusion,
                },
                "slices": slice_rows,
                "value_per_1000": value,
                "beats_baseline": None if value is None or baseline is None else value > baseline,
                "latency_ms_per_1000": 12.5,
                "artifact_bytes": 123_456,
                "error": None,
                "_metrics": metrics,
                "_pred": pred,
            }
        )
    comparison = None
    gate_results = {"passed": True, "results": []}
    if production is not None:
        cand, prod = versions[0], versions[1]
        metric_names = ["accuracy", "macro_f1"] + (["value_per_1000"] if gain_matrix else [])
        cis = paired_bootstrap(
            y,
            prod["_pred"],
            cand["_pred"],
            classes,
            metrics=metric_names,
            gain_matrix=gain_matrix,
            n_resamples=200,
            seed=0,
        )
        mc = mcnemar_exact(y, prod["_pred"], cand["_pred"])
        flips = flipped_samples(y, prod["_pred"], cand["_pred"])

        def flip(i):
            sample_id, external_id = ids[i]
            return {
                "sample_id": sample_id,
                "external_id": external_id,
                "true": y[i],
                "before": prod["_pred"][i],
                "after": cand["_pred"][i],
                "confidence_before": float(probas["production"][i].max()),
                "confidence_after": float(probas["candidate"][i].max()),
            }

        per_class = []
        for label in classes:
            a, b = prod["_metrics"].recall(label), cand["_metrics"].recall(label)
            per_class.append(
                {
                    "label": label,
                    "recall_a": a,
                    "recall_b": b,
                    "difference": b - a,
                    "low": b - a - 0.04,
                    "high": b - a + 0.04,
                }
            )
        comparison = {
            "against": production.number,
            "bootstrap": {
                "n_resamples": 200,
                "seed": 0,
                "confidence": 0.95,
                "metrics": {
                    name: {
                        "a": ci.a,
                        "b": ci.b,
                        "difference": ci.difference,
                        "low": ci.low,
                        "high": ci.high,
                    }
                    for name, ci in cis.items()
                },
            },
            "per_class": per_class,
            "mcnemar": asdict(mc),
            "flips": {
                "fixed_count": len(flips.fixed),
                "broken_count": len(flips.broken),
                "fixed": [flip(i) for i in flips.fixed[:200]],
                "broken": [flip(i) for i in flips.broken[:200]],
            },
        }
        report = evaluate_gates(
            gates or GateConfig(value_margin=0.0 if gain_matrix else None),
            production=prod["_metrics"],
            candidate=cand["_metrics"],
            value_ci=cis.get("value_per_1000"),
            latency_ms_per_1000=12.5,
        )
        gate_results = {
            "passed": report.passed,
            "results": [
                {
                    "name": r.name,
                    "passed": r.passed,
                    "value": r.value,
                    "threshold": r.threshold,
                    "sentence": r.sentence,
                }
                for r in report.results
            ],
        }
    for v in versions:
        del v["_metrics"], v["_pred"]
    return {
        "schema": 1,
        "classes": classes,
        "holdout": {"n": n, "hash": "f" * 64},
        "candidate": candidate.number,
        "production": production.number if production else None,
        "value": {"unit": unit, "baseline": baseline} if gain_matrix else None,
        "versions": versions,
        "comparison": comparison,
        "gates": gate_results,
        "timings": {
            "load_s": 0.1,
            "score_s": 0.2,
            "bootstrap_s": 0.3,
            "slices_s": 0.1,
            "total_s": 0.7,
        },
    }


def make_report(*, project, candidate, production=None, earlier=(), payload=None, **kwargs):
    """A RegressionReport row as the report writer stores it."""
    payload = payload or build_payload(
        classes=list(
            project.label_classes.order_by("order", "name").values_list("name", flat=True)
        ),
        candidate=candidate,
        production=production,
        earlier=earlier,
        **kwargs,
    )
    payload = _plain(payload)
    report = RegressionReport.objects.create(
        project=project,
        candidate=candidate,
        baseline=production,
        holdout_hash=payload["holdout"]["hash"],
        payload=payload,
        passed=payload["gates"]["passed"],
        content_hash=content_hash({k: v for k, v in payload.items() if k != "timings"}),
    )
    report.compared.set([v for v in (candidate, production, *earlier) if v is not None])
    return report


def _plain(value):
    """numpy scalars to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
