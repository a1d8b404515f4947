"""Import samples from CSV, JSON, JSON Lines and Label Studio JSON exports.

All-or-nothing, in two phases:

1. Read the file once, in chunks, through pandas; validate every row and
   prepare exactly what will be written (data, content hash, split, label,
   consensus). The project's tables are not touched: the first bad row stops
   the import with its file, row, column and value. On PostgreSQL the
   prepared rows stream by COPY into a session-local temporary table, so the
   server parses them while Python reads on; elsewhere they are pickled to a
   temporary file of our own.
2. Write everything in one transaction: on PostgreSQL set-based
   ``INSERT … SELECT`` from the staging table (a 1,000,000-row CSV at close to
   COPY speed, without a Python object per row), elsewhere ``bulk_create``.

Rows are counted from 1 at the first data row: in a CSV opened in a
spreadsheet, row N is spreadsheet row N + 1 (the header is spreadsheet row 1);
in JSON and JSON Lines it is the Nth object.
"""

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import pickle
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from leanml_site.audit import audit_record
from ml.hashing import split_for

from ..models import (
    Annotation,
    ImportJob,
    LabelClass,
    Project,
    QueueItem,
    Sample,
    SampleRevision,
    validate_field_config,
)
from .consensus import consensus_refresh, decide
from .queue import queue_add

logger = logging.getLogger(__name__)

CHUNK_ROWS = 50_000  # rows pandas hands over at a time: bounded memory per chunk
BATCH = 5000  # rows per database round trip
# The Celery task's hard limit; a job still "running" well after it was
# started belongs to a worker that died, and its transaction was rolled back.
RUN_SOFT_TIME_LIMIT = 1800
RUN_TIME_LIMIT = 1900
STALE_AFTER = timedelta(seconds=RUN_TIME_LIMIT + 120)

FORMAT_BY_EXTENSION = {
    ".csv": ImportJob.Format.CSV,
    ".json": ImportJob.Format.JSON,
    ".jsonl": ImportJob.Format.JSONL,
    ".ndjson": ImportJob.Format.JSONL,
}
# Label Studio rows get their id and label from the task, not from a column.
_TASK_ID = "\x00task id"
_TASK_LABEL = "\x00task label"

# A number as people write one; "007" stays text (a code, not the number 7).
_NUMBER_RE = re.compile(r"[+-]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INT_RE = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")


class ImportFileError(Exception):
    """Why a file cannot be imported, and where: ``file``, 1-based data ``row``,
    ``column`` and ``value`` (each None when it does not apply)."""

    def __init__(self, problem, *, file="", row=None, column=None, value=None, csv_rows=False):
        self.problem = problem
        self.file = file
        self.row = row
        self.column = column
        self.value = None if value is None else _shorten(str(value), 200)
        self.csv_rows = csv_rows
        super().__init__(self.message)

    @property
    def message(self):
        where = [self.file] if self.file else []
        if self.row is not None:
            where.append(
                f"row {self.row} (spreadsheet row {self.row + 1})"
                if self.csv_rows
                else f"row {self.row}"
            )
        if self.column is not None:
            where.append(f"column “{self.column}”")
        return f"{', '.join(where)}: {self.problem}" if where else self.problem

    def as_dict(self):
        return {
            "message": self.message,
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "file": self.file,
        }


def _shorten(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def detect_format(name) -> str | None:
    return FORMAT_BY_EXTENSION.get(Path(name).suffix.lower())


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


def _canonical_json(data):
    return _CANONICAL.encode(data)


def _hash_text(text):
    # The same digest as ml.hashing.content_hash(data), which hashes
    # canonical_json(data): taken from the text we store, so each row is
    # serialised once.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- Reading ----------------------------------------------------------------------


@dataclass
class _Options:
    file: str
    fmt: str
    id_column: str
    label_column: str
    policy: str
    # The frame's columns holding the id and the label: the chosen columns,
    # or for Label Studio the ones built from each task.
    frame_id: str = ""
    frame_label: str = ""
    names: dict = field(default_factory=dict)  # frame column -> name in messages

    def __post_init__(self):
        self.frame_id = self.id_column
        self.frame_label = self.label_column

    def error(self, problem, *, column=None, **where):
        return ImportFileError(
            problem,
            file=self.file,
            csv_rows=self.fmt == ImportJob.Format.CSV,
            column=self.names.get(column, column),
            **where,
        )


def _bad_utf8(path):
    """(byte offset, line, bad bytes) of the first byte that is not UTF-8, or None."""
    offset, line, carry = 0, 1, b""
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 20)
            data = carry + block
            if not data:
                return None
            try:
                data.decode("utf-8")
                carry = b""
            except UnicodeDecodeError as exc:
                if block and exc.end == len(data) and exc.reason == "unexpected end of data":
                    # A character cut in two by the block boundary: read on.
                    good, carry = data[: exc.start], data[exc.start :]
                    offset, line = offset + len(good), line + good.count(b"\n")
                    continue
                return (
                    offset + exc.start,
                    line + data[: exc.start].count(b"\n"),
                    data[exc.start : exc.end],
                )
            if not block:
                return None
            offset, line = offset + len(data), line + data.count(b"\n")


