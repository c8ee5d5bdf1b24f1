from django.db import migrations


class Migration(migrations.Migration):
    """The live deployment record and the registry's names were written side by side."""

    dependencies = [
        ("models_app", "0005_live_deployment_and_last_attempt"),
        ("models_app", "0007_aliases_and_gates"),
    ]

    operations = []
