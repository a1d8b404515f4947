"""Model settings page (value metric, slices, gates, rhythm) and the keyword
rules page (experts write rules; each save is a new version)."""

import contextlib
import math
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from labelling.permissions import get_project_for_user
from leanml_site.roles import Capability, role_can
from ml.gates import GateConfig

from ..models import KeywordRuleSet
from ..services.settings import (
    LOOP_FIELDS,
    MAX_COMPARE_LAST,
    VALUE_FIELDS,
    SettingsError,
    class_names,
    model_settings_get,
    model_settings_update,
    rule_preview,
    rule_set_create,
    rules_diff,
    settings_editable,
)

# The gates the form offers: (gate name, its key, how the form shows the
# number, scale from the form's number to the stored one, GateConfig
# attribute holding its default). Tolerances are fractions (0.01) in the
# gates list but "points" for the people setting them.
GATES = [
    (
        "value_not_worse",
        "margin",
        "Value per 1,000 predictions may drop at most",
        1.0,
        "value_margin",
    ),
    (
        "max_recall_drop",
        "points",
        "No class's recall may drop by more than (points)",
        1.0,
        "max_recall_drop_points",
    ),
    (
        "max_latency_ms_per_1000",
        "ms",
        "Predicting 1,000 samples must take at most (ms)",
        1.0,
        "max_latency_ms_per_1000",
    ),
    (
        "accuracy_not_worse",
        "tolerance",
        "Accuracy may drop at most (points)",
        100.0,
        "accuracy_tolerance",
    ),
    (
        "macro_f1_not_worse",
        "tolerance",
        "Macro-F1 may drop at most (points)",
        100.0,
        "macro_f1_tolerance",
    ),
]
LATENCY_SUGGESTION = 50.0
BLANK_RULE_ROWS = 3
HISTORY_SHOWN = 20


# --- model settings -----------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def model_settings(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    settings = model_settings_get(project)
    editable = settings_editable(project.role)
    errors = {}
    submitted = None
    if request.method == "POST":
        if not editable:
            raise PermissionDenied(
                f"Your role ({project.role_label}) may read the model settings, not change them."
            )
        changes, errors = _changes_from_post(request.POST, project, editable)
        submitted = request.POST
        if not errors:
            try:
                model_settings_update(project=project, by=request.user, changes=changes)
            except SettingsError as error:
                errors[error.field or "form"] = str(error)
            else:
                messages.success(request, "Model settings saved.")
                return redirect("iterations:model_settings", project_pk=project.pk)
    context = {
        "project": project,
        "settings": settings,
        "can_value": set(VALUE_FIELDS) <= editable,
        "can_loop": set(LOOP_FIELDS) <= editable,
        "errors": errors,
        **_form_values(project, settings, submitted),
    }
    return render(request, "iterations/settings.html", context, status=400 if errors else 200)


def _number(text, *, field, what, integer=False, allow_empty=True):
    text = (text or "").strip()
    if not text:
        if allow_empty:
            return None
        raise SettingsError(f"Give {what}.", field)
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise SettingsError(
            f"{what[:1].upper()}{what[1:]} must be {kind}, got {text[:40]!r}.", field
        ) from None
    if not integer and not math.isfinite(value):
        raise SettingsError(f"{what[:1].upper()}{what[1:]} must be a finite number.", field)
    return value


def _changes_from_post(post, project, editable):
    """The form's values as service changes, and errors by field for the form."""
    changes, errors = {}, {}
    classes = class_names(project)

    def take(field, parse):
        try:
            changes[field] = parse()
        except SettingsError as error:
            errors[error.field or field] = str(error)

    if set(VALUE_FIELDS) <= editable:
        take("value_unit", lambda: post.get("value_unit", ""))

        def gain_matrix():
            matrix = {}
            for i, true in enumerate(classes):
                for j, predicted in enumerate(classes):
                    value = _number(
                        post.get(f"gain_{i}_{j}"),
                        field="gain_matrix",
                        what=f"the gain for true {true!r}, predicted {predicted!r}",
                    )
                    if value:
                        matrix.setdefault(true, {})[predicted] = value
            return matrix

        take("gain_matrix", gain_matrix)
        take(
            "useful_baseline",
            lambda: _number(
                post.get("useful_baseline"), field="useful_baseline", what="the useful baseline"
            ),
        )
    if set(LOOP_FIELDS) <= editable:
        take("slice_fields", lambda: post.getlist("slice_fields"))

        def gates():
            chosen = []
            for name, key, label, scale, _ in GATES:
                if post.get(f"gate_{name}"):
                    value = _number(
                        post.get(f"gate_{name}_value"),
                        field="gates",
                        what=f"the number for “{label}”",
                        allow_empty=False,
                    )
                    chosen.append({"gate": name, key: value / scale})
            if not chosen:
                raise SettingsError(
                    "Turn on at least one gate: a candidate with no gate passes whatever it does.",
                    "gates",
                )
            return chosen

        take("gates", gates)
        take(
            "compare_last",
            lambda: _number(
                post.get("compare_last"),
                field="compare_last",
                what="how many earlier versions to compare",
                integer=True,
                allow_empty=False,
            ),
        )
        take(
            "retrain_every",
            lambda: _number(
                post.get("retrain_every"),
                field="retrain_every",
                what="the number of new labels between automatic retrains",
                integer=True,
            ),
        )
    return changes, errors