def _encoding_error(path, options):
    found = _bad_utf8(path)
    if found is None:
        return None
    offset, line, bad = found
    row = column = None
    if options.fmt == ImportJob.Format.CSV:
        row, column = _csv_replacement_at(path)
    elif options.fmt == ImportJob.Format.JSONL:
        row = line
    return options.error(
        f"the file is not UTF-8 text: byte 0x{bad.hex()} at byte offset {offset} (line "
        f"{line}) is not valid UTF-8. Save the file as UTF-8 (in Excel: “CSV UTF-8”) "
        "and import it again.",
        row=row,
        column=column,
        value="\\x" + "\\x".join(f"{b:02x}" for b in bad),
    )


def _csv_replacement_at(path):
    """(data row, column) of the first cell holding an undecodable byte."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if any("\ufffd" in name for name in header):
            return None, None
        for row, cells in enumerate(reader, start=1):
            for index, cell in enumerate(cells):
                if "\ufffd" in cell:
                    return row, header[index] if index < len(header) else None
    return None, None


def _csv_header(path, options):
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        try:
            header = next(csv.reader(handle), None)
        except csv.Error as exc:
            raise options.error(f"the header row is not valid CSV ({exc}).") from None
    if not header:
        raise options.error("the file is empty: expected a header row and data rows.")
    seen = set()
    for index, name in enumerate(header, start=1):
        if not name.strip():
            raise options.error(f"column {index} of the header has no name; name every column.")
        if name in seen:
            raise options.error(
                "this column name appears twice in the header; names must be unique.",
                column=name,
            )
        seen.add(name)
    return header


def _csv_frames(path, options, progress):
    size = max(os.path.getsize(path), 1)
    with open(path, "rb") as handle:
        reader = pd.read_csv(
            handle,
            dtype=object,  # no type guessing: ids and codes stay as written ("007")
            keep_default_na=False,
            na_values=[""],  # only an empty cell is "no value"; "NA" may be text
            chunksize=CHUNK_ROWS,
            encoding="utf-8-sig",  # Excel's BOM is not part of the first column name
        )
        with reader:
            for frame in reader:
                yield frame
                progress(handle.tell() / size)


def _json_frames(path, options, progress):
    with open(path, encoding="utf-8-sig") as handle:
        head = handle.read(4096).lstrip()
        handle.seek(0)
        if not head:
            raise options.error("the file is empty: expected a list of objects.")
        if not head.startswith("["):
            raise options.error(
                "a JSON import must be a list of objects, like "
                '[{"id": "1", "text": "…"}, …]; for one object per line choose JSON Lines.'
            )
        frame = pd.read_json(handle, orient="records", dtype=False)
    progress(1.0)
    _check_columns_are_keys(frame, options, path)
    if options.fmt == ImportJob.Format.JSON and _is_label_studio(frame):
        options.fmt = ImportJob.Format.LABEL_STUDIO
    if options.fmt == ImportJob.Format.LABEL_STUDIO:
        frame = _label_studio_frame(frame, options)
    yield frame


def _is_label_studio(frame):
    """A JSON list of Label Studio tasks: every item has a ``data`` object."""
    return "data" in frame.columns and all(isinstance(d, dict) for d in frame["data"].tolist())


def _check_columns_are_keys(frame, options, path):
    if all(isinstance(name, str) for name in frame.columns):
        return
    # pandas made columns out of something that is not an object: say which.
    with open(path, encoding="utf-8-sig") as handle:
        error = _not_an_object(json.load(handle), options)
    raise error or options.error("the file is not a list of objects.")


def _jsonl_frames(path, options, progress):
    size = max(os.path.getsize(path), 1)
    with open(path, encoding="utf-8-sig") as handle:
        reader = pd.read_json(handle, lines=True, dtype=False, chunksize=CHUNK_ROWS)
        with reader:
            for frame in reader:
                if not all(isinstance(name, str) for name in frame.columns):
                    raise ValueError("a line is not an object")
                yield frame
                progress(min(handle.buffer.tell() / size, 1.0))


def _json_syntax_error(path, options):
    """Where Python's json module stops, for pandas' location-free messages."""
    if options.fmt == ImportJob.Format.JSONL:
        with open(path, encoding="utf-8-sig") as handle:
            row = 0
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                row += 1
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    return options.error(
                        f"line {line_number} is not valid JSON: {exc.msg} at column {exc.colno}.",
                        row=row,
                        value=line.strip(),
                    )
                if not isinstance(item, dict):
                    return options.error(
                        f"line {line_number} is not a JSON object ({{…}}).",
                        row=row,
                        value=line.strip(),
                    )
        return None
    with open(path, encoding="utf-8-sig") as handle:
        text = handle.read()
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        return options.error(
            f"the file is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} "
            f"(character {exc.pos}).",
            value=text[max(exc.pos - 30, 0) : exc.pos + 30],
        )
    return _not_an_object(items, options)


def _not_an_object(items, options):
    for row, item in enumerate(items if isinstance(items, list) else [], start=1):
        if not isinstance(item, dict):
            return options.error(
                "each item of the list must be an object ({…}).",
                row=row,
                value=json.dumps(item)[:200],
            )
    return None


def _label_studio_frame(frame, options):
    """One row per task: the task's ``data`` fields, its id and its label."""
    if "data" not in frame.columns:
        raise options.error(
            "this is not a Label Studio export: tasks need a “data” object.", column="data"
        )
    datas = frame["data"].tolist()
    task_ids = frame["id"].tolist() if "id" in frame.columns else [None] * len(frame)
    annotations = frame["annotations"].tolist() if "annotations" in frame.columns else None
    predictions = frame["predictions"].tolist() if "predictions" in frame.columns else None
    # The id comes from the chosen column inside ``data`` when the tasks have
    # it, else from the task's own id.
    id_key = options.id_column
    from_data = any(isinstance(d, dict) and id_key in d for d in datas)
    options.frame_id, options.frame_label = _TASK_ID, _TASK_LABEL
    options.names = {
        _TASK_ID: f"data.{id_key}" if from_data else "id (the task's id)",
        _TASK_LABEL: "annotations",
    }
    records = []
    for index, data in enumerate(datas):
        row = index + 1
        if not isinstance(data, dict):
            raise options.error("the task's “data” must be an object.", row=row, column="data")
        label = _label_studio_choice(
            annotations[index] if annotations else None,
            predictions[index] if predictions else None,
            options,
            row,
        )
        fields = {k: v for k, v in data.items() if k not in (_TASK_ID, _TASK_LABEL)}
        task_id = fields.pop(id_key, None) if from_data else task_ids[index]
        records.append({**fields, _TASK_ID: task_id, _TASK_LABEL: label})
    if not records:
        return pd.DataFrame(columns=[_TASK_ID, _TASK_LABEL])
    return pd.DataFrame.from_records(records)


