"""lora-dpo: preference pairs make the preferred answer win over the other, measured against the base itself, and
the adapter it leaves is one every part of the studio reads."""

import json
import math
import sys

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

import torch  # noqa: E402

from tests.factories import chat_records, preference_records  # noqa: E402
from trainers.lora_dpo.train import dpo_figures  # noqa: E402

from .conftest import run_trainer, write_jsonl  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

DPO = [sys.executable, "-m", "trainers.lora_dpo"]


def test_the_dpo_loss_is_the_log_sigmoid_of_the_beta_scaled_gain_of_the_preferred_answer_over_the_other():
    figures = dpo_figures(
        torch.tensor([-1.0, -2.0]),  # the model's log-probabilities of the preferred answers
        torch.tensor([-3.0, -1.0]),  # …and of the others
        torch.tensor([-2.0, -2.0]),  # the base's, of the preferred
        torch.tensor([-2.0, -2.0]),  # …and of the others
        beta=0.5,
    )

    # Pair 1 gains 0.5 × ((−1 + 2) − (−3 + 2)) = 1.0; pair 2 0.5 × (0 − 1) = −0.5.
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5))) / 2
    assert float(figures["loss"]) == pytest.approx(expected)
    assert figures["reward_accuracy"] == 0.5 and figures["reward_margin"] == pytest.approx(0.25)


def test_answers_scored_without_the_full_logits_score_and_train_exactly_as_with_them(demo_base, tmp_path):
    from contextlib import nullcontext

    from transformers import AutoTokenizer

    from finetune_studio.records import record_from_object
    from tests.factories import lora_adapter
    from trainers.lora_dpo.train import encode_pairs, sequence_logps

    model = lora_adapter(demo_base, tmp_path / "adapter", seed=5).train()  # non-zero LoRA weights, as in training
    tokenizer = AutoTokenizer.from_pretrained(demo_base, local_files_only=True)
    records = [record_from_object(obj, f"line {i}") for i, obj in enumerate(preference_records(6))]
    pairs = encode_pairs(tokenizer, records, system_prompt="", max_length=256)
    examples = [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs]
    weights = torch.linspace(-1.0, 1.0, len(examples))  # a different worth per sequence, as DPO gives them

    scored = {}
    for fused in (False, True):
        model.zero_grad()
        logps = sequence_logps(
            model, examples, pad_token_id=tokenizer.pad_token_id or 0, device="cpu", autocast=nullcontext, fused=fused
        )
        (logps * weights).sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        scored[fused] = (logps.detach(), grads)

    (full, full_grads), (chunked, chunked_grads) = scored[False], scored[True]
    assert torch.allclose(chunked, full, atol=1e-4), (chunked, full)
    assert full.abs().min() > 0.1  # real answers, each with tokens scored
    assert set(chunked_grads) == set(full_grads) and len(full_grads) > 0
    for name, grad in full_grads.items():
        assert torch.allclose(chunked_grads[name], grad, rtol=1e-3, atol=1e-6), name


def test_preference_training_makes_the_preferred_answers_win_and_leaves_an_adapter_the_engine_loads(
    demo_base, tmp_path
):
    from inference.local import LocalEngine, LocalModelRef

    run = run_trainer(
        base_model=str(demo_base),
        dataset=write_jsonl(tmp_path / "pairs.jsonl", preference_records(120)),
        hyperparameters={"epochs": 3, "learning_rate": 0.01, "batch_size": 8, "validation_fraction": 0.25},
        output_dir=tmp_path / "output",
        command=DPO,
    )

    assert run.returncode == 0, run.stderr
    assert any("120 preference pairs: 90 for training, 30 held out" in line for line in run.lines)
    assert any("before training: validation DPO loss 0.6931" in line for line in run.lines)
    evaluations = run.eval_points
    assert [point["epoch"] for point in evaluations] == [1, 2, 3]
    # log 2 is the loss while the model is still its reference: the preferred answers gained on held-out pairs.
    assert evaluations[-1]["eval_loss"] < evaluations[0]["eval_loss"] < math.log(2)
    assert evaluations[-1]["eval_reward_accuracy"] >= 0.85 and evaluations[-1]["eval_reward_margin"] > 0
    metrics = json.loads((run.output_dir / "metrics.json").read_text())
    assert (metrics["run"]["trainer"], metrics["run"]["record_format"], metrics["run"]["beta"]) == (
        "lora-dpo",
        "preference",
        0.1,
    )
    adapter = run.output_dir / "lora_adapters"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "finetune-studio/demo-llama" and config["peft_type"] == "LORA"
    (answer,) = LocalEngine(device="cpu").generate(
        LocalModelRef(str(demo_base), adapter=str(adapter)),
        [[{"role": "user", "content": preference_records(1)[0]["input"]["messages"][-1]["content"]}]],
        max_new_tokens=4,
    )
    assert answer.prompt_tokens > 0


def test_records_that_are_not_preference_pairs_are_refused_naming_the_trainer_for_them(demo_base, tmp_path):
    run = run_trainer(
        base_model=str(demo_base),
        dataset=write_jsonl(tmp_path / "chats.jsonl", chat_records(8)),
        hyperparameters={},
        output_dir=tmp_path / "output",
        command=DPO,
        timeout=60,
    )

    assert run.returncode == 2
    assert any("lora-dpo trains on preference records" in line for line in run.lines_at("ERROR")), run.stderr
    assert any("train it with lora-sft" in line for line in run.lines_at("ERROR"))


@pytest.mark.django_db
def test_a_lora_dpo_job_ends_as_a_registry_version_evaluated_as_it_was_trained(
    alice, alice_api, demo_base, django_capture_on_commit_callbacks, monkeypatch, settings
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from evaluations.services import evaluation_prompt_for
    from jobs import services as job_services
    from jobs.models import Job
    from models_app.models import RegisteredModel
    from tests.factories import jsonl

    settings.DEMO_BASE_DIR = demo_base
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pairs = job_services.dataset_create(
        owner=alice, uploaded_file=SimpleUploadedFile("pairs.jsonl", jsonl(preference_records(24)))
    )
    body = {"name": "polite", "base_model": "demo-base", "dataset": pairs.id, "trainer": "lora-dpo"}
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post("/api/v1/jobs", {**body, "hyperparameters": {"epochs": 1}}, format="json")

    assert response.status_code == 201, response.json()
    job = Job.objects.get(id=response.json()["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error_message
    model = RegisteredModel.objects.get(job=job)
    assert "lora_adapters/adapter_model.safetensors" in {entry["path"] for entry in model.files}
    assert model.training_metrics["run"]["trainer"] == "lora-dpo"
    assert evaluation_prompt_for(model)["prompt_style"] == "as_trained"
    assert pairs.format == "preference" and pairs.task == "generation"
