"""System checks of the jobs app's settings (``manage.py check`` and every start)."""

from django.core import checks

from finetune_studio.base_models import base_model_settings_problems


def check_base_model_folders(app_configs, **kwargs) -> list[checks.CheckMessage]:
    return [
        checks.Warning(problem, hint="Keep base models outside VAR_DIR and the storage folders.", id="jobs.W001")
        for problem in base_model_settings_problems()
    ]