def _choices(results):
    for item in results if isinstance(results, list) else []:
        if isinstance(item, dict) and item.get("type") == "choices":
            choices = (item.get("value") or {}).get("choices")
            if choices:
                return tuple(choices)
    return None


def _label_studio_choice(annotations, predictions, options, row):
    """The task's label: a ground-truth annotation, else the annotators'
    strict majority (a tie is no label: it goes to the queue), else, with no
    annotation at all, the best-scored prediction."""
    picked, ground = [], None
    for annotation in annotations if isinstance(annotations, list) else []:
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        choices = _choices(annotation.get("result"))
        if choices:
            picked.append(choices)
            if annotation.get("ground_truth"):
                ground = choices
    chosen = ground
    if chosen is None and picked:
        ranked = Counter(picked).most_common(2)
        if len(ranked) == 1 or ranked[0][1] > ranked[1][1]:
            chosen = ranked[0][0]
        else:
            return None
    if chosen is None:
        scored = [
            (p.get("score") if isinstance(p.get("score"), int | float) else -math.inf, i, c)
            for i, p in enumerate(predictions if isinstance(predictions, list) else [])
            if isinstance(p, dict) and (c := _choices(p.get("result")))
        ]
        if scored:
            chosen = max(scored, key=lambda s: (s[0], -s[1]))[2]
    if chosen is None:
        return None
    if len(chosen) > 1:
        raise options.error(
            "the task has several choices in one annotation; LeanML labels are single-choice.",
            row=row,
            column=_TASK_LABEL,
            value=", ".join(map(str, chosen)),
        )
    return chosen[0]


_READERS = {
    ImportJob.Format.CSV: _csv_frames,
    ImportJob.Format.JSON: _json_frames,
    ImportJob.Format.LABEL_STUDIO: _json_frames,
    ImportJob.Format.JSONL: _jsonl_frames,
}


def _frames(path, options, progress):
    """(first data row, DataFrame) chunks; every reading failure becomes an
    ImportFileError that says where."""
    start = 0
    try:
        for frame in _READERS[options.fmt](path, options, progress):
            yield start, frame
            start += len(frame)
    except ImportFileError:
        raise
    except UnicodeDecodeError:
        raise _encoding_error(path, options) or options.error(
            "the file is not UTF-8 text."
        ) from None
    except pd.errors.EmptyDataError:
        raise options.error("the file is empty: expected a header row and data rows.") from None
    except pd.errors.ParserError as exc:
        raise _csv_parse_error(path, options, exc) from None
    except (ValueError, TypeError) as exc:
        if options.fmt == ImportJob.Format.CSV:
            raise
        raise (
            _encoding_error(path, options)
            or _json_syntax_error(path, options)
            or options.error(f"the file could not be read as {options.fmt.upper()}: {exc}.")
        ) from None


