import math
import re

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction

from leanml_site.audit import audit_record
from leanml_site.errors import Refusal
from leanml_site.roles import Role

from ..models import LabelClass, Membership, Project, Sample

# Keys the labelling page itself uses (skip, flag, undo, help): no class may have one.
RESERVED_HOTKEYS = frozenset({"s", "f", "z", "?"})
# A handed-out sample stays reserved this long at least: time to read it.
MIN_LEASE_SECONDS = 30
_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


class ProjectError(Refusal):
    """A refused project or label-class change. ``field`` names the input at
    fault: a project's ``overlap`` or ``fields``, a class's ``name`` or
    ``hotkey``, ``label_classes.2.name`` for the third class given to
    ``project_create``."""


def project_problems(values) -> list[tuple[str, str]]:
    """What is wrong with these project settings: ``(field, message)`` for
    each number out of bounds, checking only the keys given. The one place
    these bounds live: the services refuse the first problem, the project
    form shows each beside its input (before the database's own constraints,
    whose names mean nothing to people, could)."""
    problems = []
    if "overlap" in values and not _at_least(values["overlap"], 1):
        problems.append(("overlap", "Overlap must be at least 1."))
    if "holdout_fraction" in values:
        value = values["holdout_fraction"]
        if not (_is_number(value) and math.isfinite(value) and 0 <= value < 1):
            problems.append(
                ("holdout_fraction", "The holdout fraction must be at least 0 and below 1.")
            )
    if "lease_seconds" in values and not _at_least(values["lease_seconds"], MIN_LEASE_SECONDS):
        problems.append(
            (
                "lease_seconds",
                f"A lease must last at least {MIN_LEASE_SECONDS} seconds, "
                "time for an annotator to read the sample.",
            )
        )
    return problems


