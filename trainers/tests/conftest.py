"""Fixtures for the trainer tests: a tiny base model built here, a synthetic clause dataset, the trainer run."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# Tests never download: without these a name that is not local stalls on the network before failing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

ROOT = Path(__file__).resolve().parents[2]
# The sample dataset the quick start fine-tunes on (5 labels, 200 records); synthetic clauses stand in without it.
SAMPLE_TRAIN = ROOT / "samples" / "contracts" / "train.jsonl"


@dataclass
class TrainerRun:
    returncode: int
    stdout: str
    stderr: str
    output_dir: Path

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    @property
    def json_points(self) -> list[dict]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    @property
    def step_points(self) -> list[dict]:
        return [point for point in self.json_points if "step" in point]

    @property
    def eval_points(self) -> list[dict]:
        return [point for point in self.json_points if "eval_loss" in point]

    def lines_at(self, level: str) -> list[str]:
        """The log lines of a level, on either stream (a failing run says why on stderr)."""
        lines = self.lines + self.stderr.splitlines()
        return [line for line in lines if f"] [{level}] " in line]


def run_trainer(
    *,
    base_model: str,
    dataset: Path,
    hyperparameters: dict,
    output_dir: Path,
    extra_env: dict | None = None,
    timeout: int = 180,
    command: list[str] | None = None,
) -> TrainerRun:
    """Start the trainer exactly as the job runner does: ``python -m trainers.lora_sft`` (or ``command``, e.g. the
    runner's torchrun launch of it) and the contract's env."""
    hyperparams_file = output_dir.parent / f"{output_dir.name}-hyperparameters.json"
    hyperparams_file.write_text(json.dumps(hyperparameters))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "JOB_ID": "42",
        "BASE_MODEL": base_model,
        "DATASET_PATH": str(dataset),
        "HYPERPARAMS_FILE": str(hyperparams_file),
        "OUTPUT_DIR": str(output_dir),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        # The tiny model gains nothing from threads, and on busy shared cores OpenMP's spinning threads made a
        # 10 s run take minutes.
        "OMP_NUM_THREADS": "1",
        **(extra_env or {}),
    }
    completed = subprocess.run(
        command or [sys.executable, "-m", "trainers.lora_sft"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return TrainerRun(completed.returncode, completed.stdout, completed.stderr, output_dir)


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


@pytest.fixture(scope="session")
def demo_base(tmp_path_factory) -> Path:
    pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
    pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")
    import torch

    from trainers.demo_base import build_demo_base, corpus_from_files

    torch.set_num_threads(1)  # as in the trainer runs (run_trainer): threads only slow this tiny model down
    # Built as `manage.py build_demo_base` builds it: the tokenizer learns the sample training text.
    texts = corpus_from_files([SAMPLE_TRAIN]) if SAMPLE_TRAIN.exists() else None
    return build_demo_base(tmp_path_factory.mktemp("bases") / "demo-base", texts=texts, seed=0)


@pytest.fixture(scope="session")
def clause_dataset(tmp_path_factory) -> Path:
    if SAMPLE_TRAIN.exists():
        return SAMPLE_TRAIN
    from trainers.demo_base import synthetic_clause_records

    return write_jsonl(tmp_path_factory.mktemp("data") / "clauses.jsonl", synthetic_clause_records(200, seed=1))
