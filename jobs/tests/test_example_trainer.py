"""The example trainer follows the contract on the sample data, quickly, and really learns."""

import json
import subprocess
import sys
import time

from tests.support.processes import ROOT


def run_example_trainer(tmp_path, dataset, hyperparameters=None) -> subprocess.CompletedProcess:
    """``python -m trainers.example`` as the runner starts it; its artifacts go to ``tmp_path / "out"``."""
    (tmp_path / "out").mkdir()
    params = tmp_path / "hp.json"
    params.write_text(json.dumps(hyperparameters or {}))
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "DATASET_PATH": str(dataset),
        "HYPERPARAMS_FILE": str(params),
        "OUTPUT_DIR": str(tmp_path / "out"),
        "JOB_ID": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "trainers.example"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_the_example_trainer_learns_the_sample_contracts_within_seconds(tmp_path):
    output = tmp_path / "out"
    started = time.monotonic()
    result = run_example_trainer(tmp_path, ROOT / "samples/contracts/train.jsonl", {"epochs": 8})
    assert result.returncode == 0, result.stderr
    # ~2 s on an idle machine (mostly importing scikit-learn); shared CI cores get a wide margin.
    assert time.monotonic() - started < 20
    points = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [point["epoch"] for point in points] == list(range(1, 9))
    assert all({"step", "total_steps", "loss", "learning_rate", "accuracy"} <= point.keys() for point in points)
    assert points[-1]["step"] == points[-1]["total_steps"]
    assert points[-1]["loss"] < points[0]["loss"]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["eval_accuracy"] >= 0.8
    assert metrics["training_seconds"] < 5
    assert sorted(p.name for p in (output / "classifier").iterdir()) == ["config.json", "labels.json", "model.joblib"]


def test_the_example_trainer_exits_2_on_a_bad_dataset(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "only one field"}\n')
    result = run_example_trainer(tmp_path, bad)
    assert result.returncode == 2
    assert "line 1: needs 'messages'" in result.stderr and "or 'text' and 'label'" in result.stderr


def test_the_example_trainer_refuses_free_text_answers_with_the_way_out_instead_of_exhausting_memory(tmp_path):
    """A chat set's answers are each a "label" to a classifier: 2,000 of them would be 4 GiB of weights."""
    chat = tmp_path / "chat.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}
        for i in range(2000)
    ]
    chat.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_example_trainer(tmp_path, chat)
    assert result.returncode == 2, result.stderr
    assert "2000 distinct labels in 2000 records" in result.stderr
    assert "use the lora-sft trainer to learn them" in result.stderr
    assert not (tmp_path / "out" / "classifier").exists()
