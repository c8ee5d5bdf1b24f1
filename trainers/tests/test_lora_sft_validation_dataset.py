"""lora-sft with a validation dataset (VALIDATION_DATASET_PATH): every training record is trained on and the
validation figures come from that file; one it cannot use is refused before the base is loaded."""

import json

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from tests.factories import chat_records, sample_records  # noqa: E402

from .conftest import run_trainer, write_jsonl  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

HYPERPARAMETERS = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-2, "validation_fraction": 0.5, "logging_steps": 1}


def test_the_validation_dataset_replaces_the_held_out_share(demo_base, tmp_path):
    run = run_trainer(
        base_model=str(demo_base),
        dataset=write_jsonl(tmp_path / "train.jsonl", chat_records(16)),
        hyperparameters=HYPERPARAMETERS,
        output_dir=tmp_path / "output",
        extra_env={"VALIDATION_DATASET_PATH": str(write_jsonl(tmp_path / "valid.jsonl", chat_records(5, start=100)))},
    )

    assert run.returncode == 0, run.stderr
    assert any("16 records for training, 5 from the validation dataset for validation" in line for line in run.lines)
    facts = json.loads((run.output_dir / "metrics.json").read_text())["run"]
    assert (facts["train_records"], facts["validation_records"]) == (16, 5)  # validation_fraction 0.5 not applied
    assert facts["validation_source"] == "validation dataset"
    assert len(run.eval_points) == 1


@pytest.mark.parametrize(
    ("records", "says"),
    [
        (sample_records(4), "the validation dataset holds classification records, the training dataset generation"),
        ([{"messages": [{"role": "user", "content": "no answer"}]}], "validation dataset line 1"),
    ],
)
def test_a_validation_dataset_it_cannot_use_is_refused(demo_base, tmp_path, records, says):
    run = run_trainer(
        base_model=str(demo_base),
        dataset=write_jsonl(tmp_path / "train.jsonl", chat_records(16)),
        hyperparameters=HYPERPARAMETERS,
        output_dir=tmp_path / "output",
        extra_env={"VALIDATION_DATASET_PATH": str(write_jsonl(tmp_path / "valid.jsonl", records))},
        timeout=60,
    )

    assert run.returncode == 2
    assert any(says in line for line in run.lines_at("ERROR")), run.stderr
