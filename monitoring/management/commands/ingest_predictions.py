"""Stream a file of prediction logs (millions of rows) into a project.

    manage.py ingest_predictions <project id> <file> [--format csv|jsonl|json]
                                 [--chunk-rows 100000]

Each chunk is one all-or-nothing batch, like one API request. A chunk with
bad rows stops the run: the chunks before it stay stored, and because
ingestion is idempotent by request id, running the command again on the
fixed file stores only what is missing.
"""

import itertools
import math
import time
from pathlib import Path

import pandas as pd
from django.core.management.base import BaseCommand, CommandError

from labelling.models import Project
from leanml_site import textfiles
from monitoring.services.parsing import (
    MAX_ROWS,
    IngestError,
    cycle_collector_paused,
    read_body,
)
from monitoring.services.predictions import CSV_TEXT_COLUMNS, prediction_logs_ingest

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}


class Command(BaseCommand):
    help = "Ingest a file of prediction logs in chunks (each chunk all-or-nothing)."

    def add_arguments(self, parser):
        parser.add_argument("project", type=int, help="Project id.")
        parser.add_argument("file", type=Path)
        parser.add_argument("--format", choices=sorted(set(FORMATS.values())))
        parser.add_argument("--chunk-rows", type=int, default=MAX_ROWS)

    def handle(self, *args, project, file, format, chunk_rows, **options):
        try:
            project = Project.objects.get(pk=project)
        except Project.DoesNotExist:
            raise CommandError(f"No project with id {project}.") from None
        if not file.is_file():
            raise CommandError(f"No such file: {file}")
        fmt = format or FORMATS.get(file.suffix.lower())
        if fmt is None:
            raise CommandError(f"Cannot tell the format of {file.name}: pass --format.")
        if not 0 < chunk_rows <= MAX_ROWS:
            raise CommandError(f"--chunk-rows must be between 1 and {MAX_ROWS:,}.")
        with file.open("rb") as handle:
            kind = textfiles.binary_kind(handle.read(textfiles.HEAD_BYTES))
        if kind is not None:
            raise CommandError(textfiles.not_text_message(file.name, kind))
        started = time.perf_counter()
        totals = {"stored": 0, "already_stored": 0}
        offset = 0
        try:
            with cycle_collector_paused():
                for frame in _chunks(file, fmt, chunk_rows):
                    counts = prediction_logs_ingest(
                        project=project, frame=frame, fmt=fmt, row_offset=offset
                    )
                    offset += len(frame)
                    for name in totals:
                        totals[name] += counts[name]
                    self.stdout.write(
                        f"{offset:,} rows read: {totals['stored']:,} stored, "
                        f"{totals['already_stored']:,} already stored "
                        f"({time.perf_counter() - started:.1f} s)"
                    )
        except IngestError as error:
            # A chunk's parser only sees its own lines: where the file stops
            # being UTF-8 text is told from the whole file.
            not_text = textfiles.path_problem(file, file.name)
            lines = [f"Rows {offset + 1:,} onwards were not stored: {not_text or error.message}"]
            if not not_text:
                lines += [
                    f"  row {e['row']}, {e['field']}: {e['message']} (value: {e['value']})"
                    for e in error.errors
                ]
            if offset:
                lines.append(
                    f"The first {offset:,} rows are stored; fix the file and run the command "
                    "again (rows already stored are skipped)."
                )
            raise CommandError("\n".join(lines)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Done: {offset:,} rows, {totals['stored']:,} stored, "
                f"{totals['already_stored']:,} already stored."
            )
        )


def _chunks(path, fmt, size):
    if fmt == "csv":
        try:
            reader = pd.read_csv(
                path,
                dtype=dict.fromkeys(CSV_TEXT_COLUMNS, str),
                keep_default_na=False,
                na_values=[""],
                chunksize=size,
            )
            yield from reader
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise IngestError(f"The CSV file cannot be read: {exc}", field="file") from None
    elif fmt == "jsonl":
        done = 0
        with path.open("rb") as handle:
            lines = (line for line in handle if line.strip())
            while batch := list(itertools.islice(lines, size)):
                yield read_body(b"\n".join(batch), "jsonl", row_offset=done)
                done += len(batch)
    else:
        # A JSON list has to be read whole; JSON Lines or CSV stream.
        frame = (
            read_body(path.read_bytes(), "json", max_rows=math.inf) if path.stat().st_size else None
        )
        if frame is None:
            raise IngestError("The file is empty.", field="file")
        for start in range(0, len(frame), size):
            yield frame.iloc[start : start + size]