def _csv_parse_error(path, options, exc):
    encoding = _encoding_error(path, options)
    if encoding is not None:
        return encoding
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if found:
        expected, line, saw = map(int, found.groups())
        return options.error(
            f"malformed CSV: line {line} of the file has {saw} cells but the header has "
            f"{expected}. Quote cells that contain commas.",
            row=line - 1,
        )
    return options.error(f"malformed CSV: {exc}.")


# --- Phase 1: validate and prepare ----------------------------------------------


@dataclass
class _Plan:
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


def _infer_fields(path, options, progress):
    """Fields for a project that has none yet: a column is a number when every
    value in it is one, else text."""
    order, numeric = [], {}
    for _start, frame in _frames(path, options, progress):
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


def _check_columns(columns, options, plan):
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


def _prepare_chunk(start, frame, options, plan):
    """Validate one chunk; returns [(row, external id, data, label id)]."""
    n = len(frame)
    columns = list(frame.columns)
    if start == 0:
        _check_columns(columns, options, plan)
    # A later JSON Lines chunk may lack a key altogether: its rows simply have
    # no value there (and fail below if that value is required).
    absent = [None] * n
    ids = frame[options.frame_id].tolist() if options.frame_id in columns else absent
    labels = (
        frame[options.frame_label].tolist()
        if options.frame_label and options.frame_label in columns
        else None
    )
    data_columns = [
        (
            name,
            _STRING_CONVERTERS[plan.kinds.get(name, "raw")],
            _CONVERTERS[plan.kinds.get(name, "raw")],
            frame[name].tolist(),
        )
        for name in columns
        if name not in (options.frame_id, options.frame_label)
    ]
    rows = []
    for i in range(n):
        row = start + i + 1
        external_id = _external_id(ids[i])
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
                f"the id “{_shorten(external_id, 80)}” repeats row {first}; ids must be unique.",
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
        data = {}
        for name, convert_string, convert, values in data_columns:
            value = values[i]
            try:
                if value.__class__ is str:  # every CSV cell: the fast path
                    if not value or value.isspace():
                        continue
                    data[name] = convert_string(value)
                elif not _missing(value):
                    data[name] = convert(value)
            except ValueError as exc:
                kind = plan.kinds.get(name, "raw")
                raise options.error(
                    f"“{_shorten(str(value), 80)}” {exc}; this field's kind is {kind}.",
                    row=row,
                    column=name,
                    value=value,
                ) from None
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
                    f"unknown label “{_shorten(name, 80)}”; the project's labels are "
                    f"{', '.join(plan.classes) or '(none yet: add label classes first)'}.",
                    row=row,
                    column=options.frame_label,
                    value=name,
                )
        rows.append((row, external_id, data, label_id))
    return rows


class _Spool:
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


