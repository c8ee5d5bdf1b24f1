"""lora-sft on OpenAI chat records: it learns a small multi-turn task on the demo base, trains only the
assistant turns that carry weight 1, and reports validation loss and exact match as metrics lines."""

import json
import random
import re

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from finetune_studio.records import open_records  # noqa: E402
from tests.factories import tool_records  # noqa: E402

from .conftest import run_trainer, write_jsonl  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

SYSTEM = "Name the clause type."
HYPERPARAMETERS = {
    "epochs": 20,
    "learning_rate": 2e-2,
    "batch_size": 16,
    "logging_steps": 10,
    "validation_fraction": 0.2,
    "validation_max_records": 30,  # 40 asked, 30 held out: the other 10 are trained on
    "warmup_ratio": 0.05,
    "seed": 7,
}


def chat_records(source) -> list[dict]:
    """Each clause record as a conversation: a greeting answered by noise (weight 0, unlearnable), then the
    clause and its type. Exact match counts trained turns only, so it can rise only if weight 0 is honoured."""
    rng = random.Random(5)
    conversations = []
    for record in open_records(str(source)):
        noise = " ".join(str(rng.randrange(10)) for _ in range(6))
        conversations.append(
            {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "Hello."},
                    {"role": "assistant", "content": noise, "weight": 0},
                    {"role": "user", "content": record.input or record.text},
                    {"role": "assistant", "content": record.label},
                ]
            }
        )
    return conversations


@pytest.fixture(scope="module")
def chat_run(demo_base, clause_dataset, tmp_path_factory):
    work = tmp_path_factory.mktemp("chat-run")
    dataset = write_jsonl(work / "chat.jsonl", chat_records(clause_dataset))
    run = run_trainer(
        base_model=str(demo_base), dataset=dataset, hyperparameters=HYPERPARAMETERS, output_dir=work / "output"
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def test_held_out_exact_match_goes_clearly_up_on_a_multi_turn_chat_task(chat_run):
    [before] = [line for line in chat_run.lines_at("INFO") if "before training" in line]
    baseline = float(re.search(r"exact match ([0-9.]+)", before).group(1))
    evaluations = chat_run.eval_points
    assert [point["epoch"] for point in evaluations] == list(range(1, 21))
    assert all(set(point) == {"epoch", "eval_loss", "eval_exact_match"} for point in evaluations)
    # From nothing to half the held-out conversations answered token for token (five types: a guess gets 1/5
    # of the labels right, and none of them exactly with the end of turn unless it was learned).
    assert baseline <= 0.05
    assert evaluations[-1]["eval_exact_match"] >= 0.45, evaluations[-1]
    assert evaluations[-1]["eval_loss"] < evaluations[0]["eval_loss"]


def test_the_run_records_the_chat_format_and_the_held_out_figures(chat_run):
    metrics = json.loads((chat_run.output_dir / "metrics.json").read_text())
    assert (metrics["run"]["record_format"], metrics["run"]["task"]) == ("openai_chat", "generation")
    assert metrics["final"]["eval_exact_match"] == chat_run.eval_points[-1]["eval_exact_match"]
    assert (metrics["run"]["train_records"], metrics["run"]["validation_records"]) == (170, 30)


def test_a_short_run_on_tool_calling_records_completes_and_reports_its_held_out_figures(demo_base, tmp_path):
    dataset = write_jsonl(tmp_path / "tools.jsonl", tool_records(12))
    run = run_trainer(
        base_model=str(demo_base),
        dataset=dataset,
        # Too short for the records: the warning says that what is cut is their tool definitions.
        hyperparameters={
            "epochs": 2,
            "batch_size": 4,
            "logging_steps": 1,
            "validation_fraction": 0.25,
            "max_length": 96,
        },
        output_dir=tmp_path / "output",
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.lines_at("ERROR") == []
    assert [line.split("] [WARN] ", 1)[1] for line in run.lines_at("WARN")] == [
        "12 record(s) longer than max_length=96: their beginning was cut (for tool-calling records, their tool "
        "definitions: raise max_length to keep them)"
    ]
    assert [point["epoch"] for point in run.eval_points] == [1, 2]
    metrics = json.loads((run.output_dir / "metrics.json").read_text())
    assert (metrics["run"]["train_records"], metrics["run"]["validation_records"]) == (9, 3)
    assert metrics["run"]["record_format"] == "openai_chat"
    assert (run.output_dir / "lora_adapters" / "adapter_model.safetensors").is_file()
