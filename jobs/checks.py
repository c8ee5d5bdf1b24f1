"""System checks of the jobs app (``manage.py check`` and every start)."""

from celery import current_app
from django.core import checks

from finetune_studio.base_models import base_model_settings_problems


@checks.register()
def check_base_model_folders(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    return [
        checks.Warning(problem, hint="Keep base models outside VAR_DIR and the storage folders.", id="jobs.W001")
        for problem in base_model_settings_problems()
    ]


@checks.register()
def local_trainers_have_a_runner(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Trainers that run locally (every built-in one but ``external``) need the app that registers the run task.

    Without it a job would be accepted and then fail at dispatch, so the studio refuses to start instead.
    """
    from trainers.builtin import BUILTIN_TRAINERS

    from .models import Trainer
    from .services import RUN_TASK

    local = [definition["name"] for definition in BUILTIN_TRAINERS if definition["name"] != Trainer.EXTERNAL]
    if not local or RUN_TASK in current_app.tasks:
        return []
    return [
        checks.Error(
            f"Trainers run locally ({', '.join(local)}) but no job runner is installed: "
            f"nothing registers the Celery task {RUN_TASK!r}.",
            hint="Add 'runner' to INSTALLED_APPS (it registers the task in every process).",
            id="jobs.E001",
        )
    ]
