"""Alice's world: one object of every kind, built through the services where that is cheap.

Shared by the security suite (authorization matrix, hostile input, CSRF): every test that
asks "can bob reach it?" needs the same set of alice's objects.
"""

import json
from dataclasses import dataclass

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from evaluations.models import Evaluation, Prediction
from finetune_studio.objects import bucket
from finetune_studio.sealing import seal
from jobs import services as job_services
from jobs.models import Dataset, Job, Trainer
from logs_app.models import LogEntry
from models_app.models import ModelAlias, PromotionGate, RegisteredModel, RegisteredName
from models_app.services import artifacts_manifest
from sweeps.models import Sweep, SweepTrial
from webhooks.models import Webhook, WebhookDelivery

ROWS = [{"text": f"clause {i} says pay within {i} days", "label": ["pay", "law"][i % 2]} for i in range(10)]


@dataclass
class World:
    owner: object
    dataset: object
    running_job: Job
    finished_job: Job
    model: RegisteredModel
    registered_name: RegisteredName
    webhook: Webhook
    sweep: Sweep
    evaluation: Evaluation
    running_evaluation: Evaluation

    def ids(self) -> dict:
        return {
            "dataset": self.dataset.id,
            "job": self.running_job.id,
            "finished_job": self.finished_job.id,
            "model": self.model.id,
            "registered_name": self.registered_name.name,
            "registered_name_id": self.registered_name.id,
            "webhook": self.webhook.id,
            "sweep": self.sweep.id,
            "evaluation": self.evaluation.id,
            "running_evaluation": self.running_evaluation.id,
        }


def build_world(owner, *, tag: str = "alice") -> World:
    from logs_app.services import log_lines_append

    data = "".join(json.dumps(row) + "\n" for row in ROWS).encode()
    dataset = job_services.dataset_create(
        owner=owner, uploaded_file=SimpleUploadedFile("train.jsonl", data), name=f"{tag}-secret-dataset"
    )
    trainer, _ = Trainer.objects.get_or_create(name="external")
    running_job = Job.objects.create(
        owner=owner, name=f"{tag}-secret-job", base_model="tiny", trainer=trainer, dataset=dataset, status="running"
    )
    running_job.storage_prefix = f"users/{owner.id}/jobs/{running_job.id}/"
    running_job.save(update_fields=["storage_prefix"])
    finished_job = Job.objects.create(
        owner=owner,
        name=f"{tag}-secret-finished-job",
        base_model="tiny",
        trainer=trainer,
        status="succeeded",
        finished_at=timezone.now(),
    )
    finished_job.storage_prefix = f"users/{owner.id}/jobs/{finished_job.id}/"
    finished_job.save(update_fields=["storage_prefix"])
    log_lines_append(
        job_id=running_job.id, lines=[{"message": f"{tag} private line {i}"} for i in range(5)], source="test"
    )

    registered_name = RegisteredName.objects.create(owner=owner, name=f"{tag}-secret-name", last_version=1)
    model = RegisteredModel.objects.create(
        owner=owner,
        name=f"{tag}-secret-model",
        base_model="tiny",
        status="ready",
        job=finished_job,
        registered_name=registered_name,
        version=1,
    )
    model.storage_path = f"users/{owner.id}/models/{model.id}/"
    models_bucket = bucket("models")
    models_bucket.put_bytes(model.storage_path + "lora_adapters/adapter_model.safetensors", b"\x00" * 2048)
    models_bucket.put_bytes(model.storage_path + "metrics.json", b'{"final": {"loss": 0.5}}')
    model.files = artifacts_manifest(model.storage_path)
    model.save()

    ModelAlias.objects.create(registered_name=registered_name, alias="champion", model=model)
    PromotionGate.objects.create(registered_name=registered_name, test_set_path=dataset.path, threshold=0.01)

    webhook = Webhook.objects.create(
        owner=owner,
        url=f"https://hooks.example.com/{tag}-secret",
        events=["alias.moved"],
        secret=seal("whsec_" + tag),
    )

    sweep = Sweep.objects.create(
        owner=owner,
        name=f"{tag}-secret-sweep",
        trainer=trainer,
        dataset=dataset,
        base_model="tiny",
        registered_name=registered_name.name,
        strategy="grid",
        search_space={"epochs": [1]},
        n_trials=1,
        test_set_path=dataset.path,
        evaluation_base="tiny",
    )
    SweepTrial.objects.create(sweep=sweep, index=1, hyperparameters={"epochs": 1}, job=running_job)

    evaluation = _evaluation(owner, model, dataset, tag, status="completed")
    running_evaluation = _evaluation(owner, model, dataset, tag + "-running", status="running")
    return World(
        owner,
        dataset,
        running_job,
        finished_job,
        model,
        registered_name,
        webhook,
        sweep,
        evaluation,
        running_evaluation,
    )


def _evaluation(owner, model, dataset, tag: str, *, status: str) -> Evaluation:
    fields = {
        "owner": owner,
        "model": model,
        "name": f"{tag}-secret-evaluation",
        "status": status,
        "test_set_path": dataset.path,
        "base_model_name": "tiny",
        "fine_tuned_name": model.name,
        "config": {},
    }
    if status == "completed":
        fields["completed_at"] = timezone.now()
    else:
        fields["started_at"] = timezone.now()
    evaluation = Evaluation.objects.create(**fields)
    Prediction.objects.create(
        evaluation=evaluation,
        index=0,
        candidate="tiny",
        input_text=f"{tag} private input",
        expected="pay",
        prediction_text="pay",
        parsed_label="pay",
        correct=True,
    )
    return evaluation


def owner_state(world: World) -> dict:
    """Everything another request could have changed, to compare before and after his attempts."""
    model = RegisteredModel.objects.get(id=world.model.id)
    return {
        "datasets": sorted(Dataset.objects.filter(owner=world.owner).values_list("id", flat=True)),
        "jobs": sorted(Job.objects.filter(owner=world.owner).values_list("id", "status")),
        "log_lines": LogEntry.objects.filter(job_id=world.running_job.id).count(),
        "model": (model.name, model.description, model.status, len(model.files)),
        "evaluations": sorted(Evaluation.objects.filter(owner=world.owner).values_list("id", "status", "note")),
        "aliases": sorted(ModelAlias.objects.filter(registered_name__owner=world.owner).values_list("alias", "model")),
        "sweeps": sorted(Sweep.objects.filter(owner=world.owner).values_list("id", "status")),
        "webhooks": sorted(Webhook.objects.filter(owner=world.owner).values_list("id", "url")),
        "webhook_deliveries": WebhookDelivery.objects.filter(webhook__owner=world.owner).count(),
        "gates": sorted(
            PromotionGate.objects.filter(registered_name__owner=world.owner).values_list("test_set_path", "threshold")
        ),
    }
