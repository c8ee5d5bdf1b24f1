"""Builders for the registry's tests: jobs with artifacts in the models bucket, registered models with files."""

import json

from django.utils import timezone

from finetune_studio.objects import bucket
from models_app import artifacts
from models_app.models import RegisteredModel
from models_app.services import artifacts_manifest

METRICS = {
    "final": {"loss": 0.42, "accuracy": 0.91, "epoch": 3},
    "history": [{"step": step, "loss": round(2.0 / step, 4), "epoch": step / 10} for step in range(1, 31)],
    "eval": [{"epoch": 1, "eval_loss": 0.8, "eval_accuracy": 0.7}],
}
ADAPTER_BYTES = bytes(range(256)) * 300
ARTIFACTS = {
    "lora_adapters/adapter_model.safetensors": ADAPTER_BYTES,
    "lora_adapters/adapter_config.json": json.dumps({"r": 8, "lora_alpha": 16}).encode(),
    "lora_adapters/tokenizer.json": b'{"version": "1.0"}',
    "gguf/model-q4.gguf": b"GGUF" + b"\x00" * 5000,
    "metrics.json": json.dumps(METRICS).encode(),
}


def make_job(owner, *, status="succeeded", name="sentiment run", base_model="tiny-llama", artifacts=None):
    from jobs.models import Job, Trainer

    trainer, _ = Trainer.objects.get_or_create(name="external")
    finished = status in ("succeeded", "failed", "cancelled")
    job = Job.objects.create(
        owner=owner,
        name=name,
        base_model=base_model,
        trainer=trainer,
        status=status,
        finished_at=timezone.now() if finished else None,
    )
    job.storage_prefix = f"users/{owner.id}/jobs/{job.id}/"
    job.save(update_fields=["storage_prefix"])
    models_bucket = bucket("models")
    for path, data in (ARTIFACTS if artifacts is None else artifacts).items():
        models_bucket.put_bytes(job.storage_prefix + path, data)
    return job


def make_model(owner, *, files=None, name="my model", base_model="tiny-llama", status="ready", **fields):
    """A model registered through the API path, its files put in storage under its own prefix."""
    model = RegisteredModel.objects.create(owner=owner, name=name, base_model=base_model, status=status, **fields)
    model.storage_path = f"users/{owner.id}/models/{model.id}/"
    models_bucket = bucket("models")
    for path, data in (files or {}).items():
        models_bucket.put_bytes(model.storage_path + path, data)
    model.files = artifacts_manifest(model.storage_path) if files else []
    derived = artifacts.summarize(model.files, storage_path=model.storage_path)
    model.total_size = derived["total_size"]
    model.lora_adapters_path = derived["lora_adapters_path"]
    model.gguf_path = derived["gguf_path"]
    model.save()
    return model
