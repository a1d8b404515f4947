"""Reading import files: formats, encodings and where a problem is.

Each reader yields pandas DataFrames in chunks; every failure to read becomes
an ImportFileError naming the file and, where it can be known, the row,
column and value.
"""

import csv
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from leanml_site import textfiles

from ...models import ImportJob

CHUNK_ROWS = 50_000  # rows pandas hands over at a time: bounded memory per chunk

FORMAT_BY_EXTENSION = {
    ".csv": ImportJob.Format.CSV,
    ".json": ImportJob.Format.JSON,
    ".jsonl": ImportJob.Format.JSONL,
    ".ndjson": ImportJob.Format.JSONL,
}
# Label Studio rows get their id and label from the task, not from a column.
_TASK_ID = "\x00task id"
_TASK_LABEL = "\x00task label"


class ImportFileError(Exception):
    """Why a file cannot be imported, and where: ``file``, 1-based data ``row``,
    ``column`` and ``value`` (each None when it does not apply). A ``named``
    problem is a whole sentence that names the file (and the row and column)
    itself."""

    def __init__(
        self, problem, *, file="", row=None, column=None, value=None, csv_rows=False, named=False
    ):
        self.problem = problem
        self.named = named
        self.file = file
        self.row = row
        self.column = column
        self.value = None if value is None else shorten(str(value), 200)
        self.csv_rows = csv_rows
        super().__init__(self.message)

    @property
    def message(self):
        if self.named:
            return self.problem
        where = [self.file] if self.file else []
        where += place(self.row, self.column, csv_rows=self.csv_rows)
        return f"{', '.join(where)}: {self.problem}" if where else self.problem

    def as_dict(self):
        return {
            "message": self.message,
            "row": self.row,
            "column": self.column,
            "value": self.value,
            "file": self.file,
        }


def place(row, column, *, csv_rows=False):
    """["row 3 (spreadsheet row 4)", "column “text”"], the parts that apply."""
    parts = []
    if row is not None:
        parts.append(f"row {row} (spreadsheet row {row + 1})" if csv_rows else f"row {row}")
    if column is not None:
        parts.append(f"column “{column}”")
    return parts


def shorten(text, limit):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def detect_format(name) -> str | None:
    return FORMAT_BY_EXTENSION.get(Path(name).suffix.lower())


@dataclass
class Options:
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

    def where(self, *, row=None, column=None):
        column = self.names.get(column, column)
        return ", ".join(place(row, column, csv_rows=self.fmt == ImportJob.Format.CSV))


def _encoding_error(path, options):
    """The file's first byte that is not UTF-8, with its row and column where
    they can be told; None when the file is UTF-8 text."""
    found = textfiles.first_bad_utf8(textfiles.file_blocks(path))
    if found is None:
        return None
    _offset, line, bad = found
    row = column = None
    if options.fmt == ImportJob.Format.CSV:
        row, column = _csv_replacement_at(path)
    elif options.fmt == ImportJob.Format.JSONL:
        row = line
    # A JSON Lines row is its line, which the message names already.
    where = options.where(row=row, column=column) if options.fmt == ImportJob.Format.CSV else ""
    with open(path, "rb") as handle:
        encoding = textfiles.other_encoding(handle.read(4))
    return options.error(
        textfiles.not_utf8_message(options.file, found, where=where, encoding=encoding),
        named=True,
        row=row,
        column=column,
        value="\\x" + "\\x".join(f"{b:02x}" for b in bad),
    )


def check_text(path, options):
    """Refuse a file that is no UTF-8 text before any parser reads it: a
    binary file's bytes would otherwise turn into a "column" name or a codec
    error. Looks at the first bytes only; a bad byte further on is found (with
    its row) when the rows are read."""
    with open(path, "rb") as handle:
        head = handle.read(textfiles.HEAD_BYTES)
    kind = textfiles.binary_kind(head)
    if kind is not None:
        raise options.error(textfiles.not_text_message(options.file, kind), named=True)
    problem = textfiles.head_problem(head, options.file)
    if problem is not None:
        raise _encoding_error(path, options) or options.error(problem, named=True)


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


def csv_header(path, options):
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


def read_frames(path, options, progress):
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
