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
    dataset = job.dataset if job.dataset_id else None
    return {
        "job": {"id": job.id, "name": job.name},
        "trainer": job.trainer.name if job.trainer_id else None,
        "base_model": job.base_model,
        "hyperparameters": job.hyperparameters or {},
        "dataset": (
            {
                "id": dataset.id,
                "name": dataset.name,
                "sha256": dataset.sha256 or None,
                "records": dataset.records,
                "format": dataset.format,
                "file_format": dataset.file_format,
                "task": dataset.task,
                "size_bytes": dataset.size_bytes,
            }
            if dataset is not None
            else None
        ),
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
        "ollama": {
            "name": model.ollama_name or None,
            "base": model.ollama_base or None,
            "digest": model.ollama_digest or None,
            "deployed_at": model.deployed_at.isoformat() if model.deployed_at else None,
            "deploy_status": model.deploy_status,
        },
    }


def lineage_for(user, model: RegisteredModel) -> dict:
    from . import selectors

    return model_lineage(model, evaluations=selectors.model_evaluations(user=user, model=model)[:EVALUATIONS_SHOWN])
