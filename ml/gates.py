"""The project's release gates, evaluated to pass / fail with the numbers and
one human sentence each (what the product manager reads before signing off)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .evaluation import Metrics
from .stats import BootstrapCI


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float | None  # the number the gate tested
    threshold: float | None
    sentence: str
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class GateReport:
    results: list[GateResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]


@dataclass(frozen=True)
class GateConfig:
    """Which gates a project uses; None switches a gate off."""

    # Lower bound of the CI of (candidate − production) value per 1,000 must
    # be ≥ −value_margin: "not worse with that confidence".
    value_margin: float | None = 0.0
    max_recall_drop_points: float | None = 5.0
    max_latency_ms_per_1000: float | None = None
    accuracy_tolerance: float | None = 0.01  # absolute, 0.01 = one point
    macro_f1_tolerance: float | None = 0.01


def value_not_worse(ci: BootstrapCI, *, margin: float = 0.0) -> GateResult:
    passed = ci.low >= -margin
    pct = round(ci.confidence * 100)
    sentence = (
        f"Value per 1,000 predictions changes by {ci.difference:+.2f} "
        f"({pct}% interval {ci.low:+.2f} to {ci.high:+.2f}); "
        + (
            f"with {pct}% confidence the candidate is not worse"
            + (f" by more than {margin:g}" if margin else "")
            + "."
            if passed
            else f"the candidate may be worse by up to {-ci.low:.2f} per 1,000"
            + (f" (allowed: {margin:g})" if margin else "")
            + "."
        )
    )
    return GateResult(
        "value_not_worse",
        passed,
        ci.low,
        -margin,
        sentence,
        {"difference": ci.difference, "low": ci.low, "high": ci.high, "confidence": ci.confidence},
    )


def recall_not_dropped(
    production: Metrics, candidate: Metrics, *, max_drop_points: float
) -> GateResult:
    """No class's recall may fall by more than ``max_drop_points`` percentage points."""
    drops = {
        c.label: (c.recall - candidate.recall(c.label)) * 100
        for c in production.per_class
        if c.label in candidate.classes
    }
    worst_label = max(drops, key=drops.get)
    worst = drops[worst_label]
    passed = worst <= max_drop_points
    if worst <= 0:
        sentence = "No class's recall dropped."
    elif passed:
        sentence = (
            f"The largest recall drop is {worst:.1f} points (class {worst_label!r}), "
            f"within the allowed {max_drop_points:g}."
        )
    else:
        over = [str(k) for k, v in drops.items() if v > max_drop_points]
        sentence = (
            f"Recall of class {worst_label!r} dropped by {worst:.1f} points, more than the "
            f"allowed {max_drop_points:g} (classes over the limit: {', '.join(over)})."
        )
    return GateResult(
        "recall_not_dropped",
        passed,
        worst,
        max_drop_points,
        sentence,
        {"drop_points": {str(k): v for k, v in drops.items()}},
    )


def latency_under(ms_per_1000: float, *, max_ms: float) -> GateResult:
    passed = ms_per_1000 <= max_ms
    sentence = (
        f"Predicting 1,000 samples takes {ms_per_1000:.1f} ms, "
        + ("under" if passed else "over")
        + f" the limit of {max_ms:g} ms."
    )
    return GateResult("latency_under", passed, ms_per_1000, max_ms, sentence)


def metric_not_worse(
    name: str, production: float, candidate: float, *, tolerance: float
) -> GateResult:
    change = candidate - production
    passed = change >= -tolerance
    label = {"accuracy": "Accuracy", "macro_f1": "Macro-F1"}.get(name, name)
    sentence = (
        f"{label} goes from {production:.3f} to {candidate:.3f} ({change * 100:+.1f} points)"
        + (
            "."
            if change >= 0
            else f", {'within' if passed else 'beyond'} the allowed drop of "
            f"{_points(tolerance * 100)}."
        )
    )
    return GateResult(f"{name}_not_worse", passed, change, -tolerance, sentence)


def evaluate_gates(
    config: GateConfig,
    *,
    production: Metrics,
    candidate: Metrics,
    value_ci: BootstrapCI | None = None,
    latency_ms_per_1000: float | None = None,
) -> GateReport:
    """Every configured gate; a gate whose input is missing fails and says so,
    rather than passing silently."""
    results = []
    if config.value_margin is not None:
        if value_ci is None:
            results.append(
                GateResult(
                    "value_not_worse",
                    False,
                    None,
                    -config.value_margin,
                    "The value gate is on but no value metric was computed (set a gain matrix).",
                )
            )
        else:
            results.append(value_not_worse(value_ci, margin=config.value_margin))
    if config.max_recall_drop_points is not None:
        results.append(
            recall_not_dropped(production, candidate, max_drop_points=config.max_recall_drop_points)
        )
    if config.max_latency_ms_per_1000 is not None:
        if latency_ms_per_1000 is None:
            results.append(
                GateResult(
                    "latency_under",
                    False,
                    None,
                    config.max_latency_ms_per_1000,
                    "The latency gate is on but latency was not measured.",
                )
            )
        else:
            results.append(
                latency_under(latency_ms_per_1000, max_ms=config.max_latency_ms_per_1000)
            )
    if config.accuracy_tolerance is not None:
        results.append(
            metric_not_worse(
                "accuracy",
                production.accuracy,
                candidate.accuracy,
                tolerance=config.accuracy_tolerance,
            )
        )
    if config.macro_f1_tolerance is not None:
        results.append(
            metric_not_worse(
                "macro_f1",
                production.macro_f1,
                candidate.macro_f1,
                tolerance=config.macro_f1_tolerance,
            )
        )
    return GateReport(results)


def _points(value: float) -> str:
    return f"{value:g} point" + ("" if value == 1 else "s")
