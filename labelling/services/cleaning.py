"""Cleaning: correct a sample's fields (revisions), flag problems, merge duplicates.

Nothing here overwrites: a correction appends a ``SampleRevision`` (the
imported original is kept as revision 1), a flag is a row that is resolved
rather than deleted, and every change is audited.
"""

import math

from django.db import transaction
from django.utils import timezone

from leanml_site.audit import audit_record
from leanml_site.errors import Refusal
from ml.hashing import content_hash

from ..limits import note_too_long, value_too_long
from ..models import Flag, Sample, SampleRevision
from .queue import queue_hold, queue_resume


class CleaningError(Refusal):
    """A refused cleaning request; ``field`` names the input that was wrong."""


# --- Revisions --------------------------------------------------------------------


def _field_kind(project, data, name):
    for spec in project.fields:
        if spec.get("name") == name:
            return spec.get("kind", "text")
    # A field the import kept but the project does not configure: judge a new
    # value by the kind of the value it replaces.
    current = data.get(name)
    if isinstance(current, int | float) and not isinstance(current, bool):
        return "number"
    return "text"


def _coerce(kind, name, value):
    """The value as stored for a field of ``kind``; raises CleaningError naming the field."""
    if value is None:
        return None
    if kind == "number":
        if isinstance(value, bool):
            raise CleaningError(
                f"Field '{name}' is a number; {value!r} is not a number.", field=name
            )
        if isinstance(value, str):
            text = value.strip()
            if text == "":
                return None
            try:
                value = int(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    raise CleaningError(
                        f"Field '{name}' is a number; {value!r} is not a number.", field=name
                    ) from None
        if not isinstance(value, int | float):
            raise CleaningError(
                f"Field '{name}' is a number; {value!r} is not a number.", field=name
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise CleaningError(
                f"Field '{name}' must be a finite number, not {value!r}.", field=name
            )
        return value
    if kind == "category":
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return value
        raise CleaningError(
            f"Field '{name}' is a category; {value!r} is not a category value.", field=name
        )
    if not isinstance(value, str):
        raise CleaningError(f"Field '{name}' is text; {value!r} is not text.", field=name)
    return value


@transaction.atomic
def sample_revise(*, sample, by, changes: dict, note="") -> SampleRevision:
    """Correct one or more data fields of ``sample`` as a new revision.

    1. Lock the sample row, so two concurrent corrections queue up and each
       becomes its own revision (no lost update); the locked row, not the
       caller's possibly stale copy, is the base of the change.
    2. Validate: every field must exist (in the data or the project's fields),
       every value must fit the field's kind and the import's rules (the
       project's text field is never empty, no value is longer than
       ``MAX_VALUE_CHARS``), the note fits ``MAX_NOTE_CHARS``, and something
       must change.
    3. The first correction stores the imported original as revision 1.
    4. Append revision n + 1, then point the sample at it.

    Annotations keep the revision number they were made on, so the sample page
    can show which labels were given to an older text.
    """
    if not isinstance(changes, dict) or not changes:
        raise CleaningError("Give at least one field to correct.", field="changes")
    too_long = note_too_long(note)
    if too_long:
        raise CleaningError(too_long, field="note")
    locked = (
        Sample.objects.select_for_update(of=("self",)).select_related("project").get(pk=sample.pk)
    )
    project = locked.project
    known = set(locked.data) | {spec.get("name") for spec in project.fields}

    updated, before, after = dict(locked.data), {}, {}
    for name, value in changes.items():
        if name not in known:
            raise CleaningError(
                f"Unknown field '{name}' (value {value!r}): this sample has "
                f"{', '.join(sorted(map(str, known))) or 'no fields'}.",
                field=name,
            )
        value = _coerce(_field_kind(project, locked.data, name), name, value)
        if name == project.text_field and (value is None or not value.strip()):
            # The same rule as an import: every sample has a text to label.
            raise CleaningError(
                f"Field '{name}' is the project's text field and needs a value; "
                "it cannot be empty.",
                field=name,
            )
        too_long = value_too_long(value)
        if too_long:
            raise CleaningError(f"Field '{name}': this value {too_long}.", field=name)
        if name in locked.data and locked.data[name] == value:
            continue
        if name not in locked.data and value is None:
            continue
        before[name] = locked.data.get(name)
        after[name] = value
        updated[name] = value
    if not after:
        raise CleaningError(
            "Nothing changed: the new values are the same as the current ones.",
            field=next(iter(changes)),
        )

    if locked.revision == 0:
        SampleRevision.objects.create(
            sample=locked,
            number=1,
            data=locked.data,
            content_hash=locked.content_hash,
            author=None,
            note="as imported",
        )
        locked.revision = 1
    new_hash = content_hash(updated)
    revision = SampleRevision.objects.create(
        sample=locked,
        number=locked.revision + 1,
        data=updated,
        content_hash=new_hash,
        author=by,
        note=note,
    )
    Sample.objects.filter(pk=locked.pk).update(
        data=updated, content_hash=new_hash, revision=revision.number
    )
    # Keep the caller's instance truthful.
    sample.data, sample.content_hash, sample.revision = updated, new_hash, revision.number
    audit_record(
        actor=by,
        project=project,
        action="sample.revise",
        target=locked,
        before=before,
        after={**after, "revision": revision.number, "note": note},
    )
    return revision


# --- Flags ------------------------------------------------------------------------


@transaction.atomic
def sample_flag(*, sample, by, kind, note="", duplicate_of=None) -> Flag:
    """Flag a problem with ``sample`` and exclude it from training until resolved.

    ``duplicate_of`` (a Sample of the same project) is required for the
    ``duplicate`` kind and refused for the others. A note longer than
    ``MAX_NOTE_CHARS`` is refused, never cut short.

    The sample's open queue item is held (``queue_hold``) so nobody is given
    it to label while it is flagged; its leases are released. The audit entry
    of the flag says so under ``queue``.
    """
    if kind not in Flag.Kind.values:
        raise CleaningError(
            f"Unknown flag kind {kind!r}: use one of {', '.join(Flag.Kind.values)}.",
            field="kind",
        )
    too_long = note_too_long(note)
    if too_long:
        raise CleaningError(too_long, field="note")
    locked = Sample.objects.select_for_update().get(pk=sample.pk)
    if kind == Flag.Kind.DUPLICATE:
        if duplicate_of is None:
            raise CleaningError(
                "A duplicate flag needs the sample it duplicates.", field="duplicate_of"
            )
        if duplicate_of.project_id != locked.project_id:
            raise CleaningError(
                f"Sample '{duplicate_of.external_id}' is not in this project.",
                field="duplicate_of",
            )
        if duplicate_of.pk == locked.pk:
            raise CleaningError(
                f"Sample '{locked.external_id}' cannot be a duplicate of itself.",
                field="duplicate_of",
            )
        if Flag.objects.filter(
            sample=duplicate_of,
            kind=Flag.Kind.DUPLICATE,
            duplicate_of=locked,
            resolved_at__isnull=True,
        ).exists():
            # Two samples marked as duplicates of each other would both leave
            # training; one of them has to be the one kept.
            raise CleaningError(
                f"Sample '{duplicate_of.external_id}' is already flagged as a duplicate of "
                f"'{locked.external_id}'; resolve that flag first.",
                field="duplicate_of",
            )
    elif duplicate_of is not None:
        raise CleaningError(
            f"Only a duplicate flag names another sample, not a {kind!r} flag.",
            field="duplicate_of",
        )
    open_same = Flag.objects.filter(sample=locked, kind=kind, resolved_at__isnull=True)
    if kind == Flag.Kind.DUPLICATE:
        open_same = open_same.filter(duplicate_of=duplicate_of)
    existing = open_same.first()
    if existing is not None:
        raise CleaningError(
            f"Sample '{locked.external_id}' already has an open "
            f"'{existing.get_kind_display()}' flag (#{existing.pk}).",
            field="kind",
        )

    flag = Flag.objects.create(
        sample=locked, kind=kind, duplicate_of=duplicate_of, note=note, created_by=by
    )
    status_before = locked.status
    if locked.status != Sample.Status.EXCLUDED:
        Sample.objects.filter(pk=locked.pk).update(status=Sample.Status.EXCLUDED)
    sample.status = Sample.Status.EXCLUDED
    held = queue_hold(sample_id=locked.pk)
    after = {
        "flag": flag.pk,
        "kind": kind,
        "duplicate_of": duplicate_of.external_id if duplicate_of else None,
        "note": note,
        "status": Sample.Status.EXCLUDED,
    }
    before = {"status": status_before}
    if held is not None:
        before["queue"] = {"item": held["item"], "state": "open"}
        after["queue"] = held
    audit_record(
        actor=by,
        project=locked.project,
        action="sample.flag",
        target=locked,
        before=before,
        after=after,
    )
    return flag


@transaction.atomic
def flag_resolve(*, flag, by, resolution) -> Flag:
    """Close ``flag``; its sample returns to training once no other flag is
    open, and its held queue item (if any) to the queue (``queue_resume``):
    the audit entry says so under ``queue``."""
    resolution = (resolution or "").strip()
    if not resolution:
        raise CleaningError("Say how the flag was resolved.", field="resolution")
    too_long = note_too_long(resolution, "The resolution")
    if too_long:
        raise CleaningError(too_long, field="resolution")
    # Lock the sample first (the same order as sample_flag) so a flag raised
    # while this one closes cannot be missed when deciding the status.
    sample = (
        Sample.objects.select_for_update(of=("self",))
        .select_related("project")
        .get(pk=flag.sample_id)
    )
    locked = Flag.objects.select_for_update().get(pk=flag.pk)
    if locked.resolved_at is not None:
        raise CleaningError(f"Flag #{locked.pk} is already resolved.", field="flag")
    locked.resolved_at = timezone.now()
    locked.resolved_by = by
    locked.resolution = resolution
    locked.save(update_fields=["resolved_at", "resolved_by", "resolution"])
    still_open = Flag.objects.filter(sample=sample, resolved_at__isnull=True).exists()
    status = sample.status
    if not still_open and status != Sample.Status.ACTIVE:
        status = Sample.Status.ACTIVE
        Sample.objects.filter(pk=sample.pk).update(status=status)
    resumed = None
    if not still_open:
        resumed = queue_resume(sample_id=sample.pk, overlap=sample.project.overlap)
    flag.resolved_at, flag.resolved_by, flag.resolution = (
        locked.resolved_at,
        by,
        resolution,
    )
    before = {"status": sample.status}
    after = {
        "sample": sample.external_id,
        "kind": locked.kind,
        "resolution": resolution,
        "status": status,
    }
    if resumed is not None:
        before["queue"] = {"item": resumed["item"], "state": "held"}
        after["queue"] = resumed
    audit_record(
        actor=by,
        project=sample.project,
        action="flag.resolve",
        target=locked,
        before=before,
        after=after,
    )
    return locked


@transaction.atomic
def duplicates_merge(*, project, by, keep, duplicates) -> list[Flag]:
    """Keep ``keep`` and flag each of ``duplicates`` as its duplicate.

    Samples already flagged (open) as duplicates of ``keep`` are skipped, so
    merging the same group twice is harmless; returns the new flags.
    """
    if keep.project_id != project.pk:
        raise CleaningError(f"Sample '{keep.external_id}' is not in this project.", field="keep")
    duplicates = [d for d in dict.fromkeys(duplicates) if d.pk != keep.pk]
    if not duplicates:
        raise CleaningError("Choose at least one duplicate besides the kept sample.")
    for duplicate in duplicates:
        if duplicate.project_id != project.pk:
            raise CleaningError(
                f"Sample '{duplicate.external_id}' is not in this project.", field="duplicates"
            )
    already = set(
        Flag.objects.filter(
            sample__in=duplicates,
            kind=Flag.Kind.DUPLICATE,
            duplicate_of=keep,
            resolved_at__isnull=True,
        ).values_list("sample_id", flat=True)
    )
    flags = [
        sample_flag(
            sample=duplicate,
            by=by,
            kind=Flag.Kind.DUPLICATE,
            duplicate_of=keep,
            note=f"Merged into '{keep.external_id}'.",
        )
        for duplicate in duplicates
        if duplicate.pk not in already
    ]
    audit_record(
        actor=by,
        project=project,
        action="duplicates.merge",
        target=keep,
        after={
            "keep": keep.external_id,
            "flagged": [f.sample.external_id for f in flags],
            "skipped": [d.external_id for d in duplicates if d.pk in already],
        },
    )
    return flags
