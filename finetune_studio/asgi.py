import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_studio.settings")

application = get_asgi_application()

from django.conf import settings  # noqa: E402  (settings are ready only after get_asgi_application)

if settings.TASKS_IN_PROCESS:
    from .standalone import start_in_process_services

    start_in_process_services()
