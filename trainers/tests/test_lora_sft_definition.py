"""The lora-sft definition and its hyperparameters: no torch needed, so these run without the training extra."""

import json
import subprocess
import sys

import pytest

from jobs import hyperparameters as job_hyperparameters
from trainers.builtin import BUILTIN_TRAINERS
from trainers.lora_sft.definition import DEFINITION, HYPERPARAMETER_SCHEMA
from trainers.lora_sft.params import HyperparameterError, resolve_hyperparameters

from .conftest import ROOT, write_jsonl


def test_it_is_registered_as_a_builtin_trainer_needing_torch_transformers_and_peft():
    assert DEFINITION in BUILTIN_TRAINERS
    assert DEFINITION["name"] == "lora-sft"
    assert DEFINITION["command"] == ["{python}", "-m", "trainers.lora_sft"]
    assert DEFINITION["required_modules"] == ["torch", "transformers", "peft"]
    assert "LoRA" in DEFINITION["description"] and "downloaded" in DEFINITION["description"]


def test_its_schema_is_accepted_by_the_jobs_validator_and_its_defaults_validate():
    job_hyperparameters.check_schema(HYPERPARAMETER_SCHEMA)
    cleaned, errors = job_hyperparameters.validate(HYPERPARAMETER_SCHEMA, {})
    assert errors == {}
    assert cleaned == resolve_hyperparameters({})[0]


def test_its_schema_has_the_documented_parameters_with_help_and_sensible_defaults():
    expected = {
        "epochs", "learning_rate", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "batch_size",
        "gradient_accumulation_steps", "max_length", "warmup_ratio", "seed", "validation_fraction", "logging_steps",
        "base_dtype", "attention", "packing", "kernels", "gradient_checkpointing", "quantization",
    }  # fmt: skip
    assert expected <= set(HYPERPARAMETER_SCHEMA)
    assert all(spec.get("help") for spec in HYPERPARAMETER_SCHEMA.values())
    defaults, _ = resolve_hyperparameters({})
    assert defaults["target_modules"] == ["q_proj", "v_proj"]
    assert HYPERPARAMETER_SCHEMA["lora_alpha"]["type"] == "integer" and isinstance(defaults["lora_alpha"], int)
    assert 0 < defaults["learning_rate"] < 1e-2 and 0 < defaults["validation_fraction"] < 0.5


def test_it_fills_defaults_and_keeps_given_values():
    resolved, ignored = resolve_hyperparameters({"epochs": 30, "learning_rate": 1e-2, "surprise": 1})
    assert resolved["epochs"] == 30 and resolved["learning_rate"] == 1e-2 and resolved["lora_r"] == 8
    assert ignored == ["surprise"]


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ({"epochs": 0}, "'epochs' must be at least 1"),
        ({"epochs": "3"}, "'epochs' must be an integer"),
        ({"lora_alpha": 16.5}, "'lora_alpha' must be an integer"),
        ({"learning_rate": 5.0}, "'learning_rate' must be at most 1.0"),
        ({"target_modules": []}, "'target_modules' must be a non-empty list"),
        ({"bf16": "yes"}, "'bf16' must be true or false"),
        ({"quantization": "nf5"}, "'quantization' must be one of none, nf4"),
        ({"packing": True}, "'packing' must be one of auto, on, off"),
        ({"kernels": "triton"}, "'kernels' must be one of auto, liger, torch"),
        ({"gradient_checkpointing": 1}, "'gradient_checkpointing' must be true or false"),
    ],
)
def test_it_refuses_hyperparameters_it_cannot_honour(given, reason):
    with pytest.raises(HyperparameterError, match=reason):
        resolve_hyperparameters(given)


def test_the_trainer_refuses_a_bad_hyperparameters_file_before_loading_anything(tmp_path):
    """Exit 2 with an ERROR line naming the parameter, and nothing written."""
    (tmp_path / "hp.json").write_text(json.dumps({"lora_r": 0}))
    dataset = write_jsonl(tmp_path / "data.jsonl", [{"text": "a", "label": "b"}])
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "JOB_ID": "1",
        "BASE_MODEL": "nowhere/model",
        "DATASET_PATH": str(dataset),
        "HYPERPARAMS_FILE": str(tmp_path / "hp.json"),
        "OUTPUT_DIR": str(tmp_path / "out"),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "trainers.lora_sft"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().endswith("[ERROR] hyperparameter 'lora_r' must be at least 1, got 0")
    assert not (tmp_path / "out").exists()


def test_the_trainer_names_a_missing_environment_variable(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OUTPUT_DIR": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, "-m", "trainers.lora_sft"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 2
    assert "[ERROR] missing environment variable(s): DATASET_PATH, BASE_MODEL" in completed.stderr
