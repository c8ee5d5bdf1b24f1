from django.db import migrations, models

# The built-in trainers' declared formats (trainers/*/definition.py), for their rows made before the field existed
# (the field is new: every row holds the default, so nothing an operator chose is overwritten).
DECLARED = {"lora-dpo": ["preference"]}


def declare_builtin_formats(apps, schema_editor):
    Trainer = apps.get_model("jobs", "Trainer")
    for name, formats in DECLARED.items():
        Trainer.objects.filter(name=name).update(record_formats=formats)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0009_dataset_format_preference")]

    operations = [
        migrations.AddField(
            model_name="trainer",
            name="record_formats",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(declare_builtin_formats, migrations.RunPython.noop),
    ]
