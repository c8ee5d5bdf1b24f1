from django.apps import AppConfig


class StudioCoreConfig(AppConfig):
    """The shared core as an app: its management commands and system checks (it has no models)."""

    name = "finetune_studio"
    label = "finetune_studio"
    verbose_name = "Finetune Studio core"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
