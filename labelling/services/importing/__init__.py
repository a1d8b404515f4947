"""Import samples from CSV, JSON, JSON Lines and Label Studio JSON exports.

All-or-nothing, in two phases:

1. Read the file once, in chunks, through pandas; validate every row and
   prepare exactly what will be written (data, content hash, split, label,
   consensus). The project's tables are not touched: the first bad row stops
   the import with its file, row, column and value. On PostgreSQL the
   prepared rows stream by COPY into a session-local temporary table, so the
   server parses them while Python reads on; elsewhere they are pickled to a
   temporary file of our own.
2. Write everything in one transaction, without a Python object per row: on
   PostgreSQL one set-based ``INSERT … SELECT`` per table from the staging
   table, on SQLite ``executemany`` with ids numbered in the transaction.
   (A 1,000,000-row CSV takes about a minute on PostgreSQL, most of it the
   server maintaining indexes and checking foreign keys; see bench/README.md.)

Rows are counted from 1 at the first data row: in a CSV opened in a
spreadsheet, row N is spreadsheet row N + 1 (the header is spreadsheet row 1);
in JSON and JSON Lines it is the Nth object.
"""

from .jobs import (
    RUN_SOFT_TIME_LIMIT,
    RUN_TIME_LIMIT,
    STALE_AFTER,
    import_job_create,
    import_job_progress,
    import_job_run,
    import_path,
)
from .reading import FORMAT_BY_EXTENSION, ImportFileError, detect_format

__all__ = [
    "FORMAT_BY_EXTENSION",
    "RUN_SOFT_TIME_LIMIT",
    "RUN_TIME_LIMIT",
    "STALE_AFTER",
    "ImportFileError",
    "detect_format",
    "import_job_create",
    "import_job_progress",
    "import_job_run",
    "import_path",
]
