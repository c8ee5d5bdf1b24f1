import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "finetune_studio.settings")

app = Celery("finetune_studio")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Evaluation and training workers may live on other machines: each has its own queue.
app.conf.task_queues = [Queue("default"), Queue("evaluations"), Queue("training")]
app.autodiscover_tasks()


@app.task(name="finetune_studio.ping", ignore_result=True)
def ping(token: str) -> None:
    """Proves a worker consumes the queue: /healthz?worker=1 waits for this mark."""
    from django.core.cache import cache

    cache.set(f"worker-ping:{token}", "pong", 60)


def queue_of(task_name: str) -> str:
    """The queue a task is routed to by settings (CELERY_TASK_ROUTES, else the default queue)."""
    return app.amqp.router.route({}, task_name, (), {})["queue"].name
