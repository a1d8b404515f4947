"""The log table's foreign keys lose their database constraints and their
single-column indexes (see ``PredictionLog``). On PostgreSQL, triggers on
the referenced tables take over what the constraints did on the deleting
side: a project or a model version that still has prediction logs cannot be
deleted (Django deletes a project's logs first; the trigger catches a batch
that committed meanwhile, since ingestion holds the rows FOR KEY SHARE)."""

import django.db.models.deletion
from django.db import migrations, models

REFUSE = """
CREATE FUNCTION monitoring_refuse_delete_with_logs() RETURNS trigger AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM monitoring_predictionlog
        WHERE (TG_ARGV[0] = 'project' AND project_id = OLD.id)
           OR (TG_ARGV[0] = 'model_version' AND model_version_id = OLD.id)
    ) THEN
        RAISE EXCEPTION '% % still has prediction logs', TG_ARGV[0], OLD.id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER monitoring_project_logs BEFORE DELETE ON labelling_project
    FOR EACH ROW EXECUTE FUNCTION monitoring_refuse_delete_with_logs('project');
CREATE TRIGGER monitoring_version_logs BEFORE DELETE ON iterations_modelversion
    FOR EACH ROW EXECUTE FUNCTION monitoring_refuse_delete_with_logs('model_version');
"""

ALLOW = """
DROP TRIGGER monitoring_version_logs ON iterations_modelversion;
DROP TRIGGER monitoring_project_logs ON labelling_project;
DROP FUNCTION monitoring_refuse_delete_with_logs();
"""


def refuse(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(REFUSE, params=None)


def allow(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(ALLOW, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("iterations", "0002_version_iteration"),
        ("labelling", "0003_trim_write_indexes"),
        ("monitoring", "0002_windows_drift_alerts_surfacing"),
    ]

    operations = [
        migrations.AlterField(
            model_name="predictionlog",
            name="model_version",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="prediction_logs",
                to="iterations.modelversion",
            ),
        ),
        migrations.AlterField(
            model_name="predictionlog",
            name="project",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="prediction_logs",
                to="labelling.project",
            ),
        ),
        migrations.RunPython(refuse, allow),
    ]
