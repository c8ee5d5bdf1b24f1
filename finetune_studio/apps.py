from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The shared core (objects, keys, records, streaming, events, …) as an app: its management commands,
    system checks and the django-eventstream patches. It imports no app."""

    name = "finetune_studio"
    label = "finetune_studio"
    verbose_name = "Finetune Studio core"

    def ready(self) -> None:
        from . import (
            checks,  # noqa: F401  (registers the checks)
            eventstream_patches,
        )

        eventstream_patches.apply()
