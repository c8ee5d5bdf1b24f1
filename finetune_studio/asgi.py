import gc
import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_studio.settings")


class StudioASGIHandler(ASGIHandler):
    # Django splits response bodies into 64 KiB ASGI messages; model downloads run about twice
    # as fast with 1 MiB messages (bench/bench_models_zip.py).
    chunk_size = 1024 * 1024


def tune_garbage_collector() -> None:
    """Short GC pauses for a process holding many open streams.

    With the default thresholds, each young collection (every 700 allocations) promotes what
    1,000 streams have in flight to the old generations, which soon triggers full collections
    over the whole heap: 120-370 ms pauses, every few seconds, in the live-log benchmark. The
    start-up heap is frozen (never scanned again) and young collections run every 20,000
    allocations: pauses of 20-35 ms, and p99 latency 400 → 100 ms (bench/bench_logs_stream.py).
    """
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


django.setup(set_prefix=False)
application = StudioASGIHandler()

from django.conf import settings  # noqa: E402  (settings are ready only after django.setup)

if settings.TASKS_IN_PROCESS:
    from .standalone import start_in_process_services

    start_in_process_services()

tune_garbage_collector()
