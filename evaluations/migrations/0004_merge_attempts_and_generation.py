from django.db import migrations


class Migration(migrations.Migration):
    """The attempts counter and generation scores were written side by side; neither depends on the other."""

    dependencies = [
        ("evaluations", "0003_evaluation_attempts_since_retry"),
        ("evaluations", "0003_generation_scores_judge_cache"),
    ]

    operations = []
