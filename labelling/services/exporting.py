"""Export samples with their labels and consensus as CSV, JSON Lines or
Label Studio JSON.

Every export is a generator of text chunks for a streaming response: samples
are read in keyset batches (``id > last``), each with one query for its
annotations, so memory stays flat and the first bytes leave at once however
large the project is.

CSV cells that a spreadsheet would run as a formula (starting with = + - @,
tab or carriage return) get a leading single quote, as OWASP recommends;
numbers from number fields are written as numbers.
"""

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date

from django.contrib.auth import get_user_model

from ..models import Annotation, LabelClass, Sample

BATCH = 5000

FORMATS = {
    "csv": ("text/csv; charset=utf-8", "csv"),
    "jsonl": ("application/x-ndjson; charset=utf-8", "jsonl"),
    "label_studio": ("application/json; charset=utf-8", "json"),
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Consensus a Label Studio user can take as the answer (its "ground truth").
_SETTLED = {
    Sample.Consensus.AGREED,
    Sample.Consensus.MAJORITY,
    Sample.Consensus.ADJUDICATED,
    Sample.Consensus.GOLD,
}


@dataclass
class Export:
    chunks: object  # an iterator of str
    content_type: str
    filename: str


def csv_safe(value):
    """A cell a spreadsheet shows as text, never runs as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value  # a number is never a formula, and "-3" stays a number
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _annotators(project):
    """(id, username) of everyone with an annotation in the project, by name."""
    ids = (
        Annotation.objects.filter(project=project)
        .order_by()
        .values_list("annotator_id", flat=True)
        .distinct()
    )
    return list(
        get_user_model()
        .objects.filter(id__in=ids)
        .order_by("username")
        .values_list("id", "username")
    )


def _batches(project, batch_size):
    """Lists of (sample row, {annotator id: label id}) in id order; a latest
    annotation that is a skip means that annotator has no label."""
    last = 0
    while True:
        rows = list(
            Sample.objects.filter(project=project, id__gt=last)
            .order_by("id")
            .values_list(
                "id",
                "external_id",
                "data",
                "split",
                "status",
                "consensus_state",
                "consensus_label_id",
            )[:batch_size]
        )
        if not rows:
            return
        first, last = rows[0][0], rows[-1][0]
        current = {}
        # An id range, not an IN list of the batch: one index range scan on
        # sample_id, and no thousands of parameters to bind.
        for sample_id, annotator_id, label_id in (
            Annotation.objects.filter(project=project, sample_id__gte=first, sample_id__lte=last)
            .order_by("id")
            .values_list("sample_id", "annotator_id", "label_id")
        ):
            current.setdefault(sample_id, {})[annotator_id] = label_id
        yield [(row, current.get(row[0], {})) for row in rows]


def _field_names(project):
    names = [f["name"] for f in project.fields]
    if names:
        return names
    # No fields configured: the keys of the first samples, in order of appearance.
    seen = {}
    for data in (
        Sample.objects.filter(project=project).order_by("id").values_list("data", flat=True)[:BATCH]
    ):
        for key in data:
            seen.setdefault(key, None)
    return list(seen)


def export_csv(*, project, batch_size=BATCH):
    """Columns: external_id, split, status, consensus_state, consensus_label,
    each data field, then one ``label:<username>`` column per annotator."""
    classes = dict(LabelClass.objects.filter(project=project).values_list("id", "name"))
    fields = _field_names(project)
    annotators = _annotators(project)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        csv_safe(name)
        for name in [
            "external_id",
            "split",
            "status",
            "consensus_state",
            "consensus_label",
            *fields,
            *(f"label:{username}" for _, username in annotators),
        ]
    )
    for batch in _batches(project, batch_size):
        for (_pk, external_id, data, split, status, state, label_id), labels in batch:
            writer.writerow(
                [
                    csv_safe(external_id),
                    split,
                    status,
                    state,
                    csv_safe(classes.get(label_id)),
                    *(csv_safe(data.get(name)) for name in fields),
                    *(csv_safe(classes.get(labels.get(user_id))) for user_id, _ in annotators),
                ]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def export_jsonl(*, project, batch_size=BATCH):
    """One object per sample: ids, split, status, consensus, data and
    ``labels`` ({username: label} of each annotator's current label)."""
    classes = dict(LabelClass.objects.filter(project=project).values_list("id", "name"))
    names = dict(_annotators(project))
    for batch in _batches(project, batch_size):
        lines = []
        for (_pk, external_id, data, split, status, state, label_id), labels in batch:
            record = {
                "external_id": external_id,
                "split": split,
                "status": status,
                "consensus_state": state,
                "consensus_label": classes.get(label_id),
                "data": data,
                "labels": {
                    names[user_id]: classes[label]
                    for user_id, label in labels.items()
                    if label is not None
                },
            }
            lines.append(json.dumps(record, ensure_ascii=False))
        yield "\n".join(lines) + "\n"


def _choice(name, to_name):
    return [
        {
            "from_name": "label",
            "to_name": to_name,
            "type": "choices",
            "value": {"choices": [name]},
        }
    ]


def export_label_studio(*, project, batch_size=BATCH):
    """A JSON list of Label Studio tasks. ``data`` holds the sample's fields
    and its external id (under ``id``, or ``external_id`` when the project has
    a field called ``id``); each annotator's current label is an annotation
    with a ``choices`` result; a settled consensus is one more annotation
    marked ``ground_truth``, which LeanML's import takes as the label."""
    classes = dict(LabelClass.objects.filter(project=project).values_list("id", "name"))
    names = dict(_annotators(project))
    to_name = project.text_field or "text"
    id_key = "external_id" if any(f["name"] == "id" for f in project.fields) else "id"
    first = True
    yield "["
    for batch in _batches(project, batch_size):
        tasks = []
        for (pk, external_id, data, split, status, state, label_id), labels in batch:
            annotations = [
                {
                    "result": _choice(classes[label], to_name),
                    "was_cancelled": False,
                    "ground_truth": False,
                }
                for _user, label in sorted(labels.items())
                if label is not None
            ]
            if label_id is not None and state in _SETTLED:
                annotations.append(
                    {
                        "result": _choice(classes[label_id], to_name),
                        "was_cancelled": False,
                        "ground_truth": True,
                    }
                )
            task = {
                "id": pk,
                "data": {id_key: external_id, **data},
                "annotations": annotations,
                "meta": {
                    "external_id": external_id,
                    "split": split,
                    "status": status,
                    "consensus_state": state,
                    "consensus_label": classes.get(label_id),
                    "labels": {
                        names[user_id]: classes[label]
                        for user_id, label in labels.items()
                        if label is not None
                    },
                },
            }
            tasks.append(json.dumps(task, ensure_ascii=False))
        yield ("\n" if first else ",\n") + ",\n".join(tasks)
        first = False
    yield "\n]\n"


_EXPORTERS = {"csv": export_csv, "jsonl": export_jsonl, "label_studio": export_label_studio}


def export_stream(*, project, fmt, batch_size=BATCH) -> Export:
    """The export of ``project`` in ``fmt`` (csv, jsonl or label_studio);
    raises ValueError for another format."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}.")
    content_type, extension = FORMATS[fmt]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", project.name).strip("-").lower() or "project"
    suffix = "-label-studio" if fmt == "label_studio" else ""
    return Export(
        chunks=_EXPORTERS[fmt](project=project, batch_size=batch_size),
        content_type=content_type,
        filename=f"{slug}-{date.today():%Y-%m-%d}{suffix}.{extension}",
    )
