from django.db import migrations, models

# The built-in trainers that train a registry version further (trainers/*/definition.py), for their rows made
# before the field existed (the field is new: nothing an operator chose is overwritten).
TAKE_INITIAL_ADAPTER = ("lora-sft", "lora-dpo")


def declare_builtin_initial_adapters(apps, schema_editor):
    apps.get_model("jobs", "Trainer").objects.filter(name__in=TAKE_INITIAL_ADAPTER).update(takes_initial_adapter=True)


class Migration(migrations.Migration):
    dependencies = [("jobs", "0010_trainer_record_formats")]

    operations = [
        migrations.AddField(
            model_name="trainer",
            name="takes_initial_adapter",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="job",
            name="initial_adapter",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RunPython(declare_builtin_initial_adapters, migrations.RunPython.noop),
    ]
