"""Prediction logs in bulk: validate a whole batch, then store all of it or nothing.

A batch is a pandas frame, from a request body (``parsing.read_body``) or a
chunk of a file (the ``ingest_predictions`` command). Every row is checked
before anything is written; a batch with any bad row is refused with the
rows, fields and values at fault. Re-sending a batch is safe: a request id
already stored with the same content counts as "already stored", with
different content it is a row error (and the whole batch is refused).

JSON fields: ``request_id``, ``timestamp`` (ISO 8601; no offset means UTC),
``model_version`` (the version number), ``data`` (object: the fields the
model saw), ``predicted`` (class name), ``probabilities`` (object
``{class: p}`` naming every class of the project, each in [0, 1], summing to
1 within 0.01), optional ``latency_ms`` and ``segment`` (object).

CSV columns: ``request_id``, ``timestamp``, ``model_version``, ``predicted``,
``p_<class>`` for every class, optional ``latency_ms``, optional
``segment_<name>`` columns (gathered into ``segment``); every other column
is a field of ``data``.
"""

import json
import math
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import orjson
import pandas as pd
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format

from iterations.models import ModelVersion

from ..models import PredictionLog
from .parsing import FINITE_JSON, MAX_ERRORS_LISTED, IngestError, RowErrors, request_id_text

PROBABILITY_TOLERANCE = 0.01
REQUIRED = ("request_id", "timestamp", "model_version", "predicted")
JSON_FIELDS = {*REQUIRED, "data", "probabilities", "latency_ms", "segment"}
CSV_TEXT_COLUMNS = ("request_id", "timestamp", "predicted")
PROBABILITY_PREFIX = "p_"
SEGMENT_PREFIX = "segment_"
MAX_REQUEST_ID = PredictionLog._meta.get_field("request_id").max_length


@dataclass
class Batch:
    """Validated rows, column by column, ready to write."""

    request_ids: list
    timestamps: list  # aware datetimes
    version_ids: list
    data: list  # JSON text: str, or bytes in jsonb's binary form (``_JSONB``)
    predicted: list
    probabilities: list  # JSON text
    confidence: list
    latency: list  # float or None
    segments: list  # JSON text as ``data``, or None
    rows: list  # 1-based row numbers, for error messages
    # The parsed values, for the portable path's comparison with stored rows.
    data_values: list
    segment_values: list
    classes: list
    matrix: np.ndarray

    def probability_values(self):
        return [dict(zip(self.classes, row, strict=True)) for row in self.matrix.tolist()]

    def __len__(self):
        return len(self.request_ids)


def project_classes(project):
    return list(project.label_classes.order_by("order", "id").values_list("name", flat=True))


def prediction_logs_ingest(*, project, frame, fmt, row_offset=0) -> dict:
    """Store a batch of prediction logs: ``{"stored": n, "already_stored": m}``.

    Raises ``IngestError`` (nothing stored) when any row is invalid or a
    request id is already stored with different content.
    """
    frame = frame.reset_index(drop=True)
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            versions = _hold_keys(project)
            if not _first_row_stored(project, frame):
                try:
                    with transaction.atomic():
                        stored = _copy_new(project, frame, fmt, row_offset, now, versions)
                    return {"stored": stored, "already_stored": 0}
                except IntegrityError:
                    pass  # a request id is stored already (or repeated in the batch)
            batch = predictions_prepare(
                project=project, frame=frame, fmt=fmt, row_offset=row_offset, versions=versions
            )
            stored = _write_postgres_staged(project, batch, now)
        else:
            batch = predictions_prepare(
                project=project, frame=frame, fmt=fmt, row_offset=row_offset
            )
            stored = _write_portable(project, batch, now)
    return {"stored": stored, "already_stored": len(batch) - stored}


def _first_row_stored(project, frame):
    """Whether the batch's first request id is stored already: a re-sent
    batch (a client's retry). PostgreSQL reports the COPY's unique violation
    only once the whole batch has been checked and sent, so a retry would pay
    for the straight path before taking the comparing one; one index probe
    sends it there at once (a 100,000-row retry: ~1 s less)."""
    if "request_id" not in frame.columns or frame.empty:
        return False
    first = request_id_text(frame["request_id"].iloc[:1].tolist()[0])
    if not isinstance(first, str):
        return False
    return PredictionLog.objects.filter(project=project, request_id=first).exists()