class _PostgresStage:
    """New samples, streamed by COPY into a temporary table during phase 1.

    Sample ids come from the sample table's own sequence (the staging
    column's default), so the queue items and annotations can refer to them
    before the samples exist. A failed import only leaves gaps in the ids.
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
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [Sample._meta.db_table])
            sequence = cursor.fetchone()[0]
            cursor.execute(f"DROP TABLE IF EXISTS {self.table}")
            cursor.execute(
                f"CREATE TEMPORARY TABLE {self.table} ("
                "id bigint NOT NULL DEFAULT nextval(%s::regclass), external_id text, data text, "
                "content_hash text, split text, consensus_state text, "
                "consensus_label_id bigint, label_id bigint)",
                [sequence],
            )

    def add(self, rows):
        if not rows:
            return
        with connection.cursor() as cursor:
            # Binary COPY: text goes as it is, with no escaping to do.
            statement = f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN (FORMAT BINARY)"
            with cursor.copy(statement) as copy:
                copy.set_types(["text", "text", "text", "text", "text", "int8", "int8"])
                for row in rows:
                    copy.write_row(row)
        self.count += len(rows)

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


def _prepare(project, path, options, plan, new_rows, updates, report):
    """Phase 1: read, validate, sort each row into new / update / skip."""
    use_copy = isinstance(new_rows, _PostgresStage)
    holdout = project.holdout_fraction
    overlap = project.overlap
    update = options.policy == ImportJob.Policy.UPDATE

    def progress(fraction):
        report(0.05 + 0.5 * fraction, f"Reading and checking rows ({plan.rows:,} so far)")

    for start, frame in _frames(path, options, progress):
        rows = _prepare_chunk(start, frame, options, plan)
        plan.rows += len(rows)
        existing = {} if plan.fresh else _existing(project, [r[1] for r in rows])
        prepared, staged, to_update = [], [], []
        for row, external_id, data, label_id in rows:
            text = _canonical_json(data)
            digest = _hash_text(text)
            found = existing.get(external_id)
            if found is None:
                prepared.append((row, external_id, text, digest, data, label_id))
                continue
            if not update:
                plan.skipped += 1
                continue
            data_changed = digest != found[1]
            if data_changed:
                plan.to_update += 1
                prepared.append((row, external_id, None, digest, None, None))
            else:
                plan.unchanged += 1
            if data_changed or label_id is not None:
                to_update.append((found[0], data, digest, label_id, data_changed))
        updates.add(to_update)
        # Exact duplicates: rows whose content another sample (earlier in the
        # file, or already in the project) has; imported, and reported.
        others = {} if plan.fresh else _existing_hashes(project, list({p[3] for p in prepared}))
        for _row, external_id, text, digest, data, label_id in prepared:
            if digest in plan.seen_hashes or others.get(digest, set()) - {external_id}:
                plan.duplicates += 1
            else:
                plan.seen_hashes.add(digest)
            if text is None:
                continue  # an update: written in phase 2
            if label_id is None:
                state, consensus_label = Sample.Consensus.NONE, None
            else:
                # A new sample's only label is this one; the same rule as
                # consensus_refresh, without a query per sample.
                state, consensus_label = decide([label_id], overlap=overlap)
                plan.labelled_new += 1
            split = split_for(external_id, holdout)
            if use_copy:
                staged.append((external_id, text, digest, split, state, consensus_label, label_id))
            else:
                staged.append((external_id, data, digest, split, state, consensus_label, label_id))
            plan.created += 1
        new_rows.add(staged)
    if plan.rows == 0:
        raise options.error("the file has no data rows.")


# --- Phase 2: write -----------------------------------------------------------------


def _table(model):
    return connection.ops.quote_name(model._meta.db_table)


def _columns(model, *names):
    return ", ".join(connection.ops.quote_name(model._meta.get_field(n).column) for n in names)


def _insert_from_stage(cursor, model, columns, select, where, params):
    # Identifiers come from model metadata and constants; values are parameters.
    cursor.execute(
        f"INSERT INTO {_table(model)} ({_columns(model, *columns)}) SELECT {select} FROM {_PostgresStage.table} WHERE {where}",  # noqa: S608
        params,
    )
    return cursor.rowcount


def _write_new_postgres(project, by, stage, now, report):
    """Samples, their queue items and imported labels, set-based.

    The queue rows are what ``queue_add`` writes for a sample with no open item
    (these samples are new, so none has one), in one statement instead of a
    Python object per sample.
    """
    counts = {"queued": 0, "labels": 0}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(id), max(id) FROM {stage.table}")  # noqa: S608
        low, high = cursor.fetchone()
        if low is None:
            return counts
        step = max((high - low + 1) // 10, BATCH)
        for slice_start in range(low, high + 1, step):
            bounds = [slice_start, slice_start + step - 1]
            _insert_from_stage(
                cursor,
                Sample,
                ("id", "project", "external_id", "data", "content_hash", "revision", "source")
                + ("split", "status", "consensus_state", "consensus_label", "created_at"),
                "id, %s, external_id, data::jsonb, content_hash, 0, %s, split, %s, "
                "consensus_state, consensus_label_id, %s",
                "id BETWEEN %s AND %s",
                [project.pk, Sample.Source.IMPORT, Sample.Status.ACTIVE, now, *bounds],
            )
            counts["queued"] += _insert_from_stage(
                cursor,
                QueueItem,
                ("project", "sample", "priority", "strategy", "score", "reason", "state")
                + ("claims", "labels_done", "created_at"),
                "%s, id, 0, %s, NULL, %s, %s, 0, 0, %s",
                "label_id IS NULL AND id BETWEEN %s AND %s",
                [project.pk, "imported", "Imported", QueueItem.State.OPEN, now, *bounds],
            )
            counts["labels"] += _insert_from_stage(
                cursor,
                Annotation,
                ("project", "sample", "annotator", "kind", "label", "origin", "seconds")
                + ("revision", "created_at"),
                "%s, id, %s, %s, label_id, %s, NULL, 0, %s",
                "label_id IS NOT NULL AND id BETWEEN %s AND %s",
                [project.pk, by.pk, Annotation.Kind.LABEL, Annotation.Origin.IMPORT, now, *bounds],
            )
            report(0.6 + 0.35 * min((slice_start + step - low) / (high - low + 1), 1), None)
    return counts


def _write_new_portable(project, by, spool, now, report):
    counts = {"queued": 0, "labels": 0}
    done = 0
    for rows in spool:
        samples = [
            Sample(
                project=project,
                external_id=external_id,
                data=data,
                content_hash=digest,
                split=split,
                consensus_state=state,
                consensus_label_id=consensus_label,
                source=Sample.Source.IMPORT,
            )
            for external_id, data, digest, split, state, consensus_label, _label in rows
        ]
        Sample.objects.bulk_create(samples, batch_size=BATCH)
        labels = [row[6] for row in rows]
        unlabelled = [s.pk for s, label in zip(samples, labels, strict=True) if label is None]
        counts["queued"] += queue_add(
            project=project,
            sample_ids=unlabelled,
            priority=0,
            strategy="imported",
            reason="Imported",
        )
        annotations = [
            Annotation(
                project=project,
                sample_id=s.pk,
                annotator=by,
                kind=Annotation.Kind.LABEL,
                label_id=label,
                origin=Annotation.Origin.IMPORT,
            )
            for s, label in zip(samples, labels, strict=True)
            if label is not None
        ]
        Annotation.objects.bulk_create(annotations, batch_size=BATCH)
        counts["labels"] += len(annotations)
        done += len(rows)
        report(0.6 + 0.35 * done / max(spool.count, 1), None)
    return counts


def _write_updates(project, by, updates, job_note):
    """Existing samples under the "update" policy: changed data becomes a new
    revision (the original kept as revision 1, as cleaning does); a label that
    differs from the importer's current one is appended."""
    labelled, refresh = 0, []
    for rows in updates:
        by_pk = {row[0]: row for row in rows}
        samples = list(
            Sample.objects.select_for_update().filter(project=project, pk__in=list(by_pk))
        )
        current = dict(
            Annotation.objects.filter(sample_id__in=list(by_pk), annotator=by)
            .values("sample_id")
            .annotate(latest=Max("id"))
            .values_list("sample_id", "latest")
        )
        current_labels = dict(
            Annotation.objects.filter(id__in=list(current.values())).values_list(
                "sample_id", "label_id"
            )
        )
        revisions, changed, annotations = [], [], []
        for sample in samples:
            _pk, data, digest, label_id, data_changed = by_pk[sample.pk]
            if data_changed and digest != sample.content_hash:
                if sample.revision == 0:
                    revisions.append(
                        SampleRevision(
                            sample=sample,
                            number=1,
                            data=sample.data,
                            content_hash=sample.content_hash,
                            note="as imported",
                        )
                    )
                    sample.revision = 1
                sample.revision += 1
                revisions.append(
                    SampleRevision(
                        sample=sample,
                        number=sample.revision,
                        data=data,
                        content_hash=digest,
                        author=by,
                        note=job_note,
                    )
                )
                sample.data, sample.content_hash = data, digest
                changed.append(sample)
            if label_id is not None and current_labels.get(sample.pk) != label_id:
                annotations.append(
                    Annotation(
                        project=project,
                        sample=sample,
                        annotator=by,
                        kind=Annotation.Kind.LABEL,
                        label_id=label_id,
                        origin=Annotation.Origin.IMPORT,
                        revision=sample.revision,
                    )
                )
                refresh.append(sample.pk)
        SampleRevision.objects.bulk_create(revisions, batch_size=BATCH)
        Sample.objects.bulk_update(changed, ["data", "content_hash", "revision"], batch_size=1000)
        Annotation.objects.bulk_create(annotations, batch_size=BATCH)
        labelled += len(annotations)
    if refresh:
        consensus_refresh(project=project, sample_ids=refresh)
    return labelled


