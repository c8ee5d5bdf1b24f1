"""System checks of the core: what `manage.py check` (and migrate, and every command) warns about."""

from django.conf import settings
from django.core import checks

from .objects import StorageError, buckets_missing


@checks.register("storage")
def check_buckets_exist(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A fresh S3/MinIO has no buckets: the first upload would answer 503 "NoSuchBucket"; say so before."""
    if settings.STORAGE_BACKEND != "s3":
        return []
    try:
        missing = buckets_missing()
    except StorageError as exc:
        return [
            checks.Warning(
                f"Could not check the buckets on {settings.S3_ENDPOINT_URL}: {exc}",
                hint="Is S3/MinIO reachable with S3_ENDPOINT_URL and the access keys?",
                id="finetune_studio.W002",
            )
        ]
    return [
        checks.Warning(
            f"The {alias} bucket {settings.BUCKETS[alias]!r} does not exist on {settings.S3_ENDPOINT_URL}.",
            hint="Run `python manage.py buckets_create` to create the missing buckets (private).",
            id="finetune_studio.W001",
        )
        for alias in missing
    ]
