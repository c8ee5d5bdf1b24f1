from django.db import migrations, models


def lora_sft_demo_preset(apps, schema_editor):
    """Installations from before presets keep their trainer rows (never overwritten): add lora-sft's preset."""
    from trainers.lora_sft.definition import DEFINITION

    Trainer = apps.get_model("jobs", "Trainer")
    for trainer in Trainer.objects.filter(name=DEFINITION["name"], presets={}):
        trainer.presets = DEFINITION["presets"]
        trainer.save(update_fields=["presets"])


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0003_trainer_loads_base_model"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainer",
            name="presets",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="job",
            name="preset",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.RunPython(lora_sft_demo_preset, migrations.RunPython.noop),
    ]
