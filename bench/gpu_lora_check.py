"""GPU check of the lora-sft trainer: tokens/s and peak GPU memory on a larger generated base model.

Builds a Llama-architecture base (hidden 1024, 8 layers, ≈ 110M parameters; random weights, tokenizer trained
here, nothing downloaded), then runs the trainer exactly as the job runner does (``python -m trainers.lora_sft``
with the contract's environment) for a bounded number of steps: once with bfloat16 autocast (the default on a
GPU) and once in float32 as the baseline of the same run. Prints ONE JSON object. Without CUDA (or without the
training extra) it prints {"skipped": true, "reason": …} and exits 0; ``--allow-cpu`` runs a tiny version on
the CPU to check the script itself.

    .venv/bin/python bench/gpu_lora_check.py            # on a machine with a GPU; about a minute
    .venv/bin/python bench/gpu_lora_check.py --allow-cpu

Not part of ``make bench`` (named gpu_*, not bench_*) and never required by CI.
"""

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GPU_SHAPE = {"hidden_size": 1024, "num_layers": 8, "num_heads": 16, "intermediate_size": 2816, "vocab_size": 4096}
CPU_SHAPE = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 256, "vocab_size": 1024}
RUN_TIMEOUT_S = 240


def _skip(reason: str) -> int:
    print(json.dumps({"skipped": True, "reason": reason}))
    return 0


def _train(base: Path, dataset: Path, work: Path, name: str, hyperparameters: dict) -> dict:
    output = work / name
    hyperparams_file = work / f"{name}.json"
    hyperparams_file.write_text(json.dumps(hyperparameters))
    env = {
        **{
            key: os.environ[key]
            for key in ("PATH", "HOME", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")
            if key in os.environ
        },
        "JOB_ID": f"gpu-check-{name}",
        "BASE_MODEL": str(base),
        "DATASET_PATH": str(dataset),
        "HYPERPARAMS_FILE": str(hyperparams_file),
        "OUTPUT_DIR": str(output),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "trainers.lora_sft"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    wall = time.monotonic() - started
    if completed.returncode != 0:
        tail = (completed.stdout + completed.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"the {name} run exited {completed.returncode}: {' | '.join(tail)}")
    metrics = json.loads((output / "metrics.json").read_text())
    history = metrics["history"]
    # The first logging window includes CUDA kernel selection and allocator warm-up: leave it out of the median.
    steady = [point["tokens_per_second"] for point in history[1:]] or [history[-1]["tokens_per_second"]]
    return {
        "wall_seconds": round(wall, 1),
        "train_seconds": metrics["final"]["runtime_seconds"],
        "steps": metrics["final"]["step"],
        "tokens_per_second_median": round(statistics.median(steady), 1),
        "tokens_per_second_overall": metrics["final"]["tokens_per_second"],
        "peak_gpu_memory_mib": metrics["final"].get("peak_gpu_memory_mib"),
        "first_loss": history[0]["loss"],
        "final_loss": metrics["final"]["loss"],
        "eval_accuracy": metrics["final"].get("eval_accuracy"),
        "device": metrics["run"]["device"],
        "adapter_bytes": (output / "lora_adapters" / "adapter_model.safetensors").stat().st_size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run a tiny version on the CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 120 GPU, 10 CPU)")
    args = parser.parse_args()

    missing = [name for name in ("torch", "transformers", "peft") if importlib.util.find_spec(name) is None]
    if missing:
        return _skip(f"the training extra is not installed (missing: {', '.join(missing)})")
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        return _skip("no CUDA device (torch.cuda.is_available() is false); --allow-cpu runs a tiny CPU version")

    from safetensors.torch import load_file

    from trainers.demo_base import build_demo_base, synthetic_clause_records

    shape = GPU_SHAPE if cuda else CPU_SHAPE
    steps = args.steps or (120 if cuda else 10)
    batch_size = 16 if cuda else 8
    # One epoch of exactly ``steps`` optimizer steps; 5 % more records are held out for validation.
    train_records = steps * batch_size
    total_records = round(train_records / 0.95) + 1
    with tempfile.TemporaryDirectory(prefix="gpu-lora-check-") as tmp:
        work = Path(tmp)
        records = synthetic_clause_records(total_records, seed=3, clauses_per_record=6)
        dataset = work / "clauses.jsonl"
        dataset.write_text("".join(json.dumps(record) + "\n" for record in records))
        started = time.monotonic()
        corpus = [value for record in records[:2000] for value in record.values()]
        base = build_demo_base(work / "base", texts=corpus, seed=0, name="finetune-studio/gpu-check-llama", **shape)
        build_seconds = time.monotonic() - started
        parameters = sum(tensor.numel() for tensor in load_file(str(base / "model.safetensors")).values())
        common = {
            "epochs": 1,
            "batch_size": batch_size,
            "learning_rate": 3e-4,
            "lora_r": 16,
            "lora_alpha": 32,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "max_length": 512,
            "validation_fraction": 0.05,
            "logging_steps": 10 if cuda else 2,
            "seed": 0,
        }
        try:
            runs = {"bf16": _train(base, dataset, work, "bf16", {**common, "bf16": True})}
            runs["fp32"] = _train(base, dataset, work, "fp32", {**common, "bf16": False})
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(json.dumps({"skipped": False, "ok": False, "error": str(exc)}))
            return 1
    report = {
        "skipped": False,
        "ok": True,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "base": {**shape, "parameters": parameters, "build_seconds": round(build_seconds, 1)},
        "train_records": train_records,
        "hyperparameters": common,
        "runs": runs,
        "bf16_vs_fp32_tokens_per_second": round(
            runs["bf16"]["tokens_per_second_median"] / runs["fp32"]["tokens_per_second_median"], 2
        ),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
