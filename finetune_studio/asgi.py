import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_studio.settings")


class StudioASGIHandler(ASGIHandler):
    # Django splits response bodies into 64 KiB ASGI messages; model downloads run about twice
    # as fast with 1 MiB messages (bench/bench_models_zip.py).
    chunk_size = 1024 * 1024


django.setup(set_prefix=False)
application = StudioASGIHandler()

from django.conf import settings  # noqa: E402  (settings are ready only after django.setup)

if settings.TASKS_IN_PROCESS:
    from .standalone import start_in_process_services

    start_in_process_services()
