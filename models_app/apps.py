from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    name = "models_app"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from . import receivers  # noqa: F401  (subscribes to the jobs app's signals)
