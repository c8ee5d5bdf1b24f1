"""lora-sft keeps the best epoch and stops early: the adapter saved is the one with the lowest validation loss, and
a run whose validation loss stopped improving ends before its last epoch."""

import json

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from .conftest import SAMPLE_TRAIN, run_trainer, write_jsonl  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

# The demo base's preset on the sample set, for up to 20 epochs.
PRESET = {"epochs": 20, "batch_size": 16, "learning_rate": 0.02}


@pytest.fixture
def overfitting(tmp_path):
    """The sample's training records, validated on records of the same clauses labelled wrongly: the validation
    loss falls while the model learns the labels' form, then rises as it learns the right labels."""
    if not SAMPLE_TRAIN.exists():
        pytest.skip("samples/contracts/train.jsonl is missing")
    records = [json.loads(line) for line in SAMPLE_TRAIN.read_text().splitlines() if line.strip()]
    labels = sorted({record["output"] for record in records})
    wrong = [{**record, "output": labels[(labels.index(record["output"]) + 1) % len(labels)]} for record in records]
    return write_jsonl(tmp_path / "train.jsonl", records), write_jsonl(tmp_path / "wrong.jsonl", wrong[:40])


def validation_loss_of_saved_adapter(base, adapter_dir, validation_path) -> float:
    """The token-weighted answer loss of the saved adapter on the validation records, computed here."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune_studio.records import open_records
    from trainers.lora_sft.chat import IGNORE_INDEX, encode_records

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir, local_files_only=True)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, local_files_only=True), adapter_dir)
    model.eval()
    loss, tokens = 0.0, 0
    with torch.no_grad():
        for example in encode_records(tokenizer, open_records(str(validation_path)), system_prompt="", max_length=512):
            logits = model(input_ids=torch.tensor([example.input_ids])).logits[0, :-1]
            targets = torch.tensor(example.labels[1:])
            loss += torch.nn.functional.cross_entropy(
                logits, targets, ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            tokens += int((targets != IGNORE_INDEX).sum())
    return loss / tokens


def test_it_stops_once_validation_stops_improving_and_saves_the_best_epochs_adapter(demo_base, tmp_path, overfitting):
    train, wrong = overfitting
    run = run_trainer(
        base_model=str(demo_base),
        dataset=train,
        hyperparameters={**PRESET, "early_stopping_patience": 2, "keep_best_epoch": True},
        output_dir=tmp_path / "output",
        extra_env={"VALIDATION_DATASET_PATH": str(wrong)},
    )

    assert run.returncode == 0, run.stderr
    losses = [point["eval_loss"] for point in run.eval_points]
    best_epoch = losses.index(min(losses)) + 1
    assert len(losses) == best_epoch + 2 < PRESET["epochs"]  # two epochs without improvement, then it stopped
    final = json.loads((run.output_dir / "metrics.json").read_text())["final"]
    assert (final["epoch"], final["best_epoch"], final["stopped_early"]) == (len(losses), best_epoch, True)
    assert final["eval_loss"] == min(losses) < losses[-1]
    assert any(f"keeping epoch {best_epoch}'s adapter" in line for line in run.lines)
    saved = validation_loss_of_saved_adapter(str(demo_base), run.output_dir / "lora_adapters", wrong)
    assert saved == pytest.approx(min(losses), abs=1e-3)
    assert abs(saved - losses[-1]) > 1e-3  # not the last epoch's weights


def test_without_validation_records_every_epoch_runs_and_it_says_why(demo_base, tmp_path, overfitting):
    train, _wrong = overfitting
    run = run_trainer(
        base_model=str(demo_base),
        dataset=train,
        hyperparameters={**PRESET, "epochs": 2, "validation_fraction": 0, "early_stopping_patience": 1},
        output_dir=tmp_path / "output",
    )

    assert run.returncode == 0, run.stderr
    assert any("early_stopping_patience need(s) validation records" in line for line in run.lines_at("WARN"))
    assert json.loads((run.output_dir / "metrics.json").read_text())["final"]["epoch"] == 2
