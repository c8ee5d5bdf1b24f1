from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from finetune_studio.objects import StorageError, buckets_create


class Command(BaseCommand):
    help = "Create the datasets, models and logs buckets that do not exist yet (private); safe to run again."

    def handle(self, *args, **options):
        try:
            created = buckets_create()
        except StorageError as exc:
            raise CommandError(f"Could not create the buckets: {exc}") from exc
        where = settings.S3_ENDPOINT_URL if settings.STORAGE_BACKEND == "s3" else settings.LOCAL_STORAGE_ROOT
        for alias, was_created in created.items():
            state = "created" if was_created else "exists"
            self.stdout.write(f"{alias}: {settings.BUCKETS[alias]} ({state}) on {where}")
