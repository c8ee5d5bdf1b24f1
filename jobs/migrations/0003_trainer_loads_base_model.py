from django.db import migrations, models

# Trainers that only record their base model's name; every other trainer loads it and has it checked.
RECORD_ONLY = ("external", "example")


def record_only_builtins(apps, schema_editor):
    Trainer = apps.get_model("jobs", "Trainer")
    Trainer.objects.filter(name__in=RECORD_ONLY).update(loads_base_model=False)


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0002_job_lease_metrics_trainer_modules"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainer",
            name="loads_base_model",
            field=models.BooleanField(default=True),
        ),
        migrations.RunPython(record_only_builtins, migrations.RunPython.noop),
    ]
