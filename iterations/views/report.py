"""A regression report's payload (schema 1) made ready for the page.

The payload comes from the database and may be from an older or partly
failed run: every key is read defensively, numbers are formatted here (a
missing one shows as "—"), and texts stay plain strings for the template to
escape.
"""

from __future__ import annotations

from .. import charts

DASH = "—"
HEADLINE = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "value_per_1000": "Value per 1,000"}
SIGNIFICANCE = 0.05
SLICE_ROWS = 12


def pct(value, digits=1):
    return DASH if value is None else f"{value * 100:.{digits}f}%"


def points(value, digits=1):
    return DASH if value is None else f"{value * 100:+.{digits}f}"


def num(value, digits=3, sign=False):
    if value is None:
        return DASH
    return f"{value:+,.{digits}f}" if sign else f"{value:,.{digits}f}"


def size(n):
    if n is None:
        return DASH
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return DASH


def _tone(low, high):
    if low is None or high is None:
        return ""
    return "ok" if low > 0 else "bad" if high < 0 else ""


def report_context(report, *, project):
    payload = report.payload or {}
    classes = payload.get("classes") or []
    value = payload.get("value") or None
    baseline = value.get("baseline") if value else None
    versions = payload.get("versions") or []
    comparison = payload.get("comparison") or None
    candidate = next((v for v in versions if v.get("role") == "candidate"), None)
    production = next((v for v in versions if v.get("role") == "production"), None)
    context = {
        "report": report,
        "payload": payload,
        "classes": classes,
        "value": value,
        "baseline": num(baseline, 2) if baseline is not None else None,
        "holdout": payload.get("holdout") or {},
        "version_rows": [_version_row(v, value) for v in versions],
        "comparison": _comparison(comparison, value) if comparison else None,
        "per_class": _per_class(candidate, comparison),
        "slices": _slices(candidate, production),
        "gates": payload.get("gates") or {"passed": report.passed, "results": []},
        "timings": payload.get("timings") or {},
        "charts": _charts(versions, candidate, production, comparison, classes, value),
        "candidate_error": (candidate or {}).get("error"),
    }
    return context


def _version_row(version, value):
    metrics = version.get("metrics") or {}
    return {
        "number": version.get("number"),
        "role": version.get("role", ""),
        "status": version.get("status", ""),
        "created_at": version.get("created_at"),
        "error": version.get("error"),
        "n": metrics.get("n"),
        "accuracy": pct(metrics.get("accuracy")),
        "macro_f1": pct(metrics.get("macro_f1")),
        "log_loss": num(metrics.get("log_loss")),
        "ece": num(metrics.get("ece")),
        "value": num(version.get("value_per_1000"), 2) if value else None,
        "beats_baseline": version.get("beats_baseline"),
        "latency": num(version.get("latency_ms_per_1000"), 1),
        "size": size(version.get("artifact_bytes")),
    }


def _comparison(comparison, value):
    bootstrap = comparison.get("bootstrap") or {}
    rows = []
    for name, ci in (bootstrap.get("metrics") or {}).items():
        is_value = name == "value_per_1000"
        show = (lambda x: num(x, 2)) if is_value else pct
        delta = (lambda x: num(x, 2, sign=True)) if is_value else points
        rows.append(
            {
                "name": HEADLINE.get(name, name.replace("_", " ")),
                "unit": (value or {}).get("unit", "") if is_value else "points",
                "production": show(ci.get("a")),
                "candidate": show(ci.get("b")),
                "difference": delta(ci.get("difference")),
                "low": delta(ci.get("low")),
                "high": delta(ci.get("high")),
                "tone": _tone(ci.get("low"), ci.get("high")),
            }
        )
    mcnemar = comparison.get("mcnemar") or {}
    flips = comparison.get("flips") or {}
    return {
        "against": comparison.get("against"),
        "confidence": round((bootstrap.get("confidence") or 0.95) * 100),
        "n_resamples": bootstrap.get("n_resamples"),
        "seed": bootstrap.get("seed"),
        "rows": rows,
        "mcnemar": mcnemar,
        "mcnemar_words": _mcnemar_words(mcnemar),
        "fixed": flips.get("fixed") or [],
        "broken": flips.get("broken") or [],
        "fixed_count": flips.get("fixed_count", len(flips.get("fixed") or [])),
        "broken_count": flips.get("broken_count", len(flips.get("broken") or [])),
    }


