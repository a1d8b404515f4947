"""Phase 1 of an import: validate every row and prepare what will be written.

Nothing here touches the project's tables. Prepared new samples go to a
staging area (a temporary table filled by COPY on PostgreSQL, a pickle spool of
our own elsewhere); existing ones under the "update" policy to a spool.
"""

import contextlib
import hashlib
import json
import math
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from json.encoder import encode_basestring as _json_string

from django.db import connection
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format

from ml.hashing import split_for

from ...limits import MAX_VALUE_CHARS, value_too_long
from ...models import ImportJob, Sample
from ..consensus import decide
from .reading import read_frames, shorten

BATCH = 5000  # rows per database round trip
_UNLABELLED = str(Sample.Consensus.NONE)

# A number as people write one; "007" stays text (a code, not the number 7).
_NUMBER_RE = re.compile(r"[+-]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INT_RE = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")

# --- Values -----------------------------------------------------------------------


def _missing(value):
    if value is None:
        return True
    if isinstance(value, float):
        return value != value  # NaN: pandas' "no value here"
    if isinstance(value, str):
        return not value.strip()
    return False


def _external_id(value):
    if _missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # pandas turns an int column with gaps into floats
    return str(value).strip() if isinstance(value, str) else str(value)


def _number(value):
    """The value as an int or float; integral values become ints, so "5",
    5 and 5.0 from any format store (and hash) alike."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("is not a number")
    if isinstance(value, str):
        text = value.strip()
        if _INT_RE.fullmatch(text):
            return int(text)
        if not _NUMBER_RE.fullmatch(text):
            raise ValueError("is not a number")
        value = float(text)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("is not a finite number")
        if value.is_integer():
            return int(value)
    return value


def _text(value):
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    raise ValueError("is not text (a list or object)")


def _raw(value):
    """A column the project does not configure: kept as the file gave it."""
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _no_nul(text):
    if "\x00" in text:
        raise ValueError("contains a NUL character (\\x00), which cannot be stored")
    if len(text) > MAX_VALUE_CHARS:
        raise ValueError(value_too_long(text))
    return text


_CONVERTERS = {"number": _number, "text": _text, "category": _text, "raw": _raw}
# The same for a string cell, the common case, on the fast path.
_STRING_CONVERTERS = {"number": _number, "text": _no_nul, "category": _no_nul, "raw": _no_nul}


def _is_numeric(value):
    if isinstance(value, str):
        return bool(_NUMBER_RE.fullmatch(value.strip()))
    return isinstance(value, int | float) and not isinstance(value, bool)


# canonical_json's encoder, built once: json.dumps builds a new one per call,
# and a 1,000,000-row import serialises every row. A test keeps them equal.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
)


def _json_value(value):
    # A string (nearly every cell) goes straight to the encoder's own C
    # string escaper; anything else through the canonical encoder.
    return _json_string(value) if value.__class__ is str else _CANONICAL.encode(value)


def fast_canonical_json(data):
    """canonical_json(data) for a dict with string keys, built from its
    members: the same text, about a third faster on rows of text cells."""
    return (
        "{" + ",".join([_json_string(k) + ":" + _json_value(data[k]) for k in sorted(data)]) + "}"
    )


def hash_text(text):
    # The same digest as ml.hashing.content_hash(data), which hashes
    # canonical_json(data): taken from the text we store, so each row is
    # serialised once.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Plan:
    """What the file will do to the project, known before anything is written."""

    kinds: dict  # field name -> text / number / category
    text_field: str | None
    new_fields: list | None  # set on the project (its first import)
    classes: dict  # label name -> LabelClass id
    fresh: bool  # the project had no samples when reading began
    rows: int = 0
    created: int = 0
    to_update: int = 0
    unchanged: int = 0
    skipped: int = 0
    labelled_new: int = 0
    duplicates: int = 0
    seen_ids: dict = field(default_factory=dict)  # external id -> row
    seen_hashes: set = field(default_factory=set)
    # With no label column chosen: column -> [values seen, first value that
    # is no class of the project (None while every value is one)].
    label_like: dict = field(default_factory=dict)


def infer_fields(path, options, progress):
    """Fields for a project that has none yet: a column is a number when every
    value in it is one, else text."""
    order, numeric = [], {}
    for _start, frame in read_frames(path, options, progress):
        for name in frame.columns:
            if name in (options.frame_id, options.frame_label):
                continue
            if name not in numeric:
                order.append(name)
                numeric[name] = True
            if numeric[name]:
                values = [v for v in frame[name].tolist() if not _missing(v)]
                numeric[name] = all(map(_is_numeric, values))
    return [
        {"name": name, "kind": "number" if numeric[name] else "text", "shown": True}
        for name in order
    ]


def check_columns(columns, options, plan):
    if options.frame_id not in columns:
        raise options.error(
            f"there is no id column “{options.id_column}”. The file's columns are: "
            f"{', '.join(map(str, columns))}. Choose the column that holds each row's id.",
            column=options.id_column,
        )
    if options.frame_label and options.frame_label not in columns:
        raise options.error(
            f"there is no label column “{options.label_column}”. The file's columns are: "
            f"{', '.join(map(str, columns))}.",
            column=options.label_column,
        )
    if plan.text_field and plan.text_field not in columns:
        raise options.error(
            f"there is no column “{plan.text_field}”, the project's text field. The file's "
            f"columns are: {', '.join(map(str, columns))}.",
            column=plan.text_field,
        )


# Column names people give labels; such a column imported as sample data is
# worth a warning whatever its values.
LABEL_NAMES = {"label", "labels"}


def _named_like_labels(name):
    return isinstance(name, str) and name.strip().lower() in LABEL_NAMES


def _watch_label_like(data_columns, options, plan):
    """With no label column chosen, follow the columns that may hold labels:
    one named like labels, or one whose every value is a class of the
    project. Stops looking at a column at its first value that is no class,
    so a column of free text costs one value per chunk."""
    if options.frame_label or options.fmt == ImportJob.Format.LABEL_STUDIO:
        return
    classes = plan.classes
    for name, _key, _string, _convert, values in data_columns:
        if name == plan.text_field:
            continue
        seen = plan.label_like.setdefault(name, [0, None])
        if seen[1] is not None:
            continue
        count = 0
        for value in values:
            if value.__class__ is str:
                value = value.strip()
                if not value:
                    continue
            elif _missing(value):
                continue
            elif isinstance(value, bool) or not isinstance(value, int | float):
                seen[1] = value
                break
            else:
                value = _text(value)
            if value not in classes:
                seen[1] = value
                break
            count += 1
        seen[0] += count


def label_like_warnings(plan):
    """(column, warning) for the columns _watch_label_like found, by name."""
    warnings = []
    for name, (count, other) in plan.label_like.items():
        shown = shorten(str(name), 80)
        if other is None and count:
            warnings.append(
                (
                    name,
                    f"Column “{shown}” looks like labels ("
                    + (
                        "its one value is a class of this project"
                        if count == 1
                        else f"all {count:,} values are classes of this project"
                    )
                    + ") but was imported as sample data; choose it as the label column to "
                    "import labels.",
                ),
            )
        elif _named_like_labels(name) and (count or other is not None):
            warnings.append(
                (
                    name,
                    f"Column “{shown}” is named like a label column but was imported as sample "
                    f"data: no label column was chosen. Not all its values are classes of this "
                    f"project (“{shorten(str(other), 80)}” is not); to import labels, choose it "
                    "as the label column once they are.",
                ),
            )
    return warnings


def _prepare_chunk(start, frame, options, plan):
    """Validate one chunk; returns [(row, external id, data, label id, JSON text)]."""
    n = len(frame)
    columns = list(frame.columns)
    if start == 0:
        check_columns(columns, options, plan)
    # A later JSON Lines chunk may lack a key altogether: its rows simply have
    # no value there (and fail below if that value is required).
    absent = [None] * n
    ids = frame[options.frame_id].tolist() if options.frame_id in columns else absent
    labels = (
        frame[options.frame_label].tolist()
        if options.frame_label and options.frame_label in columns
        else None
    )
    # In key order, so each row's canonical JSON is built as its dict is.
    data_columns = [
        (
            name,
            _json_string(name) + ":",
            _STRING_CONVERTERS[plan.kinds.get(name, "raw")],
            _CONVERTERS[plan.kinds.get(name, "raw")],
            frame[name].tolist(),
        )
        for name in sorted(columns)
        if name not in (options.frame_id, options.frame_label)
    ]
    _watch_label_like(data_columns, options, plan)
    rows = []
    for i in range(n):
        row = start + i + 1
        raw_id = ids[i]
        # A CSV id is a string: stripped, and empty when only blanks.
        external_id = (raw_id.strip() or None) if raw_id.__class__ is str else _external_id(raw_id)
        if external_id is None:
            raise options.error(
                "the id is empty; every row needs one.", row=row, column=options.frame_id, value=""
            )
        if len(external_id) > 255:
            raise options.error(
                "the id is longer than 255 characters.",
                row=row,
                column=options.frame_id,
                value=external_id,
            )
        first = plan.seen_ids.get(external_id)
        if first is not None:
            raise options.error(
                f"the id “{shorten(external_id, 80)}” repeats row {first}; ids must be unique.",
                row=row,
                column=options.frame_id,
                value=external_id,
            )
        plan.seen_ids[external_id] = row
        if "\x00" in external_id:
            raise options.error(
                "the id contains a NUL character (\\x00), which cannot be stored.",
                row=row,
                column=options.frame_id,
                value=external_id,
            )
        data, members = {}, []
        for name, json_key, convert_string, convert, values in data_columns:
            value = values[i]
            try:
                if value.__class__ is str:  # every CSV cell: the fast path
                    if not value or value.isspace():
                        continue
                    value = convert_string(value)
                elif _missing(value):
                    continue
                else:
                    value = convert(value)
            except ValueError as exc:
                kind = plan.kinds.get(name, "raw")
                raise options.error(
                    f"“{shorten(str(value), 80)}” {exc}; this field's kind is {kind}.",
                    row=row,
                    column=name,
                    value=value,
                ) from None
            data[name] = value
            members.append(
                json_key + (_json_string(value) if value.__class__ is str else _json_value(value))
            )
        if plan.text_field and plan.text_field not in data:
            raise options.error(
                "the text is empty; the project's text field needs a value in every row.",
                row=row,
                column=plan.text_field,
                value="",
            )
        label_id = None
        if labels is not None and not _missing(labels[i]):
            name = str(labels[i]).strip()
            label_id = plan.classes.get(name)
            if label_id is None:
                raise options.error(
                    f"unknown label “{shorten(name, 80)}”; the project's labels are "
                    f"{', '.join(plan.classes) or '(none yet: add label classes first)'}.",
                    row=row,
                    column=options.frame_label,
                    value=name,
                )
        # The stored text and the hash's input: fast_canonical_json(data).
        rows.append((row, external_id, data, label_id, "{" + ",".join(members) + "}"))
    return rows


class Spool:
    """Prepared rows in a temporary file of our own, read back in phase 2."""

    def __init__(self):
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.count = 0

    def add(self, rows):
        if rows:
            pickle.dump(rows, self.file, protocol=pickle.HIGHEST_PROTOCOL)
            self.count += len(rows)

    def __iter__(self):
        self.file.seek(0)
        while True:
            try:
                # Only ever our own pickles of validated rows, written above.
                yield pickle.load(self.file)  # noqa: S301
            except EOFError:
                return

    def close(self):
        self.file.close()


class _JsonTextDumper(Dumper):
    """Binary COPY of JSON we already serialised into a jsonb column.

    jsonb's binary form is a version byte (1) and the JSON text, so the
    server parses the text while Python reads on (instead of phase 2 doing
    it), and Python does not serialise the row a second time."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj):
        return b"\x01" + obj.encode("utf-8")


