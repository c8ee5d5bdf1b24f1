import django.db.models.deletion
from django.db import migrations, models

# Log lines are the hottest table: two per-row costs go.
# - The job_id index: the (job, seq) unique index serves every lookup by job.
# - The foreign-key constraint: PostgreSQL checks it row by row at commit (1,000 checks per batch,
#   40 % of a batch's database time). log_lines_append locks the job row (FOR KEY SHARE) in the
#   same transaction, which is what that check does, and job_delete locks it FOR UPDATE first.
# Django's AlterField would rebuild both on PostgreSQL; these statements only drop them. SQLite
# (standalone mode) keeps its table as it is.
JOB_INDEX = "log_entries_job_id_60ed4572"
JOB_FOREIGN_KEY = "log_entries_job_id_60ed4572_fk_jobs_job_id"


def drop_index_and_foreign_key(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE log_entries DROP CONSTRAINT IF EXISTS {JOB_FOREIGN_KEY}")
        schema_editor.execute(f"DROP INDEX IF EXISTS {JOB_INDEX}")


def restore_index_and_foreign_key(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS {JOB_INDEX} ON log_entries ("job_id")')
        schema_editor.execute(
            f'ALTER TABLE log_entries ADD CONSTRAINT {JOB_FOREIGN_KEY} FOREIGN KEY ("job_id")'
            ' REFERENCES jobs_job ("id") DEFERRABLE INITIALLY DEFERRED'
        )


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0002_job_lease_metrics_trainer_modules"),
        ("logs_app", "0002_logstream_logcursor"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="logentry",
                    name="job",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="log_entries",
                        to="jobs.job",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop_index_and_foreign_key, restore_index_and_foreign_key)],
        ),
    ]