# --- Jobs -----------------------------------------------------------------------------


def _progress_key(job_id):
    return f"leanml:import-progress:{job_id}"


def import_job_progress(job) -> tuple[float, str]:
    """(fraction, message) of a job. While it writes, progress lives in the
    cache: rows written inside the transaction are invisible to other
    connections, and so would a progress column updated in it be."""
    if job.state == ImportJob.State.RUNNING:
        cached = cache.get(_progress_key(job.pk))
        if cached:
            return cached
    return job.progress, job.message


class _Reporter:
    def __init__(self, job):
        self.job = job
        self.in_transaction = False
        self.message = ""

    def __call__(self, fraction, message):
        message = message or self.message
        self.message = message
        fraction = round(min(max(fraction, 0.0), 1.0), 3)
        cache.set(_progress_key(self.job.pk), (fraction, message), timeout=3600)
        if not self.in_transaction:
            ImportJob.objects.filter(pk=self.job.pk).update(progress=fraction, message=message)


def _summary(counts):
    parts = [f"{counts['created']:,} new"]
    if counts["updated"]:
        parts.append(f"{counts['updated']:,} updated")
    if counts["unchanged"]:
        parts.append(f"{counts['unchanged']:,} unchanged")
    if counts["skipped"]:
        parts.append(f"{counts['skipped']:,} skipped (id already in the project)")
    if counts["labels"]:
        parts.append(f"{counts['labels']:,} labels")
    text = f"Imported {counts['rows']:,} rows: {', '.join(parts)}."
    if counts["duplicates"]:
        text += f" {counts['duplicates']:,} exact duplicates found — review and merge."
    return _shorten(text, 255)


def _project_fields_set(project, by, fields):
    # Only ``fields`` changes, so only it is validated: a project whose
    # creator was deleted (created_by NULL) would fail a full_clean().
    validate_field_config(fields)
    Project.objects.filter(pk=project.pk).update(fields=fields)
    audit_record(
        actor=by,
        project=project,
        action="project.update",
        target=project,
        before={"fields": project.fields},
        after={"fields": fields, "reason": "set from the first import's columns"},
    )
    project.fields = fields


