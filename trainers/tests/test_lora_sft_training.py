"""The lora-sft trainer run as the job runner runs it, on the tiny demo base: it learns, reports, and saves
an adapter that reloads to the same model.

One real training run (20 epochs over 200 records at lr 2e-2: the short schedules of real bases learn
nothing on this one) is shared by the tests of this module.
"""

import json
import os
import re
import shutil

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from finetune_studio.records import open_records  # noqa: E402

from .conftest import run_trainer  # noqa: E402

# transformers warns about its own renamed APIs when the test process loads models; not our concern.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

LABELS = 5  # the sample (or synthetic) clause dataset: chance accuracy is 1/5
HYPERPARAMETERS = {
    "epochs": 20,
    "learning_rate": 2e-2,
    "batch_size": 16,
    "logging_steps": 5,
    "validation_fraction": 0.2,
    "warmup_ratio": 0.05,
    "seed": 7,
}
PLAIN_LINE = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] \[(INFO|WARN|ERROR)\] ")


@pytest.fixture(scope="module")
def trained(demo_base, clause_dataset, tmp_path_factory):
    work = tmp_path_factory.mktemp("lora-run")
    run = run_trainer(
        base_model=str(demo_base),
        dataset=clause_dataset,
        hyperparameters=HYPERPARAMETERS,
        output_dir=work / "output",
        extra_env={"LORA_SFT_CHECK_DIR": str(work / "check")},
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    run.check_dir = work / "check"
    return run


def test_it_prints_only_plain_log_lines_and_json_metrics(trained):
    for line in trained.lines:
        assert PLAIN_LINE.match(line) or line.startswith("{"), line
    assert trained.lines_at("ERROR") == []
    assert "Writing model shards" not in trained.stdout + trained.stderr  # no progress bars


def test_it_prints_one_metrics_line_per_logging_step(trained):
    points = trained.step_points
    total = points[-1]["total_steps"]
    assert total == 20 * 10  # 200 records, 160 for training in batches of 16
    assert [point["step"] for point in points] == list(range(5, total + 1, 5))
    for point in points:
        assert set(point) == {"step", "total_steps", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_second"}
        assert point["loss"] > 0 and point["grad_norm"] >= 0 and point["tokens_per_second"] > 0
        assert 0 < point["learning_rate"] <= 2e-2  # the rate used by the step: never the 0.0 of a warm-up start
    assert points[-1]["epoch"] == 20.0


def test_it_reports_validation_loss_and_exact_match_after_every_epoch(trained):
    evaluations = trained.eval_points
    assert [point["epoch"] for point in evaluations] == list(range(1, 21))
    # Alpaca records are generation data: the held-out score is exact match, not a classification accuracy.
    assert all(set(point) == {"epoch", "eval_loss", "eval_exact_match"} for point in evaluations)
    assert evaluations[-1]["eval_loss"] < evaluations[0]["eval_loss"]


def test_the_training_loss_goes_clearly_down(trained):
    losses = [point["loss"] for point in trained.step_points]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < first - 0.5, (first, last)


def test_held_out_exact_match_ends_clearly_above_chance(trained):
    accuracy = trained.eval_points[-1]["eval_exact_match"]
    assert accuracy >= 3 / LABELS, accuracy


def test_it_leaves_the_adapter_tokenizer_chat_template_and_metrics(trained):
    adapters = trained.output_dir / "lora_adapters"
    names = {path.name for path in adapters.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert (adapters / "chat_template.jinja").read_text().startswith("{{ bos_token }}")
    assert all(oct(path.stat().st_mode & 0o777) == "0o644" for path in adapters.iterdir())
    metrics = json.loads((trained.output_dir / "metrics.json").read_text())
    assert metrics["history"] == trained.step_points
    assert metrics["eval"] == trained.eval_points
    assert metrics["final"]["loss"] == trained.step_points[-1]["loss"]
    assert metrics["final"]["eval_exact_match"] == trained.eval_points[-1]["eval_exact_match"]
    assert (metrics["run"]["record_format"], metrics["run"]["task"]) == ("alpaca", "generation")
    assert metrics["run"]["base_model"] == "finetune-studio/demo-llama"
    assert metrics["run"]["hyperparameters"]["epochs"] == 20


def test_adapter_config_has_an_integer_alpha_and_no_local_paths(trained, demo_base):
    adapters = trained.output_dir / "lora_adapters"
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert config["lora_alpha"] == 16 and type(config["lora_alpha"]) is int
    assert config["r"] == 8 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["base_model_name_or_path"] == "finetune-studio/demo-llama"
    for path in adapters.iterdir():
        if path.suffix in {".json", ".jinja", ".md"}:
            text = path.read_text()
            assert str(demo_base) not in text and str(trained.output_dir) not in text, path.name
            assert "/tmp" not in text and os.path.expanduser("~") not in text, path.name


def test_the_saved_adapter_reloads_with_identical_logits(trained, demo_base):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    expected = load_file(str(trained.check_dir / "logits.safetensors"))
    base = AutoModelForCausalLM.from_pretrained(demo_base, local_files_only=True, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, trained.output_dir / "lora_adapters").eval()
    with torch.no_grad():
        logits = model(input_ids=expected["input_ids"]).logits
    assert torch.allclose(logits, expected["logits"], rtol=0, atol=1e-5), (logits - expected["logits"]).abs().max()
    # The adapter matters: the bare base answers differently.
    with torch.no_grad(), model.disable_adapter():
        bare = model(input_ids=expected["input_ids"]).logits
    assert (bare - expected["logits"]).abs().max() > 1e-3


def test_the_reloaded_model_greedily_answers_held_out_records_as_the_reported_exact_match_says(
    trained, demo_base, clause_dataset
):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.lora_sft.chat import conversation_for
    from trainers.lora_sft.data import split_records

    _, held_out = split_records(open_records(str(clause_dataset)), fraction=0.2, seed=HYPERPARAMETERS["seed"])
    tokenizer = AutoTokenizer.from_pretrained(trained.output_dir / "lora_adapters", local_files_only=True)
    base = AutoModelForCausalLM.from_pretrained(demo_base, local_files_only=True, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, trained.output_dir / "lora_adapters").eval()
    correct = 0
    for record in held_out:
        question = [{"role": m.role, "content": m.content} for m in conversation_for(record)[:-1]]
        prompt = tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=True)
        input_ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids, max_new_tokens=8, do_sample=False, eos_token_id=tokenizer.eos_token_id
            )
        answer = tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True).strip()
        correct += answer == record.label
    assert correct / len(held_out) == pytest.approx(trained.eval_points[-1]["eval_exact_match"], abs=0.051)


