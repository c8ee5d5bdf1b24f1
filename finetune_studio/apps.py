from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The shared core (objects, keys, records, streaming, events, …): it imports no app."""

    name = "finetune_studio"
    verbose_name = "Finetune Studio core"

    def ready(self) -> None:
        from . import eventstream_patches

        eventstream_patches.apply()