def _import(job, path, report):
    """Both phases for one job; returns the counts or raises ImportFileError."""
    project = Project.objects.get(pk=job.project_id)
    options = _Options(
        file=job.original_name,
        fmt=job.format,
        id_column=job.id_column,
        label_column=job.label_column,
        policy=job.policy,
    )
    plan = _Plan(
        kinds={f["name"]: f.get("kind", "text") for f in project.fields},
        text_field=project.text_field,
        new_fields=None,
        classes=dict(LabelClass.objects.filter(project=project).values_list("name", "id")),
        fresh=not Sample.objects.filter(project=project).exists(),
    )
    if options.fmt == ImportJob.Format.CSV:
        _check_columns(_csv_header(path, options), options, plan)
    if not project.fields:
        report(0.02, "Choosing field kinds from the file's columns")
        plan.new_fields = _infer_fields(path, options, lambda f: None)
        plan.kinds = {f["name"]: f["kind"] for f in plan.new_fields}
        plan.text_field = next((f["name"] for f in plan.new_fields if f["kind"] == "text"), None)

    new_rows = _PostgresStage() if connection.vendor == "postgresql" else _Spool()
    updates = _Spool()
    try:
        _prepare(project, path, options, plan, new_rows, updates, report)
        total = plan.created + plan.to_update
        report(0.6, f"Writing {total:,} samples")
        report.in_transaction = True
        now = timezone.now()
        try:
            with transaction.atomic():
                # One import at a time per project: the second waits here and
                # then finds the first one's ids (IntegrityError below).
                project = Project.objects.select_for_update().get(pk=project.pk)
                if plan.new_fields:
                    _project_fields_set(project, job.created_by, plan.new_fields)
                if isinstance(new_rows, _PostgresStage):
                    written = _write_new_postgres(project, job.created_by, new_rows, now, report)
                else:
                    written = _write_new_portable(project, job.created_by, new_rows, now, report)
                report(0.96, "Recording updates")
                written["labels"] += _write_updates(
                    project, job.created_by, updates, f"updated by import {job.pk}"
                )
                counts = {
                    "rows": plan.rows,
                    "created": plan.created,
                    "updated": plan.to_update,
                    "unchanged": plan.unchanged,
                    "skipped": plan.skipped,
                    "labels": written["labels"],
                    "queued": written["queued"],
                    "duplicates": plan.duplicates,
                }
                audit_record(
                    actor=job.created_by,
                    project=project,
                    action="import.succeeded",
                    target=job,
                    after={"file": job.original_name, **counts},
                )
        except IntegrityError as exc:
            logger.warning("import %s lost a race: %s", job.pk, exc)
            raise options.error(
                "some of these ids were added to the project while the file was being read "
                "(by another import?). Nothing was imported; import the file again."
            ) from None
        finally:
            report.in_transaction = False
    finally:
        new_rows.close()
        updates.close()
    if options.fmt != job.format:
        ImportJob.objects.filter(pk=job.pk).update(format=options.fmt)
    return counts


@contextlib.contextmanager
def _local_path(job):
    try:
        yield job.file.path
    except NotImplementedError:
        # Remote storage: pandas wants a local file to read twice over.
        with tempfile.NamedTemporaryFile(suffix=Path(job.original_name).suffix) as tmp:
            with job.file.open("rb") as source:
                shutil.copyfileobj(source, tmp)
            tmp.flush()
            yield tmp.name


def _claim(job_id):
    """queued -> running, changing exactly one row; a job a dead worker left
    "running" past the time limit is taken over (its transaction never
    committed). Anything else is already done or in hand: leave it."""
    now = timezone.now()
    return (
        ImportJob.objects.filter(pk=job_id)
        .filter(
            Q(state=ImportJob.State.QUEUED)
            | Q(state=ImportJob.State.RUNNING, started_at__lt=now - STALE_AFTER)
        )
        .update(
            state=ImportJob.State.RUNNING,
            started_at=now,
            progress=0,
            message="Starting",
            error=None,
        )
        == 1
    )


def _run(job_id, path=None) -> ImportJob:
    if not _claim(job_id):
        return ImportJob.objects.get(pk=job_id)
    job = ImportJob.objects.select_related("created_by", "project").get(pk=job_id)
    report = _Reporter(job)
    try:
        if path is not None:
            counts = _import(job, path, report)
        else:
            if not job.file:
                raise ImportFileError("the uploaded file is not stored any more.")
            with _local_path(job) as local:
                counts = _import(job, local, report)
    except ImportFileError as exc:
        error = exc.as_dict()
        error["file"] = error["file"] or job.original_name
        _fail(job, error)
    except Exception as exc:
        logger.exception("import %s failed", job_id)
        _fail(
            job,
            {
                "message": f"{job.original_name}: the import stopped unexpectedly "
                f"({type(exc).__name__}). Nothing was imported.",
                "row": None,
                "column": None,
                "value": None,
                "file": job.original_name,
            },
        )
    else:
        ImportJob.objects.filter(pk=job.pk).update(
            state=ImportJob.State.SUCCEEDED,
            progress=1.0,
            message=_summary(counts),
            counts={**job.counts, **counts},
            finished_at=timezone.now(),
        )
    cache.delete(_progress_key(job.pk))
    job.refresh_from_db()
    return job


