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
    """Monitoring settings out of range or of the wrong type: every one found,
    as ``problems`` [(key, text)], the key a setting's name or, for one
    strategy's share, ``surfacing_mix.<strategy>``; the text says what is
    wrong without naming the key, so a page can put it beside its own label.
    ``message`` names the keys (the API's words), ``field`` the first one's
    setting."""

    def __init__(self, problems):
        self.problems = list(problems)
        message = " ".join(f"{key}: {text}" for key, text in self.problems)
        super().__init__(message, self.problems[0][0].split(".")[0])

    def errors(self) -> dict:
        """{setting: [its messages, keys named]} for the API's ``errors``."""
        out = {}
        for key, text in self.problems:
            out.setdefault(key.split(".")[0], []).append(f"{key}: {text}")
        return out


# (setting, largest value, what the words say of it, whether empty is allowed);
# the smallest is 1.
WHOLE_NUMBERS = (
    ("surfacing_budget", BUDGET_MAX, f"from 1 to {BUDGET_MAX:,}.", False),
    (
        "surfacing_every_hours",
        24 * 365,
        "of hours from 1 to 8760; leave it empty for surfacing on request only.",
        True,
    ),
)


def _number(value):
    """The number ``value`` is, or the words for what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"{value!r} is not a number."
    if not math.isfinite(value):
        return None, f"{value!r} is not a finite number."
    return value, None


def _check(changes) -> dict:
    """The changes checked, or a SettingsError naming every bad one at once."""
    problems = [(name, "no such setting.") for name in sorted(set(changes) - set(EDITABLE))]
    clean = {}
    for name, low, high, what in THRESHOLDS:
        if name not in changes:
            continue
        value = changes[name]
        if value is not None:
            value, wrong = _number(value)
            if wrong:
                problems.append((name, wrong))
                continue
            value = float(value)
            if not low < value <= high:
                problems.append(
                    (
                        name,
                        f"{value:g} is out of range for the {what}; give a value above "
                        f"{low:g} and at most {high:g}, or leave it empty to switch it off.",
                    )
                )
                continue
        clean[name] = value
    if "email_alerts" in changes:
        if isinstance(changes["email_alerts"], bool):
            clean["email_alerts"] = changes["email_alerts"]
        else:
            problems.append(("email_alerts", "give true or false."))
    for name, high, words, may_be_empty in WHOLE_NUMBERS:
        if name not in changes:
            continue
        value, wrong = changes[name], None
        if value is not None or not may_be_empty:
            value, wrong = _number(value)
            if wrong is None and (value != int(value) or not 1 <= value <= high):
                wrong = f"{value!r} is not a whole number {words}"
        if wrong:
            problems.append((name, wrong))
        else:
            clean[name] = None if value is None else int(value)
    if "surfacing_mix" in changes:
        mix, wrong = _check_mix(changes["surfacing_mix"])
        problems += wrong
        if not wrong:
            clean["surfacing_mix"] = mix
    if problems:
        raise SettingsError(problems)
    return clean


def _check_mix(mix) -> tuple[dict, list]:
    """Shares per strategy (empty: the default mix), and the problems found."""
    if mix is None:
        return {}, []
    if not isinstance(mix, dict):
        return {}, [("surfacing_mix", "give an object {strategy: share}.")]
    problems = [
        (
            "surfacing_mix",
            f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}.",
        )
        for name in sorted(k for k in mix if k not in STRATEGIES)
    ]
    clean = {}
    for strategy, share in mix.items():
        if strategy not in STRATEGIES:
            continue
        share, wrong = _number(share)
        if wrong is None and share < 0:
            wrong = f"the share of {strategy!r} is {share:g}; shares cannot be negative."
        if wrong:
            problems.append((f"surfacing_mix.{strategy}", wrong))
        else:
            clean[strategy] = float(share)
    if not problems and clean and sum(clean.values()) <= 0:
        problems.append(
            ("surfacing_mix", "the shares add up to 0; give at least one strategy a share.")
        )
    return {k: v for k, v in clean.items() if v > 0}, problems


def monitoring_settings_check(changes: dict) -> dict:
    """The changes as they would be stored; a SettingsError names every bad one."""
    return _check(changes)


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
