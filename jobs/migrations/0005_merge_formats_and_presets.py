from django.db import migrations


class Migration(migrations.Migration):
    """Dataset formats and trainer presets were written side by side; neither depends on the other."""

    dependencies = [
        ("jobs", "0003_dataset_record_format_task"),
        ("jobs", "0004_trainer_presets_job_preset"),
    ]

    operations = []
