from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_builtin_trainers(sender, **kwargs) -> None:
    from .services import trainer_sync_builtin

    trainer_sync_builtin()


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        # After every migrate (and test-database flush): built-in trainers exist, operators' edits stay.
        post_migrate.connect(_sync_builtin_trainers, sender=self, dispatch_uid="jobs.sync_builtin_trainers")