def _fail(job, error):
    ImportJob.objects.filter(pk=job.pk).update(
        state=ImportJob.State.FAILED,
        error=error,
        message=_shorten(error["message"], 255),
        finished_at=timezone.now(),
    )
    audit_record(
        actor=job.created_by,
        project=job.project,
        action="import.failed",
        target=job,
        after=error,
    )


def import_job_run(*, job_id) -> ImportJob:
    """Run a queued import job to succeeded or failed. Safe to call again:
    a job that is running or finished is returned untouched."""
    return _run(job_id)


def _new_job(*, project, by, name, fmt, policy, id_column, label_column):
    if policy not in ImportJob.Policy.values:
        raise ValueError(f"policy must be one of {', '.join(ImportJob.Policy.values)}.")
    if fmt and fmt not in ImportJob.Format.values:
        raise ValueError(f"format must be one of {', '.join(ImportJob.Format.values)}.")
    fmt = fmt or detect_format(name)
    job = ImportJob(
        project=project,
        created_by=by,
        original_name=_shorten(os.path.basename(name) or "upload", 255),
        format=fmt or ImportJob.Format.CSV,
        policy=policy,
        id_column=(id_column or "id").strip(),
        label_column=(label_column or "").strip(),
    )
    problem = None
    if fmt is None:
        problem = (
            f"can't tell the format from the file name “{job.original_name}”: "
            "use .csv, .json or .jsonl, or choose the format."
        )
    return job, problem


def _refuse(job, problem):
    job.state = ImportJob.State.FAILED
    job.error = {
        "message": f"{job.original_name}: {problem}",
        "row": None,
        "column": None,
        "value": None,
        "file": job.original_name,
    }
    job.message = _shorten(job.error["message"], 255)
    job.finished_at = timezone.now()
    job.save()
    audit_record(
        actor=job.created_by,
        project=job.project,
        action="import.failed",
        target=job,
        after=job.error,
    )
    return job


def _too_big(size):
    limit = settings.LEANML_MAX_UPLOAD_MB
    if size > limit * 1024 * 1024:
        return (
            f"the file is {size / 2**20:,.1f} MB; the upload limit is {limit:,} MB "
            "(LEANML_MAX_UPLOAD_MB). Split it, or import it on the server with "
            "manage.py import_samples."
        )
    return None


def import_job_create(
    *, project, by, uploaded_file, fmt=None, policy="skip", id_column="id", label_column=""
) -> ImportJob:
    """Store an uploaded file as an import job and run it.

    Files up to LEANML_INLINE_IMPORT_BYTES run now, in the request; larger
    ones are queued on Celery once the job row is committed. A file over the
    upload limit, or of an unknown format, becomes a failed job at once
    (nothing stored, nothing read). Bad arguments raise ValueError.
    """
    job, problem = _new_job(
        project=project,
        by=by,
        name=uploaded_file.name,
        fmt=fmt,
        policy=policy,
        id_column=id_column,
        label_column=label_column,
    )
    problem = _too_big(uploaded_file.size) or problem
    if problem:
        return _refuse(job, problem)
    job.file.save(job.original_name, uploaded_file, save=False)
    job.save()
    if uploaded_file.size <= settings.LEANML_INLINE_IMPORT_BYTES:
        return import_job_run(job_id=job.pk)
    transaction.on_commit(lambda: _enqueue(job.pk))
    return job


def _enqueue(job_id):
    from ..tasks import import_job_run_task

    try:
        result = import_job_run_task.delay(job_id)
    except Exception as exc:
        # The broker is down: say so on the job instead of running a large
        # import inside the web request.
        logger.exception("could not queue import %s", job_id)
        job = ImportJob.objects.select_related("created_by", "project").get(pk=job_id)
        _fail(
            job,
            {
                "message": f"{job.original_name}: the import could not be queued: the task "
                f"broker is unreachable ({type(exc).__name__}). Try again later.",
                "row": None,
                "column": None,
                "value": None,
                "file": job.original_name,
            },
        )
        return
    ImportJob.objects.filter(pk=job_id).update(celery_task_id=result.id or "")


def import_path(
    *, project, by, path, fmt=None, policy="skip", id_column="id", label_column=""
) -> ImportJob:
    """Import a file already on this machine, in this process (for scripts and
    ``manage.py import_samples``); recorded as a job like an upload."""
    path = Path(path)
    job, problem = _new_job(
        project=project,
        by=by,
        name=path.name,
        fmt=fmt,
        policy=policy,
        id_column=id_column,
        label_column=label_column,
    )
    if not path.is_file():
        return _refuse(job, f"there is no file at {path}.")
    problem = _too_big(path.stat().st_size) or problem
    if problem:
        return _refuse(job, problem)
    job.save()
    return _run(job.pk, path=str(path))
