from django.db import migrations, models


class Migration(migrations.Migration):
    """``format`` becomes the records' shape; the file encoding it used to hold moves to ``file_format``.

    Rows uploaded before keep ``format`` empty ("not detected") and ``task`` classification (how they were
    read then) until ``manage.py dataset_detect_formats`` reads their files again.
    """

    dependencies = [("jobs", "0002_job_lease_metrics_trainer_modules")]

    operations = [
        migrations.RenameField(model_name="dataset", old_name="format", new_name="file_format"),
        migrations.AlterField(
            model_name="dataset",
            name="file_format",
            field=models.CharField(
                choices=[("json", "JSON array"), ("jsonl", "JSON lines"), ("csv", "CSV")], max_length=10
            ),
        ),
        migrations.AddField(
            model_name="dataset",
            name="format",
            field=models.CharField(
                blank=True,
                choices=[
                    ("openai_chat", "OpenAI chat"),
                    ("sharegpt", "ShareGPT"),
                    ("alpaca", "Alpaca"),
                    ("prompt_completion", "prompt/completion"),
                    ("text_label", "text/label"),
                    ("", "not detected"),
                ],
                default="",
                max_length=20,
            ),
        ),
        migrations.AddField(
            model_name="dataset",
            name="task",
            field=models.CharField(
                choices=[("classification", "Classification"), ("generation", "Generation")],
                default="classification",
                max_length=20,
            ),
        ),
    ]
