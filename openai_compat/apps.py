from django.apps import AppConfig


class OpenAICompatConfig(AppConfig):
    """OpenAI's fine-tuning API (files, fine_tuning.jobs, events) over the studio's datasets, jobs and logs."""

    name = "openai_compat"
    verbose_name = "OpenAI-compatible fine-tuning API"
