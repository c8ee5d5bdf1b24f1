"""bench/gpu_lora_check.py runs whole on the CPU (--allow-cpu, tiny shapes) and prints the JSON the GPU run
prints, key for key, so that the one short GPU run a session gets cannot fail on the script itself."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import ROOT

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

pytestmark = pytest.mark.slow

RUN_KEYS = {
    "ok",
    "error",
    "steps",
    "timed_steps",
    "real_tokens_per_second",
    "computed_tokens_per_second",
    "seconds",
    "peak_memory_mib",
    "peak_memory_kind",
    "mfu",
    "first_loss",
    "final_loss",
    "losses",
    "setup",
}


@pytest.fixture(scope="module")
def report():
    completed = subprocess.run(
        [sys.executable, "bench/gpu_lora_check.py", "--allow-cpu", "--steps", "3"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-3000:]
    [line] = completed.stdout.splitlines()  # one JSON object, nothing else on stdout
    return json.loads(line)


def test_it_prints_the_report_of_every_shape_with_the_keys_of_the_gpu_run(report):
    assert set(report) == {
        "skipped",
        "ok",
        "device",
        "versions",
        "batch_size",
        "lora",
        "learning_rate",
        "steps",
        "warmup_steps_not_timed",
        "mfu_definition",
        "shapes",
        "qlora",
        "wall_seconds",
    }
    assert report["ok"] is True and report["skipped"] is False and report["device"] == "cpu"
    assert [(s["shape"], s["data"]) for s in report["shapes"]] == [
        ("llama-3.2-1b", "spread 64-2048"),
        ("llama-3.2-3b", "spread 64-2048"),
        ("llama-3.2-1b", "full length 1024"),
    ]
    for shape in report["shapes"]:
        assert set(shape) == {
            "shape",
            "data",
            "parameters",
            "record_tokens",
            "lora_sft",
            "plain_peft",
            "real_tokens_per_second_ratio",
            "peak_memory_ratio",
            "final_loss_difference",
        }
        for run in (shape["lora_sft"], shape["plain_peft"]):
            assert set(run) == RUN_KEYS
            assert run["ok"] is True and run["real_tokens_per_second"] > 0 and run["peak_memory_mib"] > 0
        assert shape["real_tokens_per_second_ratio"] > 0
    assert set(report["qlora"]) == {
        "shape",
        "data",
        "nf4",
        "bf16",
        "real_tokens_per_second_ratio",
        "peak_memory_ratio",
    }
    assert set(report["qlora"]["nf4"]) == RUN_KEYS
    assert report["qlora"]["nf4"]["ok"] is False and "needs a CUDA GPU" in report["qlora"]["nf4"]["error"]


def test_lora_sft_and_plain_peft_train_the_same_thing(report):
    """In float32 on the CPU the two step for step to the same losses: packing and the chunked loss change the
    work, not the maths."""
    for shape in report["shapes"]:
        ours, plain = shape["lora_sft"], shape["plain_peft"]
        assert ours["setup"]["packing"] is True and ours["setup"]["fused_loss"] is True
        assert ours["losses"] == pytest.approx(plain["losses"], abs=1e-4)
        if shape["data"].startswith("spread"):
            # Padding is computed by the padded baseline and never counted as a real token.
            assert plain["computed_tokens_per_second"] > plain["real_tokens_per_second"]
        else:  # full-length records: nothing to pad
            assert plain["computed_tokens_per_second"] == plain["real_tokens_per_second"]
