"""``manage.py dataset_detect_formats``: what the records decide (format, task, labels, tools, tool-call answers)
for datasets uploaded before it was detected. Idempotent; a file today's reader refuses is reported and kept.

Undetected: no record format, or OpenAI chat with no tools recorded (uploaded before tools were counted; a chat
set that has none is read again on every run, which changes nothing)."""

from django.core.management.base import BaseCommand
from django.db.models import Q

from finetune_studio.objects import StorageError
from jobs import services
from jobs.models import Dataset


class Command(BaseCommand):
    help = "Detect the record format, task and tools of datasets uploaded before they were detected."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="read every dataset again, not only undetected ones")

    def handle(self, *args, all: bool, **options):
        undetected = Q(format="") | Q(format=Dataset.Format.OPENAI_CHAT, tools=[])
        datasets = Dataset.objects.all() if all else Dataset.objects.filter(undetected)
        done = refused = 0
        for dataset_id in datasets.values_list("id", flat=True):
            try:
                dataset = services.dataset_detect_format(dataset_id=dataset_id)
            except (services.DatasetInvalid, StorageError) as exc:
                refused += 1
                self.stderr.write(f"dataset #{dataset_id}: {exc}")
                continue
            done += 1
            tools = f", tools: {', '.join(dataset.tools)}" if dataset.tools else ""
            self.stdout.write(f"dataset #{dataset.id}: {dataset.get_format_display()} ({dataset.task}{tools})")
        self.stdout.write(self.style.SUCCESS(f"{done} dataset(s) detected, {refused} refused."))
