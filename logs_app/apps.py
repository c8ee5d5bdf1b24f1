from django.apps import AppConfig


class LogsAppConfig(AppConfig):
    name = "logs_app"
    verbose_name = "Logs"

    def ready(self) -> None:
        from .fanout import tune_listeners

        tune_listeners()