def _form_values(project, settings, post):
    """What the form shows: the saved settings, or what was just submitted."""
    classes = class_names(project)
    field_names = [f["name"] for f in project.fields or []]
    if post is not None:
        unit = post.get("value_unit", settings.value_unit)
        grid = [
            {
                "label": true,
                "cells": [
                    {
                        "name": f"gain_{i}_{j}",
                        "predicted": p,
                        "value": post.get(f"gain_{i}_{j}", ""),
                    }
                    for j, p in enumerate(classes)
                ],
            }
            for i, true in enumerate(classes)
        ]
        baseline = post.get("useful_baseline", "")
        slices = post.getlist("slice_fields")
        gates = [
            {
                "name": name,
                "label": label,
                "on": bool(post.get(f"gate_{name}")),
                "value": post.get(f"gate_{name}_value", ""),
            }
            for name, _, label, _, _ in GATES
        ]
        compare_last = post.get("compare_last", "")
        retrain_every = post.get("retrain_every", "")
    else:
        unit = settings.value_unit
        matrix = settings.gain_matrix or {}
        grid = [
            {
                "label": true,
                "cells": [
                    {
                        "name": f"gain_{i}_{j}",
                        "predicted": p,
                        "value": _plain(matrix.get(true, {}).get(p)),
                    }
                    for j, p in enumerate(classes)
                ],
            }
            for i, true in enumerate(classes)
        ]
        baseline = _plain(settings.useful_baseline)
        slices = settings.slice_fields or []
        gates = _gate_rows(settings.gates, has_value=bool(settings.gain_matrix))
        compare_last = settings.compare_last
        retrain_every = settings.retrain_every or ""
    return {
        "classes": classes,
        "unit": unit,
        "grid": grid,
        "baseline": baseline,
        "slice_choices": [{"name": n, "checked": n in slices} for n in field_names],
        "gates": gates,
        "gates_default": not settings.gates,
        "compare_last": compare_last,
        "max_compare_last": MAX_COMPARE_LAST,
        "retrain_every": retrain_every,
    }


def _plain(number):
    if number is None:
        return ""
    return f"{number:g}"


def _gate_rows(saved, *, has_value):
    """Each gate with on/off and its number in the form's units. An empty
    list means the default gates of ml.gates.GateConfig, without the value
    gate while there is no value metric (as the regression test reads it)."""
    by_name = {g.get("gate"): g for g in saved or [] if isinstance(g, dict)}
    defaults = GateConfig()
    rows = []
    for name, key, label, scale, attribute in GATES:
        if saved:
            entry = by_name.get(name)
            on = entry is not None
            number = entry.get(key) if entry else None
        else:
            number = getattr(defaults, attribute)
            on = number is not None and (has_value or name != "value_not_worse")
        if number is None:
            number = LATENCY_SUGGESTION if name == "max_latency_ms_per_1000" else 0.0
        rows.append({"name": name, "label": label, "on": on, "value": _plain(number * scale)})
    return rows


