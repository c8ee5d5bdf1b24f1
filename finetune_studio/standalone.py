"""Standalone mode: the Celery worker and beat run as threads of the web process.

With the in-memory broker, queued messages vanish when the process stops, so the
database stays the source of truth and each app's redispatcher re-queues the work
that was unfinished at start (settings.UNFINISHED_WORK_REDISPATCHERS).
"""

import logging
import threading

from celery.beat import EmbeddedService
from django.conf import settings
from django.utils.module_loading import import_string

from .celery import app

logger = logging.getLogger(__name__)
_started = threading.Event()


def start_in_process_services() -> None:
    if _started.is_set():
        return
    _started.set()
    worker = app.WorkController(
        pool="threads",
        concurrency=settings.STANDALONE_WORKER_THREADS,
        queues=["default", "evaluations", "training"],
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="INFO",
    )
    threading.Thread(target=worker.start, name="celery-worker", daemon=True).start()
    beat = EmbeddedService(app, thread=True, schedule_filename=str(settings.VAR_DIR / "celerybeat-schedule"))
    beat.start()
    threading.Thread(target=redispatch_unfinished_work, name="redispatch", daemon=True).start()
    logger.info("In-process Celery worker (%d threads) and beat started", settings.STANDALONE_WORKER_THREADS)


def redispatch_unfinished_work() -> None:
    for dotted_path in settings.UNFINISHED_WORK_REDISPATCHERS:
        try:
            count = import_string(dotted_path)()
        except Exception:
            logger.exception("Re-dispatching unfinished work with %s failed", dotted_path)
        else:
            logger.info("%s re-dispatched %s item(s)", dotted_path, count)
