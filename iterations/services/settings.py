"""Model settings, keyword rule sets and ensemble configurations: every write.

Who may change what (the API and the pages both ask ``settings_editable``):

- the value metric (unit, gain matrix, useful baseline) says what a
  prediction is worth to the business: the product manager's call (DECIDE);
- slice fields, gates, compare_last and retrain_every shape the evidence and
  the loop's rhythm: data scientists (TRAIN) and product managers (DECIDE)
  both have a stake in them, so either may set them;
- the owner holds both capabilities and so may set everything.

Rule sets and ensemble configurations are append-only: saving makes a new
version number, so a model version can always name exactly what it ran.
"""

import json
import math
import re
from collections.abc import Mapping

import pandas as pd
from django.db import transaction
from django.db.models import Max

from labelling.models import Project
from leanml_site.audit import audit_record
from leanml_site.errors import Refusal
from leanml_site.roles import Capability, role_can
from ml.evaluation import gain_array
from ml.submodels import RuleError, SubModelError, available, create, parse_rules
from ml.submodels.rules import KeywordRules

from ..models import EnsembleConfig, KeywordRuleSet, ModelSettings
from .regression import GatesError, gates_parse
from .snapshots import usable_samples

VALUE_FIELDS = ("value_unit", "gain_matrix", "useful_baseline")
LOOP_FIELDS = ("slice_fields", "gates", "compare_last", "retrain_every")
ALL_FIELDS = VALUE_FIELDS + LOOP_FIELDS
MAX_COMPARE_LAST = 20
# The "try a pattern" preview reads at most this many labelled samples, so a
# click never costs more than a fraction of a second.
PREVIEW_LIMIT = 5000
MAX_RULES = 500


class SettingsError(Refusal):
    """A setting, rule or configuration is not acceptable; the message says
    why, for people, and ``field`` names where (``rules.3``, ``gain_matrix``)."""


# --- model settings ----------------------------------------------------------------------


def settings_editable(role) -> set[str]:
    """The model settings fields a member with ``role`` may change."""
    editable = set()
    if role_can(role, Capability.DECIDE):
        editable.update(VALUE_FIELDS)
    if role_can(role, Capability.STEER):
        editable.update(LOOP_FIELDS)
    return editable


def model_settings_get(project) -> ModelSettings:
    """The project's settings; an unsaved row with the defaults when none was written yet."""
    found = ModelSettings.objects.filter(project=project).first()
    return found if found is not None else ModelSettings(project=project)


def model_settings_update(*, project, by, changes: dict) -> ModelSettings:
    """Validate and save ``changes`` (a subset of ``ALL_FIELDS``), all or nothing.

    The caller has checked the fields against ``settings_editable``.
    """
    unknown = sorted(set(changes) - set(ALL_FIELDS))
    if unknown:
        raise SettingsError(f"Unknown setting {unknown[0]!r}.", field=unknown[0])
    clean = {name: _CLEANERS[name](project, value) for name, value in changes.items()}
    with transaction.atomic():
        settings, _ = ModelSettings.objects.select_for_update().get_or_create(project=project)
        _check_value_gate(
            clean.get("gates", settings.gates), clean.get("gain_matrix", settings.gain_matrix)
        )
        before = {name: getattr(settings, name) for name in clean}
        changed = {name: value for name, value in clean.items() if before[name] != value}
        if not changed:
            return settings
        for name, value in changed.items():
            setattr(settings, name, value)
        settings.save(update_fields=list(changed))
        audit_record(
            actor=by,
            action="model_settings.update",
            project=project,
            target=settings,
            before={name: before[name] for name in changed},
            after=changed,
        )
    return settings


def _check_value_gate(gates, gain_matrix):
    """A value gate with no value metric would fail every report."""
    if not gain_matrix and any(g.get("gate") == "value_not_worse" for g in gates or []):
        raise SettingsError(
            "The value gate needs a value metric: fill in the gain matrix, or turn the value "
            "gate off.",
            "gates",
        )


def class_names(project) -> list[str]:
    return list(project.label_classes.order_by("order", "id").values_list("name", flat=True))


def _clean_value_unit(project, value):
    if not isinstance(value, str) or not value.strip():
        raise SettingsError("Name the unit of value, e.g. EUR or minutes saved.", "value_unit")
    value = value.strip()
    if len(value) > 32:
        raise SettingsError("The unit may have at most 32 characters.", "value_unit")
    return value


