from django.db import migrations


class Migration(migrations.Migration):
    """Registered names on jobs were written beside formats and presets; neither depends on the other."""

    dependencies = [
        ("jobs", "0003_job_registered_name"),
        ("jobs", "0005_merge_formats_and_presets"),
    ]

    operations = []
