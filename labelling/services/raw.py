"""Raw SQL for the labelling hot path ("next sample", "submit label").

The ORM spends more CPU compiling a query than PostgreSQL spends running it:
a label round trip of ~26 ORM queries cost ~15 ms of Python on a 2-core
machine. The hot path therefore writes its few statements by hand and turns
rows back into ordinary model instances here, with the same database
converters the ORM applies (JSON decoding, SQLite datetimes), so callers
cannot tell the difference.

On PostgreSQL the statements go through a server-side-binding cursor and are
prepared once per connection (planning the "next" statement costs more than
running it); Django's own cursors keep client-side binding, so nothing else
changes. Prepared statements live in the database session: behind a
transaction-mode pooler (PgBouncer < 1.21) set ``LEANML_PREPARED_SQL = False``.
"""

import contextlib
import fcntl
import os
import threading
import time

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from psycopg.types.numeric import Int8

_CONVERTERS = {}


def db():
    """The default database connection itself. ``django.db.connection`` is a
    proxy that looks it up (thread- and task-locally) on every attribute
    access; the hot path does that once per call instead."""
    return connections[DEFAULT_DB_ALIAS]


def columns(model, alias, fields=None) -> str:
    """``alias."col", ...`` for ``fields`` (attnames; all concrete fields by default)."""
    return ", ".join(f'{alias}."{f.column}"' for f in _fields(model, fields))


def _fields(model, fields):
    concrete = model._meta.concrete_fields
    if fields is None:
        return concrete
    wanted = set(fields)
    return [f for f in concrete if f.attname in wanted]


def _converters(conn, model, fields):
    key = (conn.vendor, model, fields)
    found = _CONVERTERS.get(key)
    if found is None:
        spec = []
        for field in _fields(model, fields):
            col = field.get_col(model._meta.db_table)
            chain = [*conn.ops.get_db_converters(col), *col.get_db_converters(conn)]
            spec.append((col, chain))
        names = [field.attname for field in _fields(model, fields)]
        found = _CONVERTERS[key] = (names, spec)
    return found


def instance(model, values, fields=None, *, conn=None):
    """A model instance from ``values`` in concrete-field order (``fields``:
    the attnames selected by ``columns(model, alias, fields)``; the others
    are deferred and load on access, as with ``.only()``)."""
    conn = conn or db()
    names, spec = _converters(conn, model, fields)
    converted = []
    for (col, chain), value in zip(spec, values, strict=True):
        for convert in chain:
            value = convert(value, col, conn)
        converted.append(value)
    return model.from_db(conn.alias, names, converted)


def adapt_datetime(value, *, conn=None):
    """A datetime as the backend stores it (SQLite keeps naive UTC text)."""
    return (conn or db()).ops.adapt_datetimefield_value(value)


def convert_datetime(value, model, attname, *, conn=None):
    """A datetime column read by raw SQL, as the ORM would return it."""
    conn = conn or db()
    _, spec = _converters(conn, model, (attname,))
    for col, chain in spec:
        for convert in chain:
            value = convert(value, col, conn)
    return value


_SQLITE_WRITER = threading.Lock()
_WRITER_FILES = {}  # (process id, lock file path) -> file descriptor, open for good


@contextlib.contextmanager
def one_writer(conn=None):
    """SQLite: let the hot path's writers queue for the database's write lock
    on locks that wake the next one at once: a Python lock between this
    process's threads, then an exclusive ``flock`` on a file beside the
    database between processes (gunicorn's workers). SQLite's own busy
    handler makes a waiting writer sleep (up to 100 ms a try) however soon
    the lock frees, which was most of the labelling round trip's worst
    latencies under load. Only around a transaction of our own: inside a
    caller's transaction (which may hold SQLite's lock already) it would be
    a second lock to deadlock on; so a holder of these locks may wait for
    SQLite's lock, never the other way round. Other writers (the ORM
    elsewhere) still meet SQLite's busy handler. Elsewhere (PostgreSQL) it
    does nothing."""
    conn = conn or db()
    if conn.vendor != "sqlite" or conn.in_atomic_block:
        yield
        return
    with _SQLITE_WRITER:
        fd = _writer_file(conn)
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _writer_file(conn):
    """The lock file's descriptor for ``conn``'s database (None for an
    in-memory one). Per process: a file opened before a fork would be one
    lock shared by parent and children, excluding nobody."""
    if conn.is_in_memory_db():
        return None
    key = (os.getpid(), str(conn.settings_dict["NAME"]))
    fd = _WRITER_FILES.get(key)
    if fd is None:
        fd = _WRITER_FILES[key] = os.open(f"{key[1]}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    return fd


def prepared_cursor(conn=None):
    """A cursor for the hot path's own statements.

    PostgreSQL: a psycopg server-side-binding cursor on Django's connection,
    whose statements psycopg prepares once per session (it re-prepares by
    itself after a reconnect or a failed transaction). Elsewhere, or with
    ``LEANML_PREPARED_SQL = False``: Django's cursor. Either way errors are
    Django's (``IntegrityError``...) and an atomic block around the call
    rolls back as usual. Use as ``with prepared_cursor() as cursor:``.
    """
    conn = conn or db()
    if conn.vendor != "postgresql" or not getattr(settings, "LEANML_PREPARED_SQL", True):
        return conn.cursor()
    return _PreparedCursor(conn)


class _PreparedCursor:
    def __init__(self, conn):
        self._conn = conn

    def __enter__(self):
        import psycopg

        conn = self._conn
        conn.ensure_connection()
        conn.validate_no_broken_transaction()
        raw = conn.connection
        if raw.prepare_threshold is None:
            # Django turns psycopg's automatic preparation off (for poolers);
            # its client-side-binding cursors never prepare anyway, so this
            # only lets our explicit ``prepare=True`` through.
            raw.prepare_threshold = 1 << 30
        self._cursor = psycopg.Cursor(raw)
        self._errors = conn.wrap_database_errors
        self._errors.__enter__()
        return self

    def __exit__(self, *exc):
        self._cursor.close()
        # Turns psycopg's exceptions into Django's (IntegrityError...).
        return self._errors.__exit__(*exc)

    def execute(self, sql, params):
        # One prepared statement per text and parameter types: without this
        # psycopg would send small ids as int2 and large ones as int4/int8.
        params = {k: Int8(v) if type(v) is int else v for k, v in params.items()}
        if not self._conn.queries_logged:
            return self._cursor.execute(sql, params, prepare=True)
        started = time.monotonic()
        try:
            return self._cursor.execute(sql, params, prepare=True)
        finally:
            # What Django's debug cursor records, so query counts stay honest.
            self._conn.queries_log.append(
                {"sql": f"{sql} -- {params!r}", "time": f"{time.monotonic() - started:.3f}"}
            )

    def fetchone(self):
        return self._cursor.fetchone()

    def fetchall(self):
        return self._cursor.fetchall()