class PostgresStage:
    """New samples, streamed by COPY into a temporary table during phase 1.

    Sample ids come from the sample table's own sequence (the staging
    column's default), taken in file order, so the queue items and
    annotations can refer to them before the samples exist, and the samples
    keep the file's order. A failed import only leaves gaps in the ids.
    """

    table = "leanml_import_stage"
    columns = (
        "external_id",
        "data",
        "content_hash",
        "split",
        "consensus_state",
        "consensus_label_id",
        "label_id",
    )

    def __init__(self):
        self.count = 0
        self.labelled = 0
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [Sample._meta.db_table])
            sequence = cursor.fetchone()[0]
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")
            cursor.execute(
                f"CREATE TEMPORARY TABLE {self.table} ("
                "id bigint NOT NULL DEFAULT nextval(%s::regclass), external_id text, data jsonb, "
                "content_hash text, split text, consensus_state text, "
                "consensus_label_id bigint, label_id bigint)",
                [sequence],
            )

    def add(self, rows):
        if not rows:
            return
        with connection.cursor() as cursor:
            cursor.adapters.register_dumper(None, _JsonTextDumper)
            # Binary COPY: text goes as it is, with no escaping to do.
            statement = f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(statement) as copy:
                copy.set_types(["text", "jsonb", "text", "text", "text", "int8", "int8"])
                for row in rows:
                    copy.write_row(row)
        self.count += len(rows)
        self.labelled += sum(1 for row in rows if row[6] is not None)

    def close(self):
        with contextlib.suppress(Exception), connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")


