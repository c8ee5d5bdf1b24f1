from django.apps import AppConfig


class RunnerConfig(AppConfig):
    """The local job runner. Installing this app is what registers the run task jobs enqueues by name."""

    name = "runner"
    verbose_name = "Local job runner"

    def ready(self) -> None:
        from . import tasks  # noqa: F401  (registers jobs.services.RUN_TASK with Celery in every process)
