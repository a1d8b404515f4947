"""Request bodies (JSON list, JSON Lines, CSV) into pandas frames, and the
row-level error report every ingestion endpoint answers with."""

import gc
import io
import json
from contextlib import contextmanager
from dataclasses import dataclass, field

import orjson
import pandas as pd

from leanml_site import textfiles

MAX_ROWS = 100_000
# A body this large is refused before it is read: 100,000 rows of a few
# kilobytes each fit with room to spare.
MAX_BODY_BYTES = 256 * 1024 * 1024
MAX_ERRORS_LISTED = 20

MEDIA_TYPES = {
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
    "text/csv": "csv",
}


class IngestError(Exception):
    """Why a batch was refused (nothing of it was stored).

    ``errors`` lists up to ``MAX_ERRORS_LISTED`` row errors, each
    ``{"row", "field", "value", "message"}`` with ``row`` 1-based (the first
    object, JSON line or CSV data row after the header is row 1);
    ``error_count`` counts them all. ``status`` is the HTTP status to answer.
    """

    def __init__(self, message, *, field=None, errors=(), error_count=None, status=400):
        self.message = message
        self.field = field
        self.errors = list(errors)
        self.error_count = len(self.errors) if error_count is None else error_count
        self.status = status
        super().__init__(message)

    def as_dict(self):
        return {
            "message": self.message,
            "field": self.field,
            "errors": self.errors,
            "error_count": self.error_count,
        }


def _shorten(value, limit=200):
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class RowErrors:
    """Collects row errors; keeps the first few in row order, counts all."""

    offset: int = 0  # rows before this batch (a command's earlier chunks)
    count: int = 0
    listed: list = field(default_factory=list)

    def add(self, index, field_name, value, message):
        self.count += 1
        self.listed.append(
            {
                "row": int(index) + 1 + self.offset,
                "field": field_name,
                "value": None if value is None else _shorten(value),
                "message": message,
            }
        )

    def add_many(self, indexes, field_name, values, message):
        """The same problem on several rows (``message`` may use ``{value}``)."""
        indexes = list(indexes)
        self.count += len(indexes)
        # Only the first few per problem can end up listed.
        for index, value in list(zip(indexes, values, strict=True))[:MAX_ERRORS_LISTED]:
            self.listed.append(
                {
                    "row": int(index) + 1 + self.offset,
                    "field": field_name,
                    "value": None if value is None else _shorten(value),
                    "message": message.format(value=_shorten(value, 60)),
                }
            )

    def raise_if_any(self):
        if not self.count:
            return
        self.listed.sort(key=lambda e: (e["row"], e["field"] or ""))
        listed = self.listed[:MAX_ERRORS_LISTED]
        first = listed[0]
        rows = "1 row has an error" if self.count == 1 else f"{self.count:,} row errors"
        raise IngestError(
            f"{rows}; nothing was stored. Row {first['row']}, {first['field']}: {first['message']}",
            field=first["field"],
            errors=listed,
            error_count=self.count,
        )


@contextmanager
def cycle_collector_paused():
    """Python's cyclic garbage collector off while a batch is read and stored.

    A 100,000-row batch makes a few million objects that live until the
    batch is stored (its rows as dicts, the frame, each row's values); every
    few thousand new objects the collector walks the ones alive, which cost
    ~0.1 s in reading a batch and ~0.2 s in storing it, a fifth of the
    request. None of these objects form reference cycles: they are freed as
    they are dropped, collector or not. It is turned back on after (unless
    it was off before, e.g. turned off by another request's thread that is
    still running: that one turns it back on).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def request_id_text(value):
    """A request id as it is stored: a whole number (JSON 123, or a CSV
    column pandas read as numbers) becomes its digits; anything else is
    returned as it is, for the caller to check."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def format_for(content_type):
    media = (content_type or "").split(";")[0].strip().lower()
    fmt = MEDIA_TYPES.get(media)
    if fmt is None:
        raise IngestError(
            f"Unsupported Content-Type “{media or 'none'}”: send application/json (a list of "
            "objects), application/x-ndjson (one object a line) or text/csv.",
            field="Content-Type",
            status=415,
        )
    return fmt


def too_many(rows):
    return IngestError(
        f"{rows:,} rows in one request; the limit is {MAX_ROWS:,} rows per request. "
        "Split the batch (the manage.py ingest_predictions command does this for files).",
        field="rows",
        status=413,
    )


