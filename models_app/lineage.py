"""A model's lineage: what it was trained from and how, what it scored, where it is deployed.

One builder shared by the model page, the API (``model.lineage``) and the ZIP's README/metadata.json, so
the three never disagree. The training side is captured from the job when the model is registered
(``provenance``: the job's dataset may be deleted later) and from the trainer's own record of the run
(``metrics.json`` ``run``: base identity, chat template sha256, hyperparameters with defaults filled).
"""

from __future__ import annotations

from .models import RegisteredModel

EVALUATIONS_SHOWN = 20


def job_provenance(job) -> dict:
    """The training inputs of a job, as they were when its model was registered."""
    provenance = {
        "job": {"id": job.id, "name": job.name},
        "trainer": job.trainer.name if job.trainer_id else None,
        "base_model": job.base_model,
        "hyperparameters": job.hyperparameters or {},
        "dataset": _dataset_entry(job.dataset if job.dataset_id else None),
    }
    if job.validation_dataset_id:  # held out from the training records otherwise (run.validation_records)
        provenance["validation_dataset"] = _dataset_entry(job.validation_dataset)
    if job.initial_adapter:  # the version it trained further
        provenance["initial_model"] = {"id": job.initial_adapter["model_id"], "name": job.initial_adapter["name"]}
    return provenance


def _dataset_entry(dataset) -> dict | None:
    if dataset is None:
        return None
    return {
        "id": dataset.id,
        "name": dataset.name,
        "sha256": dataset.sha256 or None,
        "records": dataset.records,
        "format": dataset.format,
        "file_format": dataset.file_format,
        "task": dataset.task,
        "size_bytes": dataset.size_bytes,
    }


def _provenance(model: RegisteredModel) -> dict:
    if model.provenance:
        return model.provenance
    # Models registered before provenance was captured: read their job as it is now.
    if model.job_id and model.job is not None:
        return job_provenance(model.job)
    return {}


def _evaluation_entry(evaluation) -> dict:
    results = evaluation.results or {}
    significance = results.get("significance") if isinstance(results.get("significance"), dict) else {}
    improvement = results.get("improvement") if isinstance(results.get("improvement"), dict) else {}
    return {
        "id": evaluation.id,
        "status": evaluation.status,
        "verdict": significance.get("verdict"),
        "base_model_name": evaluation.base_model_name,
        "fine_tuned_name": evaluation.fine_tuned_name,
        "accuracy_delta": improvement.get("accuracy"),
        "completed_at": evaluation.completed_at.isoformat() if evaluation.completed_at else None,
    }


def model_lineage(model: RegisteredModel, *, evaluations=()) -> dict:
    """``evaluations``: the ones the viewer may see (newest first); at most EVALUATIONS_SHOWN are listed."""
    provenance = _provenance(model)
    run = (model.training_metrics or {}).get("run")
    run = run if isinstance(run, dict) else {}
    job = provenance.get("job") or ({"id": model.job_id, "name": None} if model.job_id else None)
    trainer_name = run.get("trainer") or provenance.get("trainer")
    hyperparameters = run.get("hyperparameters") or provenance.get("hyperparameters") or {}
    return {
        "dataset": provenance.get("dataset"),
        "validation_dataset": provenance.get("validation_dataset"),
        # The version whose adapter the run started from (trained further); None: a new adapter on the base.
        "initial_model": provenance.get("initial_model"),
        "trainer": (
            {"name": trainer_name, "job": job, "hyperparameters": hyperparameters}
            if trainer_name or job or hyperparameters
            else None
        ),
        "base_model": {
            "name": model.base_model,
            # The trainer's identity of the base: never a local path (see trainers/lora_sft base_identity).
            "identity": run.get("base_model") or None,
        },
        "chat_template_sha256": run.get("chat_template_sha256") or None,
        "system_prompt": run.get("system_prompt") if run else None,
        "device": run.get("device") or None,
        "metrics": model.final_metrics,
        "evaluations": [_evaluation_entry(evaluation) for evaluation in list(evaluations)[:EVALUATIONS_SHOWN]],
        "ollama": _ollama_entry(model),
    }


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def live_deployment(model: RegisteredModel) -> dict | None:
    """What Ollama serves for this model: the last deploy that succeeded, whatever became of later attempts.

    ``still_served``: True when verified (at deploy, or re-checked after a failed attempt), False when Ollama
    no longer serves it as recorded (``checked.reason`` says why), None when it could not be checked.
    ``drifted``: a parity check's verdict on this digest, None when none was recorded.
    """
    if not model.ollama_name:
        return None
    details = model.live_deploy_details or {}
    checked = details.get("checked") if isinstance(details.get("checked"), dict) else {}
    parity = model.deploy_parity or {}
    return {
        "name": model.ollama_name,
        "base": model.ollama_base or None,
        "digest": model.ollama_digest or None,
        "deployed_at": _iso(model.deployed_at),
        "architecture": details.get("architecture"),
        "template": details.get("template"),
        "system": details.get("system"),
        "smoke": details.get("smoke"),
        "blobs": details.get("blobs"),
        "notes": details.get("notes") or [],
        "still_served": checked.get("still_served"),
        "checked": checked or None,
        "drifted": parity.get("drifted") if parity else None,
        "parity": parity or None,
    }


def deploy_attempt(model: RegisteredModel) -> dict:
    """The last deploy attempt's outcome (idle when there was none), apart from the live deployment."""
    details = model.deploy_details or {}
    return {
        "status": model.deploy_status,
        "error": model.deploy_error,
        "error_code": details.get("error_code"),
        "target": details.get("target"),
        "base": details.get("base"),
        "started_at": _iso(model.deploy_started_at),
        "finished_at": _iso(model.deploy_finished_at),
    }


def _ollama_entry(model: RegisteredModel) -> dict:
    live = live_deployment(model) or {}
    attempt = deploy_attempt(model)
    template = live.get("template") if isinstance(live.get("template"), dict) else {}
    smoke = live.get("smoke") if isinstance(live.get("smoke"), dict) else {}
    return {
        "name": model.ollama_name or None,
        "base": model.ollama_base or None,
        "digest": model.ollama_digest or None,
        "deployed_at": _iso(model.deployed_at),
        "deploy_status": model.deploy_status,
        "template_family": template.get("family"),
        "smoke_answer": smoke.get("answer"),
        "still_served": live.get("still_served"),
        "drifted": live.get("drifted"),
        "last_attempt": {key: attempt[key] for key in ("status", "error", "error_code", "target", "finished_at")},
    }


def lineage_for(user, model: RegisteredModel) -> dict:
    from . import selectors

    return model_lineage(model, evaluations=selectors.model_evaluations(user=user, model=model)[:EVALUATIONS_SHOWN])
