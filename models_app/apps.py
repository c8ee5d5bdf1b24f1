from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    name = "models_app"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from jobs.services import initial_adapter_resolver_set

        from . import receivers  # noqa: F401  (subscribes to the jobs app's signals)
        from .services import model_initial_adapter

        initial_adapter_resolver_set(model_initial_adapter)  # a job may train a version of the registry further