def not_text(body: bytes, name="The body", field="body"):
    """An IngestError saying why ``body`` is no UTF-8 text (a binary file, or
    the first byte that is not UTF-8), or None. The same check as imports'
    (``leanml_site.textfiles``)."""
    problem = textfiles.body_problem(body, name)
    return None if problem is None else IngestError(problem, field=field)


def read_body(
    body: bytes,
    fmt,
    *,
    csv_text_columns=(),
    max_rows=MAX_ROWS,
    row_offset=0,
    name="The body",
    field="body",
) -> pd.DataFrame:
    """A frame of the body's rows (index 0..n-1); JSON rows must be objects.
    ``row_offset``: rows before these (a file's earlier chunks), for messages;
    ``name`` and ``field``: what messages call the body (an uploaded file's
    name and "file")."""
    kind = textfiles.binary_kind(body[: textfiles.HEAD_BYTES])
    if kind is not None:
        # Before any parser: a binary file is no CSV "column" and no codec error.
        raise IngestError(textfiles.not_text_message(name, kind), field=field)
    if fmt == "csv":
        return _read_csv(body, csv_text_columns, max_rows, name, field)
    if fmt == "jsonl":
        lines = body.splitlines()
        # A trailing newline (or blank lines) is not a row; row numbers
        # count the lines that are.
        lines = [line for line in lines if line.strip()]
        if len(lines) > max_rows:
            raise too_many(len(lines))
        try:
            records, finite = _loads(b"[" + b",".join(lines) + b"]")
        except ValueError:
            if error := not_text(body, name, field):
                raise error from None
            _raise_bad_json_line(lines, row_offset)
    else:
        try:
            records, finite = _loads(body)
        except ValueError as exc:
            raise not_text(body, name, field) or IngestError(
                f"{name} is not valid JSON: {exc}.", field=field, status=400
            ) from None
        if not isinstance(records, list):
            raise IngestError(
                f"{name} must be a JSON list of objects (one per prediction).", field=field
            )
        if len(records) > max_rows:
            raise too_many(len(records))
    errors = RowErrors(offset=row_offset)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            errors.add(index, "row", record, "each row must be a JSON object")
            if errors.count >= MAX_ERRORS_LISTED:
                break
    errors.raise_if_any()
    if not records:
        raise IngestError("The batch is empty.", field=field)
    frame = pd.DataFrame.from_records(records)
    # Slices and copies of the frame keep it (pandas carries ``attrs``).
    frame.attrs[FINITE_JSON] = finite
    return frame


# ``frame.attrs[FINITE_JSON]``: the rows were read by orjson, so every number
# in them is finite and every integer fits in 64 bits; they can be written
# back with orjson, whose writer would turn NaN or infinity into null rather
# than refuse them.
FINITE_JSON = "finite_json"

# Maps every digit to "0" and every other byte to a space: twenty zeros in a
# row then mean an integer orjson would read as a float, losing digits.
_DIGITS = bytes(ord("0") if chr(i).isdigit() and i < 128 else ord(" ") for i in range(256))


def _loads(body: bytes):
    """``(value, finite)``: orjson reads the usual body ~3× faster than the
    json module. The json module decides whatever orjson refuses (NaN and
    Infinity, which Python clients write, then get row-level errors; its
    messages for broken JSON) and bodies with integers longer than 19
    digits, which it keeps exact."""
    if b"0" * 20 not in body.translate(_DIGITS):
        try:
            return orjson.loads(body), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(body), False


def _raise_bad_json_line(lines, row_offset):
    errors = RowErrors(offset=row_offset)
    for index, line in enumerate(lines):
        try:
            json.loads(line)
        except ValueError as exc:
            errors.add(index, "row", line.decode("utf-8", "replace"), f"not valid JSON ({exc})")
            if errors.count >= MAX_ERRORS_LISTED:
                break
    errors.raise_if_any()
    raise IngestError("The body is not valid JSON Lines.", field="body")  # pragma: no cover


def _read_csv(body, text_columns, max_rows, name, field):
    try:
        frame = pd.read_csv(
            io.BytesIO(body),
            dtype=dict.fromkeys(text_columns, str),
            encoding="utf-8",
            # "NA" or "null" may be a real value of a text field; only an
            # empty cell means "no value".
            keep_default_na=False,
            na_values=[""],
        )
    except pd.errors.EmptyDataError:
        raise IngestError(
            f"{name} is empty: expected a CSV header row and data rows.", field=field
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise not_text(body, name, field) or IngestError(
            f"{name} cannot be read as CSV: {exc}", field=field
        ) from None
    if len(frame) > max_rows:
        raise too_many(len(frame))
    if frame.empty:
        raise IngestError("The batch is empty.", field=field)
    return frame