def project_versions(project):
    """Version number -> ModelVersion id."""
    return dict(ModelVersion.objects.filter(project=project).values_list("number", "id"))


def _hold_keys(project):
    """``project_versions``, with the project's row and its versions' rows
    held FOR KEY SHARE until the transaction ends: what the log table's
    foreign-key checks would take for every row (``PredictionLog``), taken
    once for the batch. A concurrent delete of the project or a version
    waits for this batch's COMMIT, then finds its logs."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {project._meta.db_table} WHERE id = %s FOR KEY SHARE",  # noqa: S608
            [project.pk],
        )
        if cursor.fetchone() is None:
            raise IngestError("The project no longer exists.", field="project", status=404)
        cursor.execute(
            f"SELECT number, id FROM {ModelVersion._meta.db_table}"  # noqa: S608
            " WHERE project_id = %s FOR KEY SHARE",
            [project.pk],
        )
        return dict(cursor.fetchall())


def predictions_prepare(*, project, frame, fmt, row_offset=0, classes=None, versions=None) -> Batch:
    """Check every row of ``frame``; ``IngestError`` lists what is wrong.
    ``classes`` and ``versions`` (``project_versions``) are read from the
    database unless given: the COPY path reads them before it starts, since
    the connection can run no other query while a COPY is open."""
    classes = project_classes(project) if classes is None else classes
    versions = project_versions(project) if versions is None else versions
    frame = frame.reset_index(drop=True)
    if not classes:
        raise IngestError("The project has no label classes yet.", field="predicted")
    errors = RowErrors(offset=row_offset)
    if fmt == "csv":
        probabilities, data, segments = _csv_parts(frame, classes)
    else:
        probabilities, data, segments = _json_parts(frame, classes, errors)
    for name in REQUIRED:
        if name not in frame.columns:
            raise IngestError(f"“{name}” is missing: every row needs it.", field=name)
    request_ids = _request_ids(frame["request_id"], errors)
    timestamps = _timestamps(frame["timestamp"], errors)
    version_ids = _versions(versions, frame["model_version"], errors)
    predicted = frame["predicted"]
    bad = ~predicted.isin(classes)
    errors.add_many(
        frame.index[bad],
        "predicted",
        predicted[bad].tolist(),
        f"unknown class “{{value}}” (classes: {', '.join(classes)})",
    )
    matrix = _probabilities(probabilities, classes, errors, csv=fmt == "csv")
    latency = _latency(frame.get("latency_ms"), errors)
    finite = fmt != "csv" and frame.attrs.get(FINITE_JSON, False)
    data_json = _dumps_column(data, "data", errors, finite=finite)
    segment_json = _dumps_column(segments, "segment", errors, finite=finite)
    errors.raise_if_any()

    return Batch(
        request_ids=request_ids,
        timestamps=timestamps,
        version_ids=version_ids,
        data=data_json,
        predicted=predicted.tolist(),
        probabilities=_probability_texts(classes, matrix),
        confidence=matrix.max(axis=1).tolist(),
        latency=latency,
        segments=segment_json,
        rows=[i + 1 + row_offset for i in range(len(frame))],
        data_values=data,
        segment_values=segments,
        classes=classes,
        matrix=matrix,
    )


# --- Columns -------------------------------------------------------------------


def _json_parts(frame, classes, errors):
    unknown = sorted(set(frame.columns) - JSON_FIELDS)
    if unknown:
        raise IngestError(
            f"Unknown field “{unknown[0]}” (fields: {', '.join(sorted(JSON_FIELDS))}).",
            field=unknown[0],
        )
    for name in ("data", "probabilities"):
        if name not in frame.columns:
            raise IngestError(f"“{name}” is missing: every row needs it.", field=name)
    data = frame["data"].tolist()
    for index, value in enumerate(data):
        if not isinstance(value, dict):
            errors.add(index, "data", value, "must be an object of the fields the model saw")
    segments = frame["segment"].tolist() if "segment" in frame.columns else [None] * len(frame)
    for index, value in enumerate(segments):
        if isinstance(value, float) and math.isnan(value):  # absent from this row
            segments[index] = None
        elif value is not None and not isinstance(value, dict):
            errors.add(index, "segment", value, "must be an object (or left out)")
    rows = frame["probabilities"].tolist()
    records = []
    for index, value in enumerate(rows):
        if isinstance(value, dict):
            records.append(value)
        else:
            errors.add(index, "probabilities", value, "must be an object {class: probability}")
            records.append({})
    probabilities = pd.DataFrame.from_records(records, index=frame.index)
    unknown = [c for c in probabilities.columns if c not in classes]
    for name in unknown:
        present = probabilities[name].notna()
        errors.add_many(
            frame.index[present],
            "probabilities",
            [name] * int(present.sum()),
            f"unknown class “{{value}}” (classes: {', '.join(classes)})",
        )
    # A row whose probabilities are already wrong is not told its sum is off too.
    probabilities.attrs["bad_rows"] = (
        probabilities[unknown].notna().any(axis=1).to_numpy()
        if unknown
        else np.zeros(len(frame), dtype=bool)
    ) | np.array([not isinstance(v, dict) for v in rows], dtype=bool)
    return probabilities.drop(columns=unknown), data, segments


def _csv_parts(frame, classes):
    p_columns = [c for c in frame.columns if c.startswith(PROBABILITY_PREFIX)]
    for column in p_columns:
        if column[len(PROBABILITY_PREFIX) :] not in classes:
            raise IngestError(
                f"Column “{column}” names no class (classes: {', '.join(classes)}).", field=column
            )
    for name in classes:
        if f"{PROBABILITY_PREFIX}{name}" not in frame.columns:
            raise IngestError(
                f"Column “{PROBABILITY_PREFIX}{name}” is missing: every class needs its "
                "probability column.",
                field=f"{PROBABILITY_PREFIX}{name}",
            )
    probabilities = frame[p_columns].rename(columns=lambda c: c[len(PROBABILITY_PREFIX) :])
    segment_columns = [c for c in frame.columns if c.startswith(SEGMENT_PREFIX)]
    data_columns = [
        c
        for c in frame.columns
        if c not in (*REQUIRED, "latency_ms") and c not in p_columns and c not in segment_columns
    ]
    data = _records(frame[data_columns])
    if segment_columns:
        renamed = frame[segment_columns].rename(columns=lambda c: c[len(SEGMENT_PREFIX) :])
        segments = _records(renamed)
    else:
        segments = [None] * len(frame)
    return probabilities, data, segments


def _records(frame):
    """Rows as dicts of plain Python values; an empty cell is None."""
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict("records")


def _request_ids(column, errors):
    if pd.api.types.infer_dtype(column, skipna=False) == "string":
        # The usual batch: all text. Only lengths need a look.
        lengths = column.str.len().to_numpy()
        if (
            lengths.min() > 0
            and lengths.max() <= MAX_REQUEST_ID
            and column.is_unique
            and not column.str.contains("\x00", regex=False).any()
        ):
            return column.tolist()
    values = column.tolist()
    out = []
    for index, value in enumerate(values):
        value = request_id_text(value)
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            errors.add(index, "request_id", None, "missing (every row needs a request id)")
            value = None
        elif not isinstance(value, str):
            errors.add(index, "request_id", value, "must be text (or a whole number)")
            value = None
        elif len(value) > MAX_REQUEST_ID:
            errors.add(index, "request_id", value, f"longer than {MAX_REQUEST_ID} characters")
        elif "\x00" in value:
            errors.add(index, "request_id", value, "contains a NUL character")
        out.append(value)
    series = pd.Series(out, dtype=object)
    repeated = series.notna() & series.duplicated(keep="first")
    if repeated.any():
        first_row = {}
        for index, value in enumerate(out):
            first_row.setdefault(value, index + 1 + errors.offset)
        for index in np.flatnonzero(repeated.to_numpy())[:MAX_ERRORS_LISTED]:
            errors.add(
                index,
                "request_id",
                out[index],
                f"request id repeated in this batch (first at row {first_row[out[index]]})",
            )
        errors.count += max(int(repeated.sum()) - MAX_ERRORS_LISTED, 0)
    return out


def _timestamps(column, errors):
    # Only text is a time here: pandas would read a number as nanoseconds.
    if pd.api.types.infer_dtype(column, skipna=False) == "string":
        text = column
    else:
        text = column.where(column.map(lambda v: isinstance(v, str)), None)
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna()
    errors.add_many(
        np.flatnonzero(bad.to_numpy()),
        "timestamp",
        column[bad].tolist(),
        "not an ISO 8601 time (e.g. 2026-03-01T12:00:00Z)",
    )
    return list(parsed.dt.to_pydatetime())


def _versions(known, column, errors):
    numbers = pd.to_numeric(_without_bools(column), errors="coerce").astype(float)
    whole = numbers.where(numbers == np.floor(numbers))
    ids = whole.map({float(number): pk for number, pk in known.items()})
    bad = ids.isna()
    listed = ", ".join(str(n) for n in sorted(known)) or "none yet"
    errors.add_many(
        np.flatnonzero(bad.to_numpy()),
        "model_version",
        column[bad].tolist(),
        f"unknown model version “{{value}}” (this project's versions: {listed})",
    )
    return [None if v != v else int(v) for v in ids.tolist()]


def _probabilities(frame, classes, errors, *, csv):
    """An (n, classes) float matrix in class order; rows with errors are zeros."""
    matrix = np.zeros((len(frame), len(classes)))
    row_bad = frame.attrs.get("bad_rows", np.zeros(len(frame), dtype=bool)).copy()
    for j, name in enumerate(classes):
        column = frame[name] if name in frame.columns else pd.Series([None] * len(frame))
        absent = column.isna().to_numpy()
        missing = absent & ~row_bad
        numbers = pd.to_numeric(_without_bools(column), errors="coerce")
        not_number = numbers.isna().to_numpy() & ~absent
        values = numbers.to_numpy(dtype=float, na_value=np.nan)
        out_of_range = ~np.isnan(values) & ((values < 0) | (values > 1))
        field = f"{PROBABILITY_PREFIX}{name}" if csv else "probabilities"
        errors.add_many(
            np.flatnonzero(missing),
            field,
            [None] * int(missing.sum()),
            f"no probability for class “{name}” (every class needs one)",
        )
        errors.add_many(
            np.flatnonzero(not_number),
            field,
            column[not_number].tolist(),
            "“{value}” is not a number",
        )
        errors.add_many(
            np.flatnonzero(out_of_range),
            field,
            values[out_of_range].tolist(),
            f"probability of “{name}” is {{value}}, outside 0..1",
        )
        row_bad |= missing | not_number | out_of_range
        matrix[:, j] = np.where(np.isnan(values), 0.0, values)
    sums = matrix.sum(axis=1)
    off = ~row_bad & (np.abs(sums - 1) > PROBABILITY_TOLERANCE)
    errors.add_many(
        np.flatnonzero(off),
        "probabilities",
        [round(s, 6) for s in sums[off].tolist()],
        f"probabilities sum to {{value}}, not 1 (±{PROBABILITY_TOLERANCE})",
    )
    return matrix


def _without_bools(column):
    """``column`` with JSON true/false blanked: they are not numbers here.
    A numeric column (the usual case) cannot hold any, and is not scanned."""
    if column.dtype != object:
        return column
    return column.where(~column.map(lambda v: isinstance(v, bool)), None)


def _latency(column, errors):
    if column is None:
        return None
    missing = column.isna()
    numbers = pd.to_numeric(_without_bools(column), errors="coerce")
    bad = (numbers.isna() & ~missing) | (numbers < 0)
    errors.add_many(
        np.flatnonzero(bad.to_numpy()),
        "latency_ms",
        column[bad].tolist(),
        "“{value}” is not a duration in milliseconds (a number ≥ 0)",
    )
    return [None if v != v else v for v in numbers.astype(float).tolist()]


# One encoder for every row: json.dumps with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def _dumps_column(values, name, errors, *, finite=False):
    """JSON text of each value. NaN, infinity and the NUL character are
    refused: Python's JSON reader accepts them, PostgreSQL's jsonb does not.

    ``finite``: the values were read by orjson (``parsing.FINITE_JSON``),
    so they hold no NaN or infinity and orjson writes them ~5× faster than
    the json module, as bytes in jsonb's binary form. (Prefixing the
    version byte also copies orjson's answer into a bytes object of its own
    size: orjson's own keeps a ~4 kB buffer, 1 GB over a 100,000-row batch.)"""
    try:
        if finite:
            dumps = orjson.dumps
            out = [None if v is None else _JSONB + dumps(v) for v in values]
            nul = b"\\u0000"
        else:
            encode = _ENCODE
            out = [None if v is None else encode(v) for v in values]
            nul = "\\u0000"
    except (ValueError, TypeError):  # orjson.JSONEncodeError is a TypeError
        return _dumps_one_by_one(values, name, errors)
    for position, text in enumerate(out):
        if text is not None and nul in text:
            errors.add(position, name, _text(text), "contains a NUL character (\\u0000)")
    return out