# --- keyword rules ------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def rules(request, project_pk):
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    can_write = role_can(project.role, Capability.LABEL)
    history = list(
        KeywordRuleSet.objects.filter(project=project)
        .select_related("created_by")
        .order_by("-number")[: HISTORY_SHOWN + 1]
    )
    current = history[0] if history else None
    error = error_row = None
    rows = None
    note = ""
    if request.method == "POST":
        if not can_write:
            raise PermissionDenied(
                f"Your role ({project.role_label}) may read the rules; experts and data "
                "scientists write them."
            )
        rows, note = _rule_rows_from_post(request.POST)
        try:
            rule_set = rule_set_create(
                project=project, by=request.user, rules=_rules_of(rows), note=note
            )
        except SettingsError as failure:
            error = str(failure)
            error_row = _row_of_error(failure, rows)
        else:
            messages.success(request, f"Saved as rules version {rule_set.number}.")
            return redirect("iterations:rules", project_pk=project.pk)
    if rows is None:
        rows = [
            {
                "pattern": r["pattern"],
                "label": r["label"],
                "weight": _plain(r.get("weight", 1.0)),
                "regex": r.get("regex", False),
                "remove": False,
            }
            for r in (current.rules if current else [])
        ]
    while sum(1 for r in rows if not r["pattern"]) < BLANK_RULE_ROWS:
        rows.append({"pattern": "", "label": "", "weight": "1", "regex": False, "remove": False})
    for index, row in enumerate(rows):
        row["index"] = index
        row["error"] = index == error_row
    versions = []
    for position, rule_set in enumerate(history[:HISTORY_SHOWN]):
        previous = history[position + 1] if position + 1 < len(history) else None
        diff = rules_diff(previous.rules if previous else [], rule_set.rules)
        versions.append({"set": rule_set, "previous": previous, **diff})
    pattern = request.GET.get("pattern", "")[:500]
    preview, preview_error = _preview(project, pattern, bool(request.GET.get("regex")))
    context = {
        "project": project,
        "current": current,
        "pattern": pattern,
        "regex": bool(request.GET.get("regex")),
        "result": preview,
        "preview_error": preview_error,
        "rows": rows,
        "note": note,
        "classes": class_names(project),
        "versions": versions,
        "more_history": len(history) > HISTORY_SHOWN,
        "can_write": can_write,
        "error": error,
        "preview_url": reverse("iterations:rules_preview", kwargs={"project_pk": project.pk}),
    }
    return render(request, "iterations/rules.html", context, status=400 if error else 200)


def _rule_rows_from_post(post):
    try:
        count = min(int(post.get("rule_count", "0")), 1000)
    except ValueError:
        count = 0
    rows = []
    for index in range(count):
        rows.append(
            {
                "pattern": post.get(f"pattern_{index}", "").strip(),
                "label": post.get(f"label_{index}", ""),
                "weight": post.get(f"weight_{index}", "").strip(),
                "regex": bool(post.get(f"regex_{index}")),
                "remove": bool(post.get(f"remove_{index}")),
            }
        )
    return rows, post.get("note", "")[:2000]


def _rules_of(rows):
    """The rules to save: blank rows and rows marked "remove" are left out;
    a weight that is not a number is kept as text so the rules service
    names the rule."""
    rules = []
    for row in rows:
        if not row["pattern"] or row["remove"]:
            continue
        weight = row["weight"] or "1"
        with contextlib.suppress(ValueError):
            weight = float(weight)
        rule = {"pattern": row["pattern"], "label": row["label"], "weight": weight}
        if row["regex"]:
            rule["regex"] = True
        rules.append(rule)
    return rules


def _row_of_error(failure, rows):
    """The form row of the rule the error names (``rules.<n>``, 1-based over
    the rules kept)."""
    field = failure.field or ""
    if not field.startswith("rules."):
        return None
    number = int(field.split(".")[1])
    kept = [i for i, row in enumerate(rows) if row["pattern"] and not row["remove"]]
    return kept[number - 1] if 0 < number <= len(kept) else None


@login_required
@require_GET
def rules_preview(request, project_pk):
    """ "Try a pattern": matches among the labelled samples and their class mix.
    Read-only, so every member may use it; answered as a fragment for htmx."""
    project = get_project_for_user(request.user, project_pk, capability=Capability.VIEW)
    pattern = request.GET.get("pattern", "")[:500]
    regex = bool(request.GET.get("regex"))
    if not request.htmx:
        # Without JavaScript the rules page shows the same result under its form.
        query = urlencode({"pattern": pattern, **({"regex": "1"} if regex else {})})
        return redirect(f"{reverse('iterations:rules', kwargs={'project_pk': project.pk})}?{query}")
    result, error = _preview(project, pattern, regex)
    context = {"project": project, "result": result, "error": error, "pattern": pattern}
    return render(request, "iterations/rules_preview.html", context)


def _preview(project, pattern, regex):
    if not pattern.strip():
        return None, None
    try:
        return rule_preview(project=project, pattern=pattern, regex=regex), None
    except SettingsError as failure:
        return None, str(failure)