def _mcnemar_words(m):
    """McNemar's test said for a product manager, not a statistician."""
    if not m or m.get("p_value") is None:
        return ""
    fixed, broken, p = m.get("c", 0), m.get("b", 0), m["p_value"]
    shown = "< 0.001" if p < 0.001 else f"= {p:.3f}"
    if fixed + broken == 0:
        return "Both models get exactly the same samples right."
    counts = f"The candidate gets {fixed} samples right that production got wrong, and {broken} wrong that production got right"
    if p < SIGNIFICANCE:
        better = "better" if fixed > broken else "worse"
        return (
            f"{counts}. A split this uneven is unlikely to be chance (McNemar's exact test, "
            f"p {shown}): the candidate is genuinely {better} on this holdout."
        )
    return (
        f"{counts}. A split like this could easily be chance (McNemar's exact test, "
        f"p {shown}): no real difference in which samples they get right."
    )


def _per_class(candidate, comparison):
    metrics = (candidate or {}).get("metrics") or {}
    deltas = {str(r.get("label")): r for r in ((comparison or {}).get("per_class") or [])}
    rows = []
    for c in metrics.get("per_class") or []:
        d = deltas.get(str(c.get("label")), {})
        rows.append(
            {
                "label": c.get("label"),
                "precision": pct(c.get("precision")),
                "recall": pct(c.get("recall")),
                "f1": pct(c.get("f1")),
                "support": c.get("support"),
                "recall_production": pct(d.get("recall_a")) if d else None,
                "difference": points(d.get("difference")) if d else None,
                "low": points(d.get("low")) if d else None,
                "high": points(d.get("high")) if d else None,
                "tone": _tone(d.get("low"), d.get("high")),
            }
        )
    return rows


def _slices(candidate, production):
    """Per slice field, one row per value with the candidate's and (when
    there is one) production's accuracy side by side."""
    cand = (candidate or {}).get("slices") or {}
    prod = (production or {}).get("slices") or {}
    tables = []
    for field, rows in cand.items():
        before = {str(r.get("value")): r for r in prod.get(field) or []}
        out = []
        for r in rows:
            p = before.get(str(r.get("value")))
            acc, pacc = r.get("accuracy"), (p or {}).get("accuracy")
            out.append(
                {
                    "value": r.get("value"),
                    "n": r.get("n"),
                    "accuracy": pct(acc),
                    "macro_f1": pct(r.get("macro_f1")),
                    "production": pct(pacc) if p else None,
                    "difference": points(acc - pacc)
                    if acc is not None and pacc is not None
                    else DASH,
                    "tone": ""
                    if acc is None or pacc is None or abs(acc - pacc) < 0.01
                    else ("ok" if acc > pacc else "bad"),
                }
            )
        # Largest slices first; a field with hundreds of values (product ids)
        # shows its top rows and keeps the rest one click away.
        out.sort(key=lambda r: -(r["n"] or 0))
        tables.append({"field": field, "rows": out[:SLICE_ROWS], "more": out[SLICE_ROWS:]})
    return tables


def _charts(versions, candidate, production, comparison, classes, value):
    result = {}
    if comparison and comparison.get("per_class"):
        confidence = ((comparison.get("bootstrap") or {}).get("confidence")) or 0.95
        result["recall"] = charts.recall_deltas(comparison["per_class"], confidence=confidence)
    confusions = []
    for version in (candidate, production):
        metrics = (version or {}).get("metrics") or {}
        if metrics.get("confusion"):
            title = f"v{version.get('number')} ({version.get('role')})"
            confusions.append(charts.confusion(metrics["confusion"], classes, title=title))
    result["confusion"] = confusions
    series = [
        (f"v{v.get('number')} {v.get('role')}", (v.get("metrics") or {}).get("calibration") or [])
        for v in (candidate, production)
        if v
    ]
    result["calibration"] = charts.calibration(series)
    if value:
        ordered = sorted(versions, key=lambda v: v.get("number") or 0)
        result["value"] = charts.value_over_versions(
            [(f"v{v.get('number')}", v.get("value_per_1000")) for v in ordered],
            baseline=value.get("baseline"),
            unit=value.get("unit", ""),
        )
    return result