# jsonb's binary form: a version byte (1), then the JSON text.
_JSONB = b"\x01"


def _text(json_text):
    """JSON text as str, from either form ``_dumps_column`` gives."""
    return json_text if isinstance(json_text, str) else json_text[1:].decode("utf-8")


def _dumps_one_by_one(values, name, errors):
    encode = _ENCODE
    out = []
    for position, value in enumerate(values):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(encode(value))
        except (ValueError, TypeError) as exc:
            errors.add(position, name, str(value), f"cannot be stored as JSON ({exc})")
            out.append(None)
    return out


def _probability_texts(classes, matrix):
    """``{"class": p, ...}`` per row, formatted directly: repr of a float is
    the shortest text that reads back as the same float, as JSON writes it."""
    keys = [json.dumps(name, ensure_ascii=False) for name in classes]
    template = "{" + ",".join(f"{key}:%r" for key in keys) + "}"
    return [template % tuple(row) for row in matrix.tolist()]


# --- Writing ---------------------------------------------------------------------


class _JsonTextDumper(Dumper):
    """Binary COPY of JSON text already serialised into a jsonb column:
    jsonb's binary form is a version byte (1) and the text. Bytes are in
    that form already (``_dumps_column``)."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj):
        return obj if isinstance(obj, bytes) else _JSONB + obj.encode("utf-8")


_STAGE = "monitoring_ingest_stage"
_STAGE_COLUMNS = (
    ("row_no", "int4"),
    ("request_id", "text"),
    ("ts", "timestamptz"),
    ("model_version_id", "int8"),
    ("data", "jsonb"),
    ("predicted", "text"),
    ("probabilities", "jsonb"),
    ("confidence", "float8"),
    ("latency_ms", "float8"),
    ("segment", "jsonb"),
)


_TABLE_COLUMNS = (
    ("project_id", "int8"),
    ("request_id", "text"),
    ("timestamp", "timestamptz"),
    ("model_version_id", "int8"),
    ("data", "jsonb"),
    ("predicted", "text"),
    ("probabilities", "jsonb"),
    ("confidence", "float8"),
    ("latency_ms", "float8"),
    ("segment", "jsonb"),
    ("received_at", "timestamptz"),
)


def _copy(cursor, table, columns, rows):
    cursor.adapters.register_dumper(None, _JsonTextDumper)
    names = ", ".join(name for name, _ in columns)
    # cursor.copy is psycopg's own: without this, its errors would reach the
    # caller as psycopg exceptions instead of Django's IntegrityError & co.
    with (
        connection.wrap_database_errors,
        cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types([kind for _, kind in columns])
        for row in rows:
            copy.write_row(row)


# Rows checked and sent at a time on the COPY path: PostgreSQL stores one
# slice while Python checks the next, so the two cores work side by side.
# Smaller slices shorten the end, where Python waits for PostgreSQL to store
# the last one (a 100,000-row batch: 0.72-0.80 s in slices of 10,000,
# 0.84-1.06 s in slices of 20,000; 5,000 gains nothing more).
PIPELINE_ROWS = 10_000


def _table_rows(project, batch, now):
    return zip(
        repeat(project.pk),
        batch.request_ids,
        batch.timestamps,
        batch.version_ids,
        batch.data,
        batch.predicted,
        batch.probabilities,
        batch.confidence,
        batch.latency or repeat(None),
        batch.segments,
        repeat(now),
    )


def _copy_new(project, frame, fmt, row_offset, now, versions):
    """COPY the batch straight into the log table, checking it slice by slice.

    1. One COPY stays open; each slice is checked, then written into it.
    2. A slice with bad rows stops the writing, but the later slices are
       still checked, so the answer lists the batch's errors in row order.
       Raising inside the COPY aborts it, and the caller's savepoint rolls
       back whatever was sent: nothing of the batch is stored.
    3. A request id already stored (a re-sent batch, or a concurrent request
       that stored it first) or repeated in the batch violates the unique
       constraint: IntegrityError, and the caller takes the staged path,
       which tells "already stored" from "stored with other content".
    """
    failed = []
    classes = project_classes(project)
    with connection.cursor() as cursor:
        cursor.adapters.register_dumper(None, _JsonTextDumper)
        names = ", ".join(name for name, _ in _TABLE_COLUMNS)
        statement = f"COPY {PredictionLog._meta.db_table} ({names}) FROM STDIN (FORMAT BINARY)"
        # cursor.copy is psycopg's own: without wrap_database_errors its
        # errors would arrive as psycopg's, not as Django's IntegrityError.
        with connection.wrap_database_errors, cursor.copy(statement) as copy:
            copy.set_types([kind for _, kind in _TABLE_COLUMNS])
            for start in range(0, len(frame), PIPELINE_ROWS):
                try:
                    batch = predictions_prepare(
                        project=project,
                        frame=frame.iloc[start : start + PIPELINE_ROWS],
                        fmt=fmt,
                        row_offset=row_offset + start,
                        classes=classes,
                        versions=versions,
                    )
                except IngestError as error:
                    if not error.errors:
                        raise  # about the whole batch (a missing column, ...)
                    failed.append(error)
                    continue
                if not failed:
                    for row in _table_rows(project, batch, now):
                        copy.write_row(row)
            if failed:
                raise _merged(failed)
    return len(frame)


def _merged(failures):
    """One IngestError for the row errors of several slices (in row order)."""
    errors = RowErrors()
    for failure in failures:
        errors.listed.extend(failure.errors)
        errors.count += failure.error_count
    try:
        errors.raise_if_any()
    except IngestError as error:
        return error
    raise AssertionError("no errors to merge")  # pragma: no cover


def _write_postgres_staged(project, batch, now):
    """COPY into a temporary table, then one INSERT ... ON CONFLICT DO NOTHING.

    1. The stage lives until the transaction ends (ON COMMIT DROP).
    2. The insert skips request ids already stored (this batch re-sent, or a
       concurrent request that stored them first: the insert waits for its
       commit).
    3. Only when some were skipped: compare them with what is stored. This
       runs after the insert, so in READ COMMITTED it sees the rows a
       concurrent request committed meanwhile; a difference raises and the
       whole batch rolls back.
    """
    table = PredictionLog._meta.db_table
    latency = batch.latency or [None] * len(batch)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {_STAGE}")
        columns = ", ".join(f"{name} {kind}" for name, kind in _STAGE_COLUMNS)
        cursor.execute(f"CREATE TEMPORARY TABLE {_STAGE} ({columns}) ON COMMIT DROP")
        _copy(
            cursor,
            _STAGE,
            _STAGE_COLUMNS,
            zip(
                batch.rows,
                batch.request_ids,
                batch.timestamps,
                batch.version_ids,
                batch.data,
                batch.predicted,
                batch.probabilities,
                batch.confidence,
                latency,
                batch.segments,
                strict=True,
            ),
        )
        # Identifiers are model metadata and constants; values are parameters.
        cursor.execute(
            f"INSERT INTO {table} (project_id, request_id, timestamp, model_version_id, data,"  # noqa: S608
            " predicted, probabilities, confidence, latency_ms, segment, received_at)"
            f" SELECT %s, request_id, ts, model_version_id, data, predicted, probabilities,"
            f" confidence, latency_ms, segment, %s FROM {_STAGE} ORDER BY row_no"
            " ON CONFLICT (project_id, request_id) DO NOTHING",
            [project.pk, now],
        )
        stored = cursor.rowcount
        if stored < len(batch):
            # One index probe per staged row (LATERAL ... LIMIT 1 keeps it a
            # nested loop): a plain join let the planner hash all of the
            # project's logs whenever its statistics lagged behind a bulk
            # load (1.7 s instead of 0.27 s for 100,000 rows against 1,000,000).
            cursor.execute(
                f"SELECT s.row_no, s.request_id FROM {_STAGE} s CROSS JOIN LATERAL"  # noqa: S608
                " (SELECT p.timestamp, p.model_version_id, p.data, p.predicted, p.probabilities,"
                f" p.latency_ms, p.segment FROM {table} p"
                " WHERE p.project_id = %s AND p.request_id = s.request_id LIMIT 1) p"
                " WHERE (p.timestamp, p.model_version_id, p.data, p.predicted, p.probabilities,"
                " p.latency_ms, p.segment) IS DISTINCT FROM (s.ts, s.model_version_id, s.data,"
                " s.predicted, s.probabilities, s.latency_ms, s.segment)"
                " ORDER BY s.row_no",
                [project.pk],
            )
            _raise_conflicts(cursor.fetchall())
    return stored


def _raise_conflicts(conflicts):
    if not conflicts:
        return
    errors = RowErrors()
    for row_no, request_id in conflicts[:MAX_ERRORS_LISTED]:
        errors.add(
            row_no - 1,
            "request_id",
            request_id,
            f"request id {request_id} already stored with different content",
        )
    errors.count = len(conflicts)
    errors.raise_if_any()


def _write_portable(project, batch, now):
    """SQLite: compare with the stored rows in Python, then executemany.
    The transaction holds SQLite's one write lock, so nothing can slip in
    between the comparison and the insert."""
    stored = {}
    ids = batch.request_ids
    for start in range(0, len(ids), 500):
        for row in PredictionLog.objects.filter(
            project=project, request_id__in=ids[start : start + 500]
        ).values_list(
            "request_id",
            "timestamp",
            "model_version_id",
            "data",
            "predicted",
            "probabilities",
            "latency_ms",
            "segment",
        ):
            stored[row[0]] = row[1:]
    conflicts, new = [], []
    latency = batch.latency or [None] * len(batch)
    probability_values = batch.probability_values()
    for i, request_id in enumerate(ids):
        mine = (
            batch.timestamps[i],
            batch.version_ids[i],
            batch.data_values[i],
            batch.predicted[i],
            probability_values[i],
            latency[i],
            batch.segment_values[i],
        )
        if request_id in stored:
            if stored[request_id] != mine:
                conflicts.append((batch.rows[i], request_id))
        else:
            new.append(i)
    _raise_conflicts(conflicts)
    ops = connection.ops
    received = ops.adapt_datetimefield_value(now)
    rows = [
        (
            project.pk,
            ids[i],
            ops.adapt_datetimefield_value(batch.timestamps[i]),
            batch.version_ids[i],
            _text(batch.data[i]),
            batch.predicted[i],
            batch.probabilities[i],
            batch.confidence[i],
            latency[i],
            None if batch.segments[i] is None else _text(batch.segments[i]),
            received,
        )
        for i in new
    ]
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {PredictionLog._meta.db_table} (project_id, request_id, timestamp,"  # noqa: S608
            " model_version_id, data, predicted, probabilities, confidence, latency_ms, segment,"
            " received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    return len(new)