def _clean_gain_matrix(project, value):
    """``{true: {predicted: gain}}``; cells left out are 0; {} means no value metric."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SettingsError(
            "The gain matrix must be an object {true class: {predicted class: gain}}.",
            "gain_matrix",
        )
    clean = {}
    for true, row in value.items():
        if not isinstance(row, Mapping):
            raise SettingsError(
                f"Row {str(true)[:40]!r} of the gain matrix must be an object "
                "{predicted class: gain}.",
                "gain_matrix",
            )
        clean[str(true)] = {}
        for predicted, gain in row.items():
            if isinstance(gain, bool) or not isinstance(gain, int | float):
                raise SettingsError(
                    f"Gain for true {str(true)[:40]!r}, predicted {str(predicted)[:40]!r} must "
                    f"be a number, got {str(gain)[:40]!r}.",
                    "gain_matrix",
                )
            if not math.isfinite(gain):
                raise SettingsError(
                    f"Gain for true {str(true)[:40]!r}, predicted {str(predicted)[:40]!r} must "
                    "be a finite number.",
                    "gain_matrix",
                )
            clean[str(true)][str(predicted)] = float(gain)
    try:
        gain_array(clean, class_names(project))
    except ValueError as error:
        raise SettingsError(
            f"{str(error)[:1].upper()}{str(error)[1:]} (classes: {', '.join(class_names(project))}).",
            "gain_matrix",
        ) from None
    return {true: row for true, row in clean.items() if row}


def _clean_useful_baseline(project, value):
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingsError(
            "The useful baseline must be a finite number (value per 1,000 predictions) or empty.",
            "useful_baseline",
        )
    return float(value)


def _clean_slice_fields(project, value):
    if value is None:
        return []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise SettingsError("Slice fields must be a list of field names.", "slice_fields")
    names = [f["name"] for f in project.fields or []]
    for name in value:
        if name not in names:
            raise SettingsError(
                f"{name[:60]!r} is not a field of this project; use one of: {', '.join(names)}.",
                "slice_fields",
            )
    return list(dict.fromkeys(value))


def _clean_gates(project, value):
    return gates_validate(value)


def gates_validate(value) -> list:
    """The gates list as saved; ``gates_parse`` of the regression test is
    the one authority on its format, so the settings can never hold gates
    the test would refuse."""
    if value is None:
        return []
    try:
        gates_parse(value)
    except GatesError as error:
        raise SettingsError(str(error), "gates") from None
    if isinstance(value, str):
        # gates_parse also reads JSON text; the settings store the list.
        return json.loads(value) if value.strip() else []
    return list(value)


def _clean_compare_last(project, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COMPARE_LAST:
        raise SettingsError(
            f"compare_last must be a whole number from 0 to {MAX_COMPARE_LAST}.", "compare_last"
        )
    return value


def _clean_retrain_every(project, value):
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(
            "retrain_every must be a whole number of new labels, at least 1, or empty "
            "for no automatic retraining.",
            "retrain_every",
        )
    return value


_CLEANERS = {
    "value_unit": _clean_value_unit,
    "gain_matrix": _clean_gain_matrix,
    "useful_baseline": _clean_useful_baseline,
    "slice_fields": _clean_slice_fields,
    "gates": _clean_gates,
    "compare_last": _clean_compare_last,
    "retrain_every": _clean_retrain_every,
}


# --- keyword rule sets ------------------------------------------------------------------


def rules_validate(project, rules) -> list[dict]:
    """Rules as stored: ``[{"pattern", "label", "weight", "regex"}]``.

    ``class`` is accepted for ``label`` (the sub-model's own word). Each rule
    is checked by the keyword rules sub-model's parser, and its class must be
    one of the project's; errors name the rule by its 1-based number.
    """
    if not isinstance(rules, list | tuple):
        raise SettingsError("Rules must be a list of {pattern, label, weight} objects.", "rules")
    if len(rules) > MAX_RULES:
        raise SettingsError(f"At most {MAX_RULES} rules in a set.", "rules")
    names = class_names(project)
    clean = []
    for number, rule in enumerate(rules, start=1):
        field = f"rules.{number}"
        if not isinstance(rule, Mapping):
            raise SettingsError(f"Rule {number}: must be an object with pattern and label.", field)
        rule = dict(rule)
        if "class" in rule and "label" not in rule:
            rule["label"] = rule.pop("class")
        as_submodel = {("class" if k == "label" else k): v for k, v in rule.items()}
        try:
            (parsed,) = parse_rules([as_submodel])
        except RuleError as error:
            message = re.sub(r"^rule 1", f"Rule {number}", str(error))
            raise SettingsError(message, field) from None
        if parsed.label not in names:
            raise SettingsError(
                f"Rule {number} (pattern {parsed.pattern!r}): no class {str(parsed.label)[:60]!r}"
                f" in this project; use one of: {', '.join(names)}.",
                field,
            )
        stored = {"pattern": parsed.pattern.strip(), "label": parsed.label, "weight": parsed.weight}
        if parsed.regex:
            stored["regex"] = True
        clean.append(stored)
    return clean


def rule_set_create(*, project, by, rules, note="") -> KeywordRuleSet:
    """Save the full rule list as the project's next rule set version."""
    clean = rules_validate(project, rules)
    with transaction.atomic():
        # Serialise writers of one project: numbers are max + 1.
        Project.objects.select_for_update().filter(pk=project.pk).first()
        latest = project.rule_sets.order_by("-number").first()
        if latest is not None and latest.rules == clean:
            raise SettingsError(
                f"These rules are the same as version {latest.number}; nothing to save.", "rules"
            )
        if latest is None and not clean:
            raise SettingsError("Write at least one rule.", "rules")
        rule_set = KeywordRuleSet.objects.create(
            project=project,
            number=(latest.number + 1) if latest else 1,
            rules=clean,
            note=(note or "").strip(),
            created_by=by,
        )
        diff = rules_diff(latest.rules if latest else [], clean)
        audit_record(
            actor=by,
            action="rule_set.create",
            project=project,
            target=rule_set,
            after={
                "number": rule_set.number,
                "rules": len(clean),
                "added": diff["added"],
                "removed": diff["removed"],
            },
        )
    return rule_set


def rules_diff(old, new) -> dict:
    """Rules added and removed between two versions (a changed weight shows
    as one removed and one added, as in a line diff)."""

    def key(rule):
        return (rule["pattern"], rule["label"], rule.get("weight", 1.0), rule.get("regex", False))

    old_keys, new_keys = {key(r) for r in old}, {key(r) for r in new}
    return {
        "added": [r for r in new if key(r) not in old_keys],
        "removed": [r for r in old if key(r) not in new_keys],
    }


def rule_preview(*, project, pattern, regex=False) -> dict:
    """How a pattern would fire on the labelled samples: matches and their class mix.

    Reads the newest ``PREVIEW_LIMIT`` usable labelled samples (the ones a
    snapshot would train on) and the project's text fields, with the same
    matching the keyword rules sub-model uses.
    """
    names = class_names(project)
    try:
        (parsed,) = parse_rules([{"pattern": pattern, "class": "?", "regex": bool(regex)}])
    except RuleError as error:
        raise SettingsError(re.sub(r"^rule 1", "Pattern", str(error)), "pattern") from None
    text_fields = [f["name"] for f in project.fields or [] if f.get("kind", "text") == "text"]
    if not text_fields:
        raise SettingsError("This project has no text fields for rules to read.", "pattern")
    rows = list(
        usable_samples(project)
        .order_by("-id")
        .values_list("external_id", "data", "consensus_label__name")[:PREVIEW_LIMIT]
    )
    counts = dict.fromkeys(names, 0)
    examples = []
    if rows:
        frame = pd.DataFrame(
            {name: [data.get(name) for _, data, _ in rows] for name in text_fields}
        )
        rule = {"pattern": parsed.pattern, "class": "?", "regex": parsed.regex}
        rules = KeywordRules(fields=text_fields, params={"rules": [rule]})
        fired = rules.fired(frame).iloc[:, 0].to_numpy()
        for hit, (external_id, data, label) in zip(fired, rows, strict=True):
            if hit:
                counts[label] = counts.get(label, 0) + 1
                if len(examples) < 5:
                    text = " ".join(str(data.get(f) or "") for f in text_fields)
                    examples.append(
                        {"external_id": external_id, "label": label, "text": text[:200]}
                    )
    matched = sum(counts.values())
    return {
        "pattern": parsed.pattern,
        "regex": parsed.regex,
        "scanned": len(rows),
        "limit": PREVIEW_LIMIT,
        "matched": matched,
        "by_class": [
            {"label": name, "count": count, "share": count / matched if matched else None}
            for name, count in counts.items()
        ],
        "examples": examples,
    }


# --- ensemble configurations ------------------------------------------------------------


def ensemble_config_validate(project, *, submodels, combiner, weights) -> tuple:
    if not isinstance(submodels, list | tuple) or not submodels:
        raise SettingsError("Name at least one sub-model.", "submodels")
    field_names = [f["name"] for f in project.fields or []]
    registry = available()
    clean, keys = [], []
    for index, entry in enumerate(submodels):
        where = f"submodels.{index}"
        if not isinstance(entry, Mapping):
            raise SettingsError(
                f"Sub-model {index + 1}: must be an object with name and fields.", where
            )
        name = entry.get("name")
        if name not in registry:
            raise SettingsError(
                f"Sub-model {index + 1}: no sub-model named {str(name)[:60]!r}; available: "
                f"{', '.join(registry)}.",
                f"{where}.name",
            )
        fields = entry.get("fields")
        if isinstance(fields, str):
            fields = [fields]
        if not isinstance(fields, list | tuple) or not fields:
            raise SettingsError(
                f"Sub-model {index + 1} ({name}): list the sample fields it reads.",
                f"{where}.fields",
            )
        for field in fields:
            if field not in field_names:
                raise SettingsError(
                    f"Sub-model {index + 1} ({name}): {str(field)[:60]!r} is not a field of "
                    f"this project; use one of: {', '.join(field_names)}.",
                    f"{where}.fields",
                )
        key = entry.get("key") or name
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
            raise SettingsError(
                f"Sub-model {index + 1} ({name}): key must be 1-64 letters, digits, _ or -.",
                f"{where}.key",
            )
        if key in keys:
            raise SettingsError(
                f"Sub-model {index + 1} ({name}): key {key!r} is used twice; give each a "
                "distinct key.",
                f"{where}.key",
            )
        params = entry.get("params") or {}
        try:
            create(name, fields=list(fields), params=params, key=key)
        except (SubModelError, TypeError) as error:
            raise SettingsError(
                f"Sub-model {index + 1} ({name}): {error}", f"{where}.params"
            ) from None
        keys.append(key)
        clean.append({"key": key, "name": name, "fields": list(fields), "params": dict(params)})
    if combiner not in EnsembleConfig.Combiner.values:
        raise SettingsError(
            f"Unknown combiner {str(combiner)[:40]!r}; use one of: "
            f"{', '.join(EnsembleConfig.Combiner.values)}.",
            "combiner",
        )
    weights = weights or {}
    if not isinstance(weights, Mapping):
        raise SettingsError("Weights must be an object {sub-model key: weight}.", "weights")
    for key, weight in weights.items():
        if key not in keys:
            raise SettingsError(
                f"Weight for {str(key)[:60]!r}, which is not a sub-model key ({', '.join(keys)}).",
                "weights",
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight < 0
        ):
            raise SettingsError(
                f"Weight of {key!r} must be a non-negative number, got {str(weight)[:40]!r}.",
                "weights",
            )
    if weights and sum(weights.get(k, 1.0) for k in keys) <= 0:
        raise SettingsError("Weights must have a positive total.", "weights")
    return clean, combiner, {k: float(v) for k, v in weights.items()}


def ensemble_config_create(
    *, project, by, submodels, combiner=EnsembleConfig.Combiner.STACKING, weights=None, note=""
) -> EnsembleConfig:
    """Save the next ensemble configuration; the next retrain uses it."""
    submodels, combiner, weights = ensemble_config_validate(
        project, submodels=submodels, combiner=combiner, weights=weights
    )
    with transaction.atomic():
        Project.objects.select_for_update().filter(pk=project.pk).first()
        number = (project.ensemble_configs.aggregate(n=Max("number"))["n"] or 0) + 1
        config = EnsembleConfig.objects.create(
            project=project,
            number=number,
            submodels=submodels,
            combiner=combiner,
            weights=weights,
            note=(note or "").strip(),
            created_by=by,
        )
        audit_record(
            actor=by,
            action="ensemble_config.create",
            project=project,
            target=config,
            after={"number": number, "submodels": submodels, "combiner": combiner},
        )
    return config
