from django.apps import AppConfig


class LogsAppConfig(AppConfig):
    name = "logs_app"
    verbose_name = "Logs"

    def ready(self) -> None:
        from . import events, receivers  # noqa: F401  (receivers subscribe to the jobs app's signals)

        events.register()
