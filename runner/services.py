"""The local runner: one job's trainer as a supervised subprocess on this worker.

It claims the job under a lease (a second runner, e.g. a redelivered Celery message, finds
nothing to claim), downloads the dataset into a private work directory, starts the
trainer in its own process group with the contract's environment (docs/trainers.md),
ships every stdout/stderr line to the logs pipeline in small batches as it comes,
renews the lease, ends the process group on cancel, lease loss or timeout (SIGTERM,
then SIGKILL after a grace period), uploads OUTPUT_DIR to the job's prefix in the
models bucket, and settles the job through ``jobs.services.job_complete``.

It sits above logs_app (its lines go through ``log_lines_append``) and above jobs, which knows
it only by the name of its Celery task (``jobs.services.RUN_TASK``).

All database work happens on the runner's own thread; the reader threads only read pipes.
"""

import atexit
import contextlib
import hashlib
import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Q

from finetune_studio import base_models, keys, objects
from jobs import hyperparameters, services
from jobs.models import Job
from logs_app.parsing import parse_text_fields
from logs_app.services import log_lines_append
from trainers.launch import launch_command

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024
MAX_PENDING_LINES = 20_000
_EOF = object()

# Trainer processes of this interpreter: ended at exit, so Ctrl-C on a standalone server leaves none behind.
_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


def _end_children_at_exit() -> None:
    with _children_lock:
        alive = [process for process in _children if process.poll() is None]
    for process in alive:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + 3
    for process in alive:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        _signal_group(process, signal.SIGKILL)


atexit.register(_end_children_at_exit)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


