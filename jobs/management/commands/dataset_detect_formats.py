"""``manage.py dataset_detect_formats``: record format, task and labels of datasets uploaded before they were
detected (their ``format`` is empty). Idempotent; a file today's reader refuses is reported and kept."""

from django.core.management.base import BaseCommand

from finetune_studio.objects import StorageError
from jobs import services
from jobs.models import Dataset


class Command(BaseCommand):
    help = "Detect the record format and task of datasets uploaded before formats were detected."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="read every dataset again, not only undetected ones")

    def handle(self, *args, all: bool, **options):
        datasets = Dataset.objects.all() if all else Dataset.objects.filter(format="")
        done = refused = 0
        for dataset_id in datasets.values_list("id", flat=True):
            try:
                dataset = services.dataset_detect_format(dataset_id=dataset_id)
            except (services.DatasetInvalid, StorageError) as exc:
                refused += 1
                self.stderr.write(f"dataset #{dataset_id}: {exc}")
                continue
            done += 1
            self.stdout.write(f"dataset #{dataset.id}: {dataset.get_format_display()} ({dataset.task})")
        self.stdout.write(self.style.SUCCESS(f"{done} dataset(s) detected, {refused} refused."))
