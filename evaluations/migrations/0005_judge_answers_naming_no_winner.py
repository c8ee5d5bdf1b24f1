from django.db import migrations

# What parse_verdict wrote as the reason of an answer naming no winner, stored then as a "tie". Copied here:
# this migration must keep matching the rows written before it, whatever the code says later.
NAMED_NO_WINNER = "the judge's answer named no winner: "


def tell_no_winner_from_tie(apps, schema_editor):
    JudgeAnswer = apps.get_model("evaluations", "JudgeAnswer")
    JudgeAnswer.objects.filter(winner="tie", reason__startswith=NAMED_NO_WINNER).update(winner="none")


def count_no_winner_as_tie(apps, schema_editor):
    JudgeAnswer = apps.get_model("evaluations", "JudgeAnswer")
    JudgeAnswer.objects.filter(winner="none").update(winner="tie")


class Migration(migrations.Migration):
    """Cached judge answers that named no winner were kept as "tie": they become "none", so a re-run that
    reads them from the cache counts them as pairs the judge did not decide."""

    dependencies = [("evaluations", "0004_merge_attempts_and_generation")]

    operations = [migrations.RunPython(tell_no_winner_from_tie, count_no_winner_as_tie)]