def _existing(project, external_ids):
    """external id -> (pk, content hash) of the project's samples among them."""
    found = {}
    for start in range(0, len(external_ids), BATCH):
        batch = external_ids[start : start + BATCH]
        for external_id, pk, digest in Sample.objects.filter(
            project=project, external_id__in=batch
        ).values_list("external_id", "id", "content_hash"):
            found[external_id] = (pk, digest)
    return found


def _existing_hashes(project, hashes):
    """content hash -> external ids of existing samples that have it."""
    found = {}
    for start in range(0, len(hashes), BATCH):
        batch = hashes[start : start + BATCH]
        for digest, external_id in Sample.objects.filter(
            project=project, content_hash__in=batch
        ).values_list("content_hash", "external_id"):
            found.setdefault(digest, set()).add(external_id)
    return found


def prepare(project, path, options, plan, new_rows, updates, report):
    """Phase 1: read, validate, sort each row into new / update / skip."""
    holdout = project.holdout_fraction
    overlap = project.overlap
    update = options.policy == ImportJob.Policy.UPDATE

    def progress(fraction):
        report(0.05 + 0.5 * fraction, f"Reading and checking rows ({plan.rows:,} so far)")

    seen_hashes = plan.seen_hashes
    for start, frame in read_frames(path, options, progress):
        rows = _prepare_chunk(start, frame, options, plan)
        plan.rows += len(rows)
        digests = [hash_text(r[4]) for r in rows]
        existing = {} if plan.fresh else _existing(project, [r[1] for r in rows])
        # Exact duplicates: rows whose content another sample (earlier in the
        # file, or already in the project) has; imported, and reported.
        others = {}
        if not plan.fresh:
            kept = {d for r, d in zip(rows, digests, strict=True) if update or r[1] not in existing}
            others = _existing_hashes(project, list(kept))
        staged, to_update = [], []
        for (_row, external_id, data, label_id, text), digest in zip(rows, digests, strict=True):
            found = existing.get(external_id) if existing else None
            if found is not None:
                if not update:
                    plan.skipped += 1
                    continue
                data_changed = digest != found[1]
                if data_changed:
                    plan.to_update += 1
                else:
                    plan.unchanged += 1
                if data_changed or label_id is not None:
                    to_update.append((found[0], data, digest, label_id, data_changed))
                if not data_changed:
                    continue
            if digest in seen_hashes or (others and others.get(digest, set()) - {external_id}):
                plan.duplicates += 1
            else:
                seen_hashes.add(digest)
            if found is not None:
                continue  # an update: written in phase 2
            if label_id is None:
                state, consensus_label = _UNLABELLED, None
            else:
                # A new sample's only label is this one; the same rule as
                # consensus_refresh, without a query per sample.
                state, consensus_label = decide([label_id], overlap=overlap)
                plan.labelled_new += 1
            staged.append(
                (
                    external_id,
                    text,
                    digest,
                    split_for(external_id, holdout),
                    state,
                    consensus_label,
                    label_id,
                )
            )
        plan.created += len(staged)
        updates.add(to_update)
        new_rows.add(staged)
    if plan.rows == 0:
        raise options.error("the file has no data rows.")