def _is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def _at_least(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _refuse_problems(values):
    problems = project_problems(values)
    if problems:
        field, message = problems[0]
        raise ProjectError(message, field=field)


def _full_clean(instance, prefix=""):
    """``full_clean()``, its first error as a ProjectError on its field."""
    try:
        instance.full_clean()
    except DjangoValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        field = None if field == NON_FIELD_ERRORS else prefix + field
        raise ProjectError(messages[0], field=field) from None


def _refuse_fields_change(stored, fields):
    """A project's field list may change freely until it has samples. Then it
    keeps every field a sample holds (``"shown": false`` hides one) and, if it
    had one, a text field: search, the review lists and text models read it."""
    samples = Sample.objects.filter(project=stored)
    count = samples.count() if fields != stored.fields else 0
    if not count:
        return
    if not fields:
        raise ProjectError(
            f"This project has {count:,} samples: it needs its fields. An empty list "
            "suits only a project without samples, whose first import sets them.",
            field="fields",
        )
    kept = {spec["name"] for spec in fields}
    for spec in stored.fields:
        name = spec.get("name")
        if name in kept:
            continue
        holding = samples.filter(data__has_key=name).count()
        if holding:
            raise ProjectError(
                f"{holding:,} samples hold the field '{name}': it cannot be removed. "
                'Give it "shown": false to hide it.',
                field="fields",
            )
    if stored.text_field and not any(spec.get("kind", "text") == "text" for spec in fields):
        raise ProjectError(
            f"A project needs a text field: keep '{stored.text_field}' (or another field) "
            'of kind "text". Search, the review lists and text models read it.',
            field="fields",
        )


def _refuse_label_class(label_class, others, *, prefix="", listed=False):
    """Refuse a class whose name or key clashes with one of ``others`` (the
    project's other classes, or those listed before it), whose key the
    labelling page keeps for itself, or whose colour is no #rrggbb."""
    name = label_class.name = (label_class.name or "").strip()
    hotkey = label_class.hotkey = (label_class.hotkey or "").strip().lower()
    if not name:
        raise ProjectError("A class needs a name.", field=f"{prefix}name")
    if hotkey in RESERVED_HOTKEYS:
        raise ProjectError(
            f"Key {hotkey} is the labelling page's own (s skip, f flag, z undo, ? help); "
            "choose another.",
            field=f"{prefix}hotkey",
        )
    if not _COLOUR.fullmatch(label_class.colour or ""):
        raise ProjectError(
            f"The colour must be # and six hex digits, like #4f6df5, not '{label_class.colour}'.",
            field=f"{prefix}colour",
        )
    for other in others:
        if other.pk is not None and other.pk == label_class.pk:
            continue
        # Names that differ in case only ("Great", "great") would read as
        # one class on every page and in every report.
        if other.name.casefold() == name.casefold():
            if other.name == name:
                message = (
                    f"Two classes are named '{name}'."
                    if listed
                    else f"A class named '{name}' already exists."
                )
            else:
                message = f"'{other.name}' and '{name}' differ only in case: name one class once."
            raise ProjectError(message, field=f"{prefix}name")
        if hotkey and other.hotkey.lower() == hotkey:
            message = (
                f"Two classes use key {hotkey}: '{other.name}' and '{name}'."
                if listed
                else f"Key {hotkey} is already used by '{other.name}'."
            )
            raise ProjectError(message, field=f"{prefix}hotkey")
    _full_clean(label_class, prefix)


@transaction.atomic
def project_create(*, by, name, label_classes=(), **fields) -> Project:
    """Create a project with its label classes; the creator becomes its owner.
    Classes are names or dicts of LabelClass fields; a class without a hotkey
    gets the next of 1-9 no listed class claims."""
    _refuse_problems(fields)
    project = Project(name=name, created_by=by, **fields)
    _full_clean(project)
    project.save()
    Membership.objects.create(project=project, user=by, role=Role.OWNER)
    specs = [{"name": spec} if isinstance(spec, str) else dict(spec) for spec in label_classes]
    claimed = {str(spec.get("hotkey") or "").strip().lower() for spec in specs}
    free = iter(key for key in "123456789" if key not in claimed)
    classes = []
    for order, spec in enumerate(specs):
        if "hotkey" not in spec:
            spec["hotkey"] = next(free, "") if order < 9 else ""
        spec.setdefault("order", order)
        label_class = LabelClass(project=project, **spec)
        # A refusal rolls the whole creation back: nothing is saved.
        _refuse_label_class(label_class, classes, prefix=f"label_classes.{order}.", listed=True)
        label_class.save()
        classes.append(label_class)
    audit_record(
        actor=by,
        project=project,
        action="project.create",
        target=project,
        after={"name": name, "label_classes": [c.name for c in classes]},
    )
    return project


@transaction.atomic
def project_update(*, project, by, **changes) -> Project:
    """Change a project's settings. The holdout fraction is fixed at creation:
    each sample's split was drawn with it, so a new one would move nothing."""
    stored = Project.objects.select_for_update().get(pk=project.pk)
    if "holdout_fraction" in changes and changes["holdout_fraction"] != stored.holdout_fraction:
        raise ProjectError(
            "The split is fixed when a project is created.", field="holdout_fraction"
        )
    _refuse_problems(changes)
    before = {key: getattr(stored, key) for key in changes}
    for key, value in changes.items():
        setattr(project, key, value)
    _full_clean(project)
    if "fields" in changes:
        _refuse_fields_change(stored, changes["fields"])
    project.save()
    audit_record(
        actor=by,
        project=project,
        action="project.update",
        target=project,
        before=before,
        after=changes,
    )
    return project


@transaction.atomic
def label_class_save(*, label_class, by) -> LabelClass:
    """Add or change a label class; one whose name or key another class of
    the project has is refused, naming that class."""
    created = label_class.pk is None
    others = LabelClass.objects.filter(project=label_class.project_id)
    _refuse_label_class(label_class, others)
    try:
        with transaction.atomic():
            label_class.save()
    except IntegrityError:
        # The same name or key, saved by someone else since the check.
        _refuse_label_class(label_class, others.all())
        raise
    audit_record(
        actor=by,
        project=label_class.project,
        action="label_class.create" if created else "label_class.update",
        target=label_class,
        after={"name": label_class.name, "hotkey": label_class.hotkey},
    )
    return label_class


@transaction.atomic
def membership_set(*, project, user, role, by) -> Membership:
    """Add ``user`` to the project or change their role."""
    membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
    before = {"role": membership.role} if membership else None
    if membership is None:
        membership = Membership.objects.create(project=project, user=user, role=role)
    else:
        _refuse_last_owner_change(membership, new_role=role)
        membership.role = role
        membership.save(update_fields=["role"])
    audit_record(
        actor=by,
        project=project,
        action="membership.set",
        target=membership,
        before=before,
        after={"user": user.get_username(), "role": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership, by) -> None:
    _refuse_last_owner_change(membership, new_role=None)
    audit_record(
        actor=by,
        project=membership.project,
        action="membership.remove",
        target=membership,
        before={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()


def _refuse_last_owner_change(membership, *, new_role):
    if membership.role != Role.OWNER or new_role == Role.OWNER:
        return
    owners = Membership.objects.filter(project=membership.project_id, role=Role.OWNER).count()
    if owners <= 1:
        raise ValueError("A project keeps at least one owner: make someone else owner first.")