class _LineShipper:
    """Batches lines per source: flushed at JOB_LOG_BATCH_LINES lines or JOB_LOG_BATCH_SECONDS of age."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.pending: dict[str, list[dict]] = {}
        self.oldest: float | None = None
        self.dropped = 0
        self.job_gone = False

    def add(self, source: str, message: str, level: str | None = None) -> None:
        line = {"message": message}
        if level:
            line["level"] = level
        self.pending.setdefault(source, []).append(line)
        if self.oldest is None:
            self.oldest = time.monotonic()
        if sum(map(len, self.pending.values())) > MAX_PENDING_LINES:
            # The logs pipeline has been failing for a while: keep memory bounded, say what was lost.
            for lines in self.pending.values():
                if len(lines) > 1:
                    del lines[0]
                    self.dropped += 1
                    break

    def due(self) -> bool:
        if self.oldest is None:
            return False
        if any(len(lines) >= settings.JOB_LOG_BATCH_LINES for lines in self.pending.values()):
            return True
        return time.monotonic() - self.oldest >= settings.JOB_LOG_BATCH_SECONDS

    def flush(self) -> None:
        if self.job_gone:
            self.pending.clear()
        if self.dropped:
            self.pending.setdefault("runner", []).append(
                {"message": f"{self.dropped} log line(s) were dropped: the log store was unavailable", "level": "WARN"}
            )
            self.dropped = 0
        for source in list(self.pending):
            lines = self.pending[source]
            while lines:
                batch = lines[: settings.JOB_LOG_BATCH_LINES]
                try:
                    log_lines_append(job_id=self.job_id, lines=batch, source=source)
                except Job.DoesNotExist:
                    self.job_gone = True
                    self.pending.clear()
                    self.oldest = None
                    return
                except DatabaseError:
                    logger.exception("Job %s: storing %d log line(s) failed; retrying", self.job_id, len(batch))
                    return
                del lines[: len(batch)]
            del self.pending[source]
        self.oldest = None

    def runner(self, message: str, level: str = "INFO") -> None:
        self.add("runner", message, level)
        self.flush()


def run_job(*, job_id: int) -> str:
    """Run one queued job to its end; returns what happened (for logs and tests)."""
    lease_owner = services.lease_owner_name()
    if not services.job_claim(job_id=job_id, lease_owner=lease_owner):
        logger.info("Job %s was not queued (already claimed, cancelled or gone): nothing to run", job_id)
        return "not-claimed"
    try:
        return _run_claimed(job_id, lease_owner)
    except Exception as exc:
        logger.exception("Job %s: the runner failed", job_id)
        services.job_complete(
            job_id=job_id,
            status=Job.Status.FAILED,
            error_message=f"runner error: {exc.__class__.__name__}: {exc}",
            only_if=Q(lease_owner=lease_owner),
        )
        return "failed"


def _run_claimed(job_id: int, lease_owner: str) -> str:
    job = Job.objects.select_related("trainer", "dataset", "validation_dataset").get(id=job_id)
    trainer = job.trainer
    ours = Q(lease_owner=lease_owner)
    shipper = _LineShipper(job_id)
    if not trainer.command:
        services.job_complete(
            job_id=job_id,
            status=Job.Status.FAILED,
            error_message=f"trainer {trainer.name!r} has no command",
            only_if=ours,
        )
        return "failed"
    try:
        # Checked again here: the settings (or the folders) may have changed since the job was created.
        base = base_models.base_model_resolve(job.base_model, loadable=trainer.loads_base_model)
    except base_models.BaseModelRefused as refused:
        message = f"not started: {refused}"
        shipper.runner(message, "ERROR")
        services.job_complete(job_id=job_id, status=Job.Status.FAILED, error_message=message, only_if=ours)
        return "failed"
    command = [sys.executable if part == "{python}" else str(part) for part in trainer.command]
    with tempfile.TemporaryDirectory(prefix=f"studio-job-{job_id}-", dir=settings.JOB_WORK_DIR) as work_name:
        work = Path(work_name)
        output_dir = work / "output"
        output_dir.mkdir()
        dataset_path = _download_dataset(job.dataset, work / "dataset")
        validation_path = _download_dataset(job.validation_dataset, work / "validation")
        hyperparams_file = work / "hyperparameters.json"
        hyperparams_file.write_text(json.dumps(job.hyperparameters, indent=2))
        env = _trainer_environment(job, base, dataset_path, hyperparams_file, output_dir)
        if validation_path is not None:
            env["VALIDATION_DATASET_PATH"] = str(validation_path)
        if job.initial_adapter:
            try:
                env["INITIAL_ADAPTER_PATH"] = str(_download_initial_adapter(job.initial_adapter, work / "initial"))
            except InitialAdapterMissing as exc:
                message = f"not started: {exc}"
                shipper.runner(message, "ERROR")
                services.job_complete(job_id=job_id, status=Job.Status.FAILED, error_message=message, only_if=ours)
                return "failed"
            env["INITIAL_ADAPTER_NAME"] = job.initial_adapter["name"]
        command = launch_command(command, environ=env)  # torchrun over the trainer's GPUs when it has several
        shipper.runner(f"starting trainer {trainer.name}: {shlex.join(command)}")
        stop_reason, returncode, last_stderr = _supervise(job, lease_owner, command, env, work, shipper)
        shipper.flush()
        if stop_reason == "cancelled":
            shipper.runner("job cancelled: the trainer's process group was terminated", "WARN")
            return "cancelled"
        if stop_reason == "lease-lost":
            shipper.runner("this runner lost the job's lease: stopped the trainer", "ERROR")
            return "lease-lost"
        if stop_reason == "timeout":
            message = f"timed out after {trainer.timeout_seconds} s (the limit of trainer {trainer.name})"
            shipper.runner(message, "ERROR")
            services.job_complete(
                job_id=job_id, status=Job.Status.FAILED, exit_code=returncode, error_message=message, only_if=ours
            )
            return "timeout"
        if returncode != 0:
            message = _exit_description(returncode) + (f": {last_stderr}" if last_stderr else "")
            shipper.runner(message, "ERROR")
            services.job_complete(
                job_id=job_id, status=Job.Status.FAILED, exit_code=returncode, error_message=message, only_if=ours
            )
            return "failed"
        count, size = _upload_artifacts(job, output_dir, shipper)
        shipper.runner(f"trainer exited with code 0; uploaded {count} artifact file(s), {size} bytes")
        services.job_complete(
            job_id=job_id,
            status=Job.Status.SUCCEEDED,
            exit_code=0,
            metrics=_read_metrics(output_dir, shipper),
            only_if=ours,
        )
        return "succeeded"


def _download_dataset(dataset, folder: Path) -> Path | None:
    if dataset is None:
        return None
    key = services.dataset_key(dataset)
    target = folder / PurePosixPath(key).name
    target.parent.mkdir()
    with open(target, "wb") as handle:
        for chunk in objects.bucket("datasets").iter_chunks(key):
            handle.write(chunk)
    return target


class InitialAdapterMissing(Exception):
    """The version a job trains further is gone from storage, or its files changed; the message says which."""


def _download_initial_adapter(initial: dict, folder: Path) -> Path:
    """The adapter of the version the job trains further, as a folder, each file checked against its sha256."""
    name = initial["name"]
    models = objects.bucket("models")
    for item in initial["files"]:
        target = folder / PurePosixPath(item["path"])
        if folder.resolve() not in target.resolve().parents:
            raise InitialAdapterMissing(f"{name}: an adapter file has an unusable path ({item['path']!r})")
        target.parent.mkdir(parents=True, exist_ok=True)
        checksum = hashlib.sha256()
        try:
            with open(target, "wb") as handle:
                for chunk in models.iter_chunks(item["key"]):
                    checksum.update(chunk)
                    handle.write(chunk)
        except objects.ObjectNotFound:
            raise InitialAdapterMissing(
                f"{name}, the version this job trains further, was deleted ({item['path']} is gone)"
            ) from None
        if item.get("sha256") and checksum.hexdigest() != item["sha256"]:
            raise InitialAdapterMissing(f"{name}: {item['path']} no longer matches the version's manifest")
    return folder


def _trainer_environment(
    job: Job, base: base_models.BaseModel, dataset_path: Path | None, hyperparams_file: Path, output_dir: Path
) -> dict:
    """Only what the contract promises plus an allow-list: the worker's secrets stay out of the trainer.

    BASE_MODEL is the folder the catalogue resolved (or the recorded name for trainers that load nothing);
    BASE_MODEL_NAME is the name to record in what the trainer writes.
    """
    env = {name: os.environ[name] for name in settings.JOB_TRAINER_ENV_PASSTHROUGH if name in os.environ}
    env.update(hyperparameters.environment(job.hyperparameters))
    env.update(
        {
            "JOB_ID": str(job.id),
            "BASE_MODEL": str(base.path) if job.trainer.loads_base_model else base.name,
            "BASE_MODEL_NAME": base.name,
            "DATASET_PATH": str(dataset_path or ""),
            "HYPERPARAMS_FILE": str(hyperparams_file),
            "OUTPUT_DIR": str(output_dir),
            "PYTHONPATH": str(settings.BASE_DIR),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _pump(stream, source: str, lines: queue.Queue) -> None:
    try:
        for raw in iter(lambda: stream.readline(MAX_LINE_BYTES), b""):
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.strip():
                lines.put((source, text))
    finally:
        lines.put((source, _EOF))


def _supervise(job, lease_owner, command, env, work, shipper) -> tuple[str | None, int | None, str]:
    """Run the process to its end; returns (stop reason or None, exit code, last stderr line)."""
    process = subprocess.Popen(
        command,
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with _children_lock:
        _children.add(process)
    lines: queue.Queue = queue.Queue()
    for stream, source in ((process.stdout, "stdout"), (process.stderr, "stderr")):
        threading.Thread(target=_pump, args=(stream, source, lines), name=f"job-{job.id}-{source}", daemon=True).start()
    started = time.monotonic()
    deadline = started + job.trainer.timeout_seconds
    next_check = started + settings.JOB_CANCEL_POLL_SECONDS
    next_heartbeat = started + settings.JOB_HEARTBEAT_INTERVAL
    stop_reason: str | None = None
    kill_at: float | None = None
    drain_until: float | None = None
    open_streams = 2
    last_stderr = ""
    try:
        while True:
            try:
                source, text = lines.get(timeout=settings.JOB_LOG_BATCH_SECONDS)
            except queue.Empty:
                pass
            else:
                if text is _EOF:
                    open_streams -= 1
                else:
                    shipper.add(source, text)
                    if source == "stderr":
                        # The message, without a log line's "[HH:MM:SS] [ERROR] ": it becomes the job's error.
                        last_stderr = parse_text_fields(text)[0][:500]
            if shipper.due():
                shipper.flush()
            now = time.monotonic()
            if stop_reason is None and process.poll() is None:
                if now >= deadline:
                    stop_reason = "timeout"
                elif now >= next_check:
                    stop_reason = _check_still_ours(job.id, lease_owner, heartbeat=now >= next_heartbeat)
                    next_check = now + settings.JOB_CANCEL_POLL_SECONDS
                    if now >= next_heartbeat:
                        next_heartbeat = now + settings.JOB_HEARTBEAT_INTERVAL
                if stop_reason:
                    _signal_group(process, signal.SIGTERM)
                    kill_at = now + settings.JOB_KILL_GRACE_SECONDS
            if kill_at is not None and now >= kill_at and process.poll() is None:
                _signal_group(process, signal.SIGKILL)
                kill_at = None
            if process.poll() is not None:
                if open_streams == 0:
                    break
                # A grandchild may hold the pipes open after the trainer exited: give it a moment, then end it.
                drain_until = drain_until or now + 2
                if now >= drain_until:
                    break
    finally:
        _signal_group(process, signal.SIGKILL)  # nothing of the trainer's group outlives the run
        if process.poll() is None:
            process.wait()
        with _children_lock:
            _children.discard(process)
    while True:
        try:
            source, text = lines.get_nowait()
        except queue.Empty:
            break
        if text is not _EOF:
            shipper.add(source, text)
    return stop_reason, process.returncode, last_stderr


def _check_still_ours(job_id: int, lease_owner: str, *, heartbeat: bool) -> str | None:
    """None while the job is ours to run; "cancelled" or "lease-lost" otherwise. A database hiccup is not a stop."""
    try:
        if heartbeat:
            ours = services.job_heartbeat(job_id=job_id, lease_owner=lease_owner)
        else:
            ours = Job.objects.filter(id=job_id, status=Job.Status.RUNNING, lease_owner=lease_owner).exists()
        if ours:
            return None
        status = Job.objects.filter(id=job_id).values_list("status", flat=True).first()
    except DatabaseError:
        logger.exception("Job %s: lease check failed; the trainer keeps running", job_id)
        return None
    return "cancelled" if status in (Job.Status.CANCELLED, None) else "lease-lost"


def _exit_description(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"trainer was killed by {name}"
    return f"trainer exited with code {returncode}"


def _upload_artifacts(job: Job, output_dir: Path, shipper: _LineShipper) -> tuple[int, int]:
    storage = objects.bucket("models")
    count = size = 0
    for path in sorted(output_dir.rglob("*")):
        if path.is_symlink() or not path.is_file():
            if path.is_symlink():
                shipper.add("runner", f"skipped symbolic link {path.relative_to(output_dir)}", "WARN")
            continue
        relative = path.relative_to(output_dir).as_posix()
        try:
            keys.clean_relative_path(relative)
        except keys.InvalidName as exc:
            shipper.add("runner", f"skipped artifact {relative!r}: {exc}", "WARN")
            continue
        with open(path, "rb") as handle:
            result = storage.upload(job.storage_prefix + relative, handle)
        count += 1
        size += result.size
    return count, size


def _read_metrics(output_dir: Path, shipper: _LineShipper) -> dict | None:
    path = output_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        shipper.runner(f"metrics.json is not valid JSON ({exc}); ignored", "WARN")
        return None
    return metrics if isinstance(metrics, dict) else {"value": metrics}
