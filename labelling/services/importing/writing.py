"""Phase 2 of an import: write the prepared rows in the caller's transaction."""

from django.db import connection
from django.db.models import Max

from leanml_site.audit import audit_record

from ...models import (
    Annotation,
    Project,
    QueueItem,
    Sample,
    SampleRevision,
    validate_field_config,
)
from ..consensus import consensus_refresh
from .preparing import BATCH, PostgresStage


def _table(model):
    return connection.ops.quote_name(model._meta.db_table)


def _columns(model, *names):
    return ", ".join(connection.ops.quote_name(model._meta.get_field(n).column) for n in names)


def _insert_from_stage(cursor, model, columns, select, where, params):
    # Identifiers come from model metadata and constants; values are parameters.
    cursor.execute(
        f"INSERT INTO {_table(model)} ({_columns(model, *columns)}) SELECT {select} FROM {PostgresStage.table} WHERE {where}",  # noqa: S608
        params,
    )
    return cursor.rowcount


def write_new_postgres(project, by, stage, now, report):
    """Samples, their queue items and imported labels, set-based.

    One statement per table: each reads the whole staging table once (it
    has no index, so slicing it for progress made every slice a full scan).
    The queue rows are what ``queue_add`` writes for a sample with no open item
    (these samples are new, so none has one), in one statement instead of a
    Python object per sample. The staging table was filled in id order (the
    file's), and a scan returns it so: the indexes led by the id, the project
    or the sample grow at their right edge, and inserting in content-hash
    order instead (for the hash index) measured twice as slow.
    """
    counts = {"queued": 0, "labels": 0}
    if not stage.count:
        return counts
    with connection.cursor() as cursor:
        _insert_from_stage(
            cursor,
            Sample,
            ("id", "project", "external_id", "data", "content_hash", "revision", "source")
            + ("split", "status", "consensus_state", "consensus_label", "created_at"),
            "id, %s, external_id, data, content_hash, 0, %s, split, %s, "
            "consensus_state, consensus_label_id, %s",
            "true",
            [project.pk, Sample.Source.IMPORT, Sample.Status.ACTIVE, now],
        )
        report(0.8, f"Queueing {stage.count - stage.labelled:,} samples")
        counts["queued"] = _insert_from_stage(
            cursor,
            QueueItem,
            ("project", "sample", "priority", "strategy", "score", "reason", "state")
            + ("claims", "labels_done", "created_at"),
            "%s, id, 0, %s, NULL, %s, %s, 0, 0, %s",
            "label_id IS NULL",
            [project.pk, "imported", "Imported", QueueItem.State.OPEN, now],
        )
        if stage.labelled:
            report(0.9, f"Recording {stage.labelled:,} imported labels")
            counts["labels"] = _insert_from_stage(
                cursor,
                Annotation,
                ("project", "sample", "annotator", "kind", "label", "origin", "seconds")
                + ("revision", "created_at"),
                "%s, id, %s, %s, label_id, %s, NULL, 0, %s",
                "label_id IS NOT NULL",
                [project.pk, by.pk, Annotation.Kind.LABEL, Annotation.Origin.IMPORT, now],
            )
    return counts


def _insert_many(cursor, model, columns, rows):
    placeholders = ", ".join(["%s"] * len(columns))
    cursor.executemany(
        f"INSERT INTO {_table(model)} ({_columns(model, *columns)}) VALUES ({placeholders})",  # noqa: S608
        rows,
    )


def _next_sample_id(cursor):
    """The id SQLite's AUTOINCREMENT would give the next sample: never one a
    deleted sample had (its audit events still name it)."""
    # The table name comes from model metadata; the value is a parameter.
    cursor.execute(f"SELECT max(id) FROM {_table(Sample)}")  # noqa: S608
    last = cursor.fetchone()[0] or 0
    cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [Sample._meta.db_table])
    used = cursor.fetchone()
    return max(last, used[0] if used else 0) + 1


def analyze_tables(*, labels):
    """Refresh PostgreSQL's statistics of the tables a large import grew.

    Until the next ANALYZE the planner believes the project is as small as it
    was: right after a 1,000,000-row import, looking up 5,000 ids (the next
    import's skip check) took ~0.6 s by bitmap scan instead of 17 ms by the
    unique index, and a re-import ran 167 s instead of seconds. Autovacuum
    gets there eventually (or never, where it is off); this costs ~1 s.
    Run after the commit, outside the import's transaction.
    """
    models = [Sample, QueueItem] + ([Annotation] if labels else [])
    with connection.cursor() as cursor:
        for model in models:
            cursor.execute(f"ANALYZE {_table(model)}")


def write_new_portable(project, by, spool, now, report):
    """Samples, queue items and labels by plain ``executemany`` (SQLite).

    SQLite has one writer at a time and this transaction is it (immediate
    mode), so the ids are numbered here, like AUTOINCREMENT would, and the
    queue items and labels refer to them without reading the samples back or
    building a model object per row: 100,000 rows went from 39 s to a few.
    The rows are what ``bulk_create`` and ``queue_add`` would write.
    """
    counts = {"queued": 0, "labels": 0}
    created = connection.ops.adapt_datetimefield_value(now)
    done = 0
    with connection.cursor() as cursor:
        next_id = _next_sample_id(cursor)
        for rows in spool:
            ids = range(next_id, next_id + len(rows))
            next_id += len(rows)
            _insert_many(
                cursor,
                Sample,
                ("id", "project", "external_id", "data", "content_hash", "revision", "source")
                + ("split", "status", "consensus_state", "consensus_label", "created_at"),
                [
                    (pk, project.pk, external_id, text, digest, 0, Sample.Source.IMPORT)
                    + (split, Sample.Status.ACTIVE, state, consensus_label, created)
                    for pk, (
                        external_id,
                        text,
                        digest,
                        split,
                        state,
                        consensus_label,
                        _label,
                    ) in zip(ids, rows, strict=True)
                ],
            )
            queued = [
                (project.pk, pk, 0.0, "imported", None, "Imported", QueueItem.State.OPEN)
                for pk, row in zip(ids, rows, strict=True)
                if row[6] is None
            ]
            _insert_many(
                cursor,
                QueueItem,
                ("project", "sample", "priority", "strategy", "score", "reason", "state")
                + ("claims", "labels_done", "created_at"),
                [item + (0, 0, created) for item in queued],
            )
            counts["queued"] += len(queued)
            labels = [
                (project.pk, pk, by.pk, Annotation.Kind.LABEL, row[6], Annotation.Origin.IMPORT)
                + (None, 0, created)
                for pk, row in zip(ids, rows, strict=True)
                if row[6] is not None
            ]
            _insert_many(
                cursor,
                Annotation,
                ("project", "sample", "annotator", "kind", "label", "origin", "seconds")
                + ("revision", "created_at"),
                labels,
            )
            counts["labels"] += len(labels)
            done += len(rows)
            report(0.6 + 0.35 * done / max(spool.count, 1), None)
    return counts


def write_updates(project, by, updates, job_note):
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


def project_fields_set(project, by, fields):
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