def test_it_stops_with_a_clear_error_when_the_loss_turns_nan(demo_base, clause_dataset, tmp_path):
    """A base whose weights overflowed (as a bad float16 conversion leaves them) makes the loss NaN."""
    import torch
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken-base"
    shutil.copytree(demo_base, broken)
    weights = load_file(str(broken / "model.safetensors"))
    weights["model.layers.1.mlp.down_proj.weight"][0, 0] = torch.inf
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    run = run_trainer(
        base_model=str(broken),
        dataset=clause_dataset,
        hyperparameters={"epochs": 2, "validation_fraction": 0},
        output_dir=tmp_path / "output",
    )
    assert run.returncode == 1
    errors = run.lines_at("ERROR")
    assert len(errors) == 1 and "the loss became nan at step 1 (epoch 1)" in errors[0]
    assert run.stderr.splitlines()[-1] == errors[0]  # the last stderr line: the job's error message
    assert run.step_points == []
    assert not (tmp_path / "output" / "lora_adapters").exists()
    assert not (tmp_path / "output" / "metrics.json").exists()


def test_it_refuses_a_base_model_that_is_not_local_without_trying_to_download(clause_dataset, tmp_path):
    run = run_trainer(
        base_model="nobody-here/not-a-cached-model",
        dataset=clause_dataset,
        hyperparameters={},
        output_dir=tmp_path / "output",
        extra_env={"HF_HOME": str(tmp_path / "empty-hf-home")},
        timeout=60,
    )
    assert run.returncode == 2
    [error] = run.lines_at("ERROR")
    assert "base model nobody-here/not-a-cached-model is not available here" in error


def test_a_base_it_cannot_load_is_named_without_the_loaders_details(clause_dataset, tmp_path):
    """The loader's text would say whether a path exists and what a config.json there declares."""
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "secret-architecture", "hidden_size": 7}')
    run = run_trainer(
        base_model=str(folder),
        dataset=clause_dataset,
        hyperparameters={},
        output_dir=tmp_path / "output",
        extra_env={"BASE_MODEL_NAME": "my-base"},
        timeout=60,
    )
    assert run.returncode == 2
    [error] = run.lines_at("ERROR")
    assert error.endswith("base model my-base is not available here")
    assert "secret-architecture" not in run.stdout + run.stderr
    assert str(folder) not in run.stdout + run.stderr
