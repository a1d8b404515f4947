"""The project's monitoring settings: drift thresholds and surfacing plan."""

from __future__ import annotations

import math

from django.db import transaction

from leanml_site.audit import audit_record
from leanml_site.errors import Refusal
from ml.surfacing import STRATEGIES

from ..models import MonitoringSettings

# (name, lowest allowed (exclusive), highest allowed (inclusive), what it is)
THRESHOLDS = (
    ("psi_threshold", 0.0, 10.0, "population stability index"),
    ("share_points", 0.0, 1.0, "share change (a fraction: 0.05 is 5 points)"),
    ("oov_increase", 0.0, 1.0, "rise in unseen words (a fraction)"),
    ("centroid_distance", 0.0, 1.0, "text centroid distance (0 to 1)"),
)
EDITABLE = (
    *(name for name, *_ in THRESHOLDS),
    "email_alerts",
    "surfacing_budget",
    "surfacing_mix",
    "surfacing_every_hours",
)
BUDGET_MAX = 100_000


class SettingsError(Refusal):
    """A monitoring setting is out of range or of the wrong type."""


def _number(field, value):
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{field}: {value!r} is not a number.", field)
    if not math.isfinite(value):
        raise SettingsError(f"{field}: {value!r} is not a finite number.", field)
    return value


def _check(changes) -> dict:
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise SettingsError(f"Unknown setting {unknown[0]!r}.", unknown[0])
    clean = {}
    for name, low, high, what in THRESHOLDS:
        if name not in changes:
            continue
        value = changes[name]
        if value is not None:
            value = float(_number(name, value))
            if not low < value <= high:
                raise SettingsError(
                    f"{name}: {value:g} is out of range for the {what}; give a value above "
                    f"{low:g} and at most {high:g}, or leave it empty to switch it off.",
                    name,
                )
        clean[name] = value
    if "email_alerts" in changes:
        if not isinstance(changes["email_alerts"], bool):
            raise SettingsError("email_alerts: give true or false.", "email_alerts")
        clean["email_alerts"] = changes["email_alerts"]
    if "surfacing_budget" in changes:
        budget = _number("surfacing_budget", changes["surfacing_budget"])
        if budget != int(budget) or not 1 <= budget <= BUDGET_MAX:
            raise SettingsError(
                f"surfacing_budget: {budget!r} must be a whole number from 1 to {BUDGET_MAX:,}.",
                "surfacing_budget",
            )
        clean["surfacing_budget"] = int(budget)
    if "surfacing_every_hours" in changes:
        hours = changes["surfacing_every_hours"]
        if hours is not None:
            hours = _number("surfacing_every_hours", hours)
            if hours != int(hours) or not 1 <= hours <= 24 * 365:
                raise SettingsError(
                    f"surfacing_every_hours: {hours!r} must be a whole number of hours from 1 "
                    "to 8760, or empty for surfacing on request only.",
                    "surfacing_every_hours",
                )
            hours = int(hours)
        clean["surfacing_every_hours"] = hours
    if "surfacing_mix" in changes:
        clean["surfacing_mix"] = _check_mix(changes["surfacing_mix"])
    return clean


def _check_mix(mix) -> dict:
    """Shares per strategy; empty means the default mix."""
    if mix is None:
        return {}
    if not isinstance(mix, dict):
        raise SettingsError("surfacing_mix: give an object {strategy: share}.", "surfacing_mix")
    unknown = sorted(k for k in mix if k not in STRATEGIES)
    if unknown:
        raise SettingsError(
            f"surfacing_mix: unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}.",
            "surfacing_mix",
        )
    clean = {}
    for strategy, share in mix.items():
        share = _number(f"surfacing_mix.{strategy}", share)
        if share < 0:
            raise SettingsError(
                f"surfacing_mix: the share of {strategy!r} is {share:g}; shares cannot be "
                "negative.",
                "surfacing_mix",
            )
        clean[strategy] = float(share)
    if clean and sum(clean.values()) <= 0:
        raise SettingsError(
            "surfacing_mix: the shares add up to 0; give at least one strategy a share.",
            "surfacing_mix",
        )
    return {k: v for k, v in clean.items() if v > 0}


def monitoring_settings_update(*, project, by, changes: dict) -> MonitoringSettings:
    """Change some settings; checks them all first, so a bad value changes nothing."""
    clean = _check(changes)
    with transaction.atomic():
        MonitoringSettings.objects.get_or_create(project=project)
        row = MonitoringSettings.objects.select_for_update().get(project=project)
        before = {k: getattr(row, k) for k in clean}
        for name, value in clean.items():
            setattr(row, name, value)
        row.save(update_fields=list(clean) or None)
        changed = {k: v for k, v in clean.items() if before[k] != v}
        if changed:
            audit_record(
                actor=by,
                action="monitoring_settings.update",
                project=project,
                target=row,
                before={k: before[k] for k in changed},
                after=changed,
            )
    return row
