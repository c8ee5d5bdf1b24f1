"""GPU check of lora-sft on the shapes people fine-tune: Llama-3.2-1B and 3B, against plain transformers + PEFT.

Generated bases of the Llama-3.2-1B and 3B shapes (random weights, nothing downloaded) and synthetic records
with a realistic length spread (64–2,048 tokens, most of them short, 40–80 % of each a prompt the loss
ignores). For each shape, in the same run and on the same records in the same order:

* ``lora_sft``: the trainer's own step (trainers/lora_sft: bf16 frozen base, fp32 LoRA weights and AdamW
  state, packing, the loss over trained tokens only — Liger's fused kernels when installed, else the chunked
  cross-entropy — and flash-attention when installed, else sdpa);
* ``plain_peft``: plain transformers + PEFT as a careful user runs it: bf16 weights, sdpa attention, padded
  batches, transformers' own loss over full logits, bf16 autocast, no fused kernels.

Both: LoRA r 16 / alpha 32 on every linear layer, no dropout, no checkpointing, AdamW, batch 8. Then the
1B shape on full-length records (8 × 1,024 tokens, every token trained: nothing for packing to remove), and
one QLoRA (nf4) run of lora-sft at 3B beside its bf16 run. Each run is a process of its own (clean peak
memory; Liger patches transformers' classes for the process). Prints ONE JSON object: per shape the real
(non-padding) tokens/s of both, their ratio, peak memory of both, model FLOP utilisation, the loss after N
steps of both. Without CUDA it prints {"skipped": true, …}; ``--allow-cpu`` runs the whole script on tiny
shapes (peak memory is then the process's RSS) and prints the same keys.

    python3 bench/gpu_lora_check.py                 # on a GPU machine: about 4–5 minutes
    python3 bench/gpu_lora_check.py --allow-cpu     # checks the script: tiny shapes on the CPU

Not part of ``make bench`` (named gpu_*, not bench_*) and never required by CI.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LLAMA_3_2 = {"vocab_size": 128256, "rope_theta": 500000.0, "tie_word_embeddings": True, "max_position_embeddings": 4096}
SHAPES = {
    "llama-3.2-1b": {
        **LLAMA_3_2,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
    },
    "llama-3.2-3b": {
        **LLAMA_3_2,
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "head_dim": 128,
    },
}
# --allow-cpu: the same script on shapes a CPU trains in seconds (same keys, same code paths).
CPU_SHAPES = {
    "llama-3.2-1b": {
        **LLAMA_3_2,
        "vocab_size": 2048,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
    "llama-3.2-3b": {
        **LLAMA_3_2,
        "vocab_size": 2048,
        "hidden_size": 96,
        "intermediate_size": 192,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 16,
    },
}
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = {"r": 16, "alpha": 32}
BATCH_SIZE = 8
LEARNING_RATE = 1e-3
# Dense bf16 tensor-core peak by the vendors' datasheets (MFU's denominator); other devices report no MFU.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}
CHILD_TIMEOUT_S = 240
RUN_KEYS = (
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
)
MFU_DEFINITION = (
    "model FLOPs per step / step time / dense bf16 peak; model FLOPs of LoRA training per real token: "
    "4 x frozen linear parameters (forward + input gradients) + 6 x LoRA parameters + causal attention "
    "6 x heads x head_dim x layers x record length; plus 4 x vocab x hidden per trained token (lm_head); "
    "padding and logits of untrained positions are not useful work and not counted"
)


# ---------------------------------------------------------------- data


def synthetic_records(count: int, *, vocab: int, seed: int, full_length: int | None = None) -> list[dict]:
    """Token records: lengths log-normal around 400 clipped to 64–2,048 (or all ``full_length``, all trained).

    Tokens follow a Zipf law over the first 8,192 ids (something a LoRA can learn in a few steps, so that the
    two runs' losses visibly move together).
    """
    rng = random.Random(seed)
    ids = min(vocab, 8192)
    weights = [1 / (rank + 1) for rank in range(ids)]
    records = []
    for _ in range(count):
        if full_length:
            length, prompt = full_length, 1
        else:
            length = int(min(2048, max(64, rng.lognormvariate(math.log(400), 0.8))))
            prompt = int(length * rng.uniform(0.4, 0.8))
        tokens = rng.choices(range(ids), weights=weights, k=length)
        records.append({"input_ids": tokens, "labels": [-100] * prompt + tokens[prompt:]})
    return records


def cpu_scaled(records: list[dict], factor: int) -> list[dict]:
    """The same spread, ``factor`` times shorter (the CPU check keeps the shape of the data, not its size)."""
    scaled = []
    for record in records:
        length = max(4, len(record["input_ids"]) // factor)
        prompt = sum(label == -100 for label in record["labels"]) * length // len(record["labels"])
        tokens = record["input_ids"][:length]
        scaled.append({"input_ids": tokens, "labels": [-100] * max(1, prompt) + tokens[max(1, prompt) :]})
    return scaled


# ---------------------------------------------------------------- FLOPs


def flops_per_step(shape: dict, records: list[dict]) -> float:
    d, layers = shape["hidden_size"], shape["num_hidden_layers"]
    heads, kv, head_dim = shape["num_attention_heads"], shape["num_key_value_heads"], shape["head_dim"]
    inter, vocab = shape["intermediate_size"], shape["vocab_size"]
    attention_width = heads * head_dim
    linear = layers * (d * attention_width * 2 + d * kv * head_dim * 2 + 3 * d * inter)
    r = LORA["r"]
    lora = layers * r * ((d + attention_width) * 2 + (d + kv * head_dim) * 2 + (d + inter) * 2 + (inter + d))
    total = 0.0
    for record in records:
        length = len(record["input_ids"])
        trained = sum(label != -100 for label in record["labels"][1:])
        total += length * (4 * linear + 6 * lora) + 6 * attention_width * layers * length**2
        total += 4 * vocab * d * trained
    return total


# ---------------------------------------------------------------- one run (child process)


def _peak_memory(torch, device) -> tuple[float, str]:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1), "gpu allocated"
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "cpu rss"


def _run(spec: dict) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from trainers.lora_sft.chat import Example
    from trainers.lora_sft.data import collate

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    records = json.loads(Path(spec["data"]).read_text())
    examples = [Example(input_ids=r["input_ids"], labels=r["labels"]) for r in records]
    lora_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=0.0,
        target_modules=TARGET_MODULES,
        bias="none",
    )
    autocast_enabled = cuda  # bf16 autocast on the GPU for both, as a careful user runs PEFT
    setup_record = None
    if spec["trainer"] == "lora_sft":
        from trainers.lora_sft import modeling
        from trainers.lora_sft.distributed import World
        from trainers.lora_sft.steps import micro_batch_loss

        params = {
            "bf16": True,
            "base_dtype": "auto",
            "attention": "auto",
            "packing": "on",
            "kernels": spec["kernels"],
            "gradient_checkpointing": False,
            "quantization": spec.get("quantization", "none"),
        }
        setup = modeling.resolve_setup(
            params, device_type=device.type, bf16_supported=cuda and torch.cuda.is_bf16_supported()
        )
        setup_record = setup.describe()
        model = modeling.load_base(spec["base"], setup, device=device)
        torch.manual_seed(0)  # the same LoRA initialisation as the baseline's
        model = modeling.prepare_for_training(get_peft_model(model, lora_config), setup)
        if setup.quantization == "none":
            model.to(device)
        step_model = modeling.TrainingForward(model, setup)
        setup_record["fused_loss"] = step_model.fused

        def autocast():
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=setup.autocast)

        def step_loss(batch_examples):
            loss, value, _ = micro_batch_loss(
                step_model,
                batch_examples,
                world=World(),
                setup=setup,
                pad_token_id=0,
                device=device,
                autocast=autocast,
            )
            return loss, value
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            spec["base"],
            local_files_only=True,
            dtype=torch.bfloat16 if cuda else torch.float32,
            attn_implementation="sdpa",
        ).to(device)
        model.config.use_cache = False
        torch.manual_seed(0)
        model = get_peft_model(model, lora_config)
        setup_record = {"dtype": str(next(model.parameters()).dtype), "attention": "sdpa", "padded": True}

        def step_loss(batch_examples):
            batch = {key: value.to(device) for key, value in collate(batch_examples, pad_token_id=0).items()}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_enabled):
                loss = model(**batch).loss
            return loss, loss.item()

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=LEARNING_RATE)
    model.train()
    losses, times, real, computed = [], [], 0, 0
    warmup = spec["warmup_steps"]
    batch_size = spec["batch_size"]
    for step in range(spec["steps"]):
        batch_examples = examples[step * batch_size : (step + 1) * batch_size]
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        loss, value = step_loss(batch_examples)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if not math.isfinite(value):
            raise RuntimeError(f"the loss became {value} at step {step + 1}")
        losses.append(round(value, 5))
        if step >= warmup:
            times.append(elapsed)
            real += sum(len(e.input_ids) for e in batch_examples)
            computed += len(batch_examples) * max(len(e.input_ids) for e in batch_examples)
    seconds = sum(times)
    peak, kind = _peak_memory(torch, device)
    timed_records = records[warmup * batch_size : spec["steps"] * batch_size]
    peak_flops = next((v for k, v in PEAK_BF16_FLOPS.items() if cuda and k in torch.cuda.get_device_name(0)), None)
    mfu = None
    if peak_flops:
        mfu = round(flops_per_step(spec["shape"], timed_records) / seconds / peak_flops, 4)
    return {
        "ok": True,
        "error": None,
        "steps": spec["steps"],
        "timed_steps": len(times),
        "real_tokens_per_second": round(real / seconds, 1),
        # What a padded batch computes (rows × longest record): the baseline's own count, for reference.
        "computed_tokens_per_second": round(computed / seconds, 1),
        "seconds": round(seconds, 3),
        "peak_memory_mib": peak,
        "peak_memory_kind": kind,
        "mfu": mfu,
        "first_loss": losses[0],
        "final_loss": losses[-1],
        "losses": losses,
        "setup": setup_record,
    }


def _build_base(spec: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cuda = torch.cuda.is_available()
    started = time.monotonic()
    config = LlamaConfig(**spec["shape"], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
    model.save_pretrained(spec["base"])
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(time.monotonic() - started, 1),
    }


def _result_of(spec: dict) -> dict:
    import warnings

    # Libraries' notices about their own future APIs and loading progress bars say nothing about the figures.
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import transformers

    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    try:
        return _build_base(spec) if spec["action"] == "build" else _run(spec)
    except Exception as exc:  # reported in the JSON: one failed run must not hide the others' figures
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"ok": False, "error": f"{type(exc).__name__}: {first_line}"}


def _child(spec_json: str) -> int:
    print("RESULT " + json.dumps(_result_of(json.loads(spec_json))))
    return 0


# ---------------------------------------------------------------- the whole check (parent process)


def _forked(spec: dict, connection) -> None:
    connection.send(_result_of(spec))
    connection.close()


def _spawn(spec: dict) -> dict:
    """One run in a process of its own: a fresh interpreter on a GPU (CUDA cannot be forked, and Liger patches
    transformers' classes for the whole process); a fork of this one on the CPU, which has imported the
    libraries already (the tiny check then takes seconds, not a minute of imports)."""
    if spec.get("cpu"):
        import multiprocessing

        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_forked, args=(spec, sender))
        process.start()
        sender.close()
        if not receiver.poll(CHILD_TIMEOUT_S):
            process.kill()
            process.join()
            return {"ok": False, "error": f"timed out after {CHILD_TIMEOUT_S} s"}
        try:
            result = receiver.recv()
        except EOFError:
            result = None
        process.join()
        return result or {"ok": False, "error": f"the run process exited {process.exitcode} without a result"}
    # Keep what PYTHONPATH already holds: on the GPU machine it names the carried wheels (liger, bitsandbytes).
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        completed = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {CHILD_TIMEOUT_S} s"}
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = " | ".join((completed.stdout + completed.stderr).strip().splitlines()[-4:])
    return {"ok": False, "error": f"exited {completed.returncode}: {tail}"}


def _failed_run(error: str) -> dict:
    return {key: None for key in RUN_KEYS} | {"ok": False, "error": error}


def _complete(run: dict) -> dict:
    return {key: run.get(key) for key in RUN_KEYS}


def _ratio(a, b, digits=2):
    return round(a / b, digits) if a and b else None


def _versions() -> dict:
    versions = {}
    for name in ("torch", "transformers", "peft", "liger-kernel", "bitsandbytes", "flash-attn"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _save(report: dict, path: Path | None, started: float) -> None:
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    if path:
        path.write_text(json.dumps(report) + "\n")
    last = report["shapes"][-1] if report["shapes"] else None
    if last:  # progress on stderr: stdout stays one JSON object
        ratio = last["real_tokens_per_second_ratio"]
        print(
            f"[{report['wall_seconds']} s] {last['shape']}, {last['data']}: ratio {ratio}", file=sys.stderr, flush=True
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-cpu", action="store_true", help="run the whole check on tiny shapes on the CPU")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 18 GPU, 4 CPU)")
    parser.add_argument(
        "--kernels", choices=["auto", "torch", "liger"], default="auto", help="lora-sft's kernels option"
    )
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="records per step (8; 4 if the padded 3B baseline runs out)"
    )
    parser.add_argument(
        "--out", type=Path, help="also write the JSON here, rewritten after every run (a cut-off run keeps its figures)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child)

    missing = [name for name in ("torch", "transformers", "peft") if importlib.util.find_spec(name) is None]
    if missing:
        print(
            json.dumps(
                {"skipped": True, "reason": f"the training extra is not installed (missing: {', '.join(missing)})"}
            )
        )
        return 0
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(
            json.dumps({"skipped": True, "reason": "no CUDA device; --allow-cpu runs the whole check on tiny shapes"})
        )
        return 0
    if not cuda:
        # Imported once here; every run forks from this process (see _spawn).
        os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
        torch.set_num_threads(1)
        import peft  # noqa: F401
        import transformers  # noqa: F401

        from trainers.lora_sft import modeling, steps  # noqa: F401
    shapes = SHAPES if cuda else CPU_SHAPES
    steps = args.steps or (18 if cuda else 4)
    warmup = 3 if cuda else 1
    started = time.monotonic()
    report = {
        "skipped": False,
        "ok": True,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "versions": _versions(),
        "batch_size": args.batch_size,
        "lora": {**LORA, "target_modules": TARGET_MODULES},
        "learning_rate": LEARNING_RATE,
        "steps": steps,
        "warmup_steps_not_timed": warmup,
        "mfu_definition": MFU_DEFINITION,
        "shapes": [],
        "qlora": None,
        "wall_seconds": None,
    }
    with tempfile.TemporaryDirectory(prefix="gpu-lora-check-") as tmp:
        work = Path(tmp)
        count = steps * args.batch_size
        datasets = {}
        for name, full_length in (("spread 64-2048", None), ("full length 1024", 1024)):
            records = synthetic_records(
                count, vocab=min(s["vocab_size"] for s in shapes.values()), seed=0, full_length=full_length
            )
            if not cuda:
                records = cpu_scaled(records, 16)
            path = work / f"data-{len(datasets)}.json"
            path.write_text(json.dumps(records))
            datasets[name] = (path, records)
        plan = [
            ("llama-3.2-1b", "spread 64-2048"),
            ("llama-3.2-3b", "spread 64-2048"),
            ("llama-3.2-1b", "full length 1024"),
        ]
        bases = {}
        for shape_name in ("llama-3.2-1b", "llama-3.2-3b"):
            base = work / shape_name
            bases[shape_name] = (base, _spawn({"action": "build", "shape": shapes[shape_name], "base": str(base)}))
        for shape_name, data_name in plan:
            base, built = bases[shape_name]
            path, records = datasets[data_name]
            runs = {}
            for trainer in ("plain_peft", "lora_sft"):
                if not built.get("ok", True):
                    runs[trainer] = _failed_run(f"the base was not built: {built.get('error')}")
                    continue
                spec = {
                    "action": "run",
                    "trainer": trainer,
                    "kernels": args.kernels,
                    "shape": shapes[shape_name],
                    "base": str(base),
                    "data": str(path),
                    "steps": steps,
                    "warmup_steps": warmup,
                    "batch_size": args.batch_size,
                    "cpu": not cuda,
                }
                runs[trainer] = _complete(_spawn(spec))
            ours, plain = runs["lora_sft"], runs["plain_peft"]
            report["shapes"].append(
                {
                    "shape": shape_name,
                    "data": data_name,
                    "parameters": built.get("parameters"),
                    "record_tokens": sum(len(r["input_ids"]) for r in records),
                    "lora_sft": ours,
                    "plain_peft": plain,
                    "real_tokens_per_second_ratio": _ratio(
                        ours["real_tokens_per_second"], plain["real_tokens_per_second"]
                    ),
                    "peak_memory_ratio": _ratio(ours["peak_memory_mib"], plain["peak_memory_mib"]),
                    "final_loss_difference": (
                        round(ours["final_loss"] - plain["final_loss"], 4)
                        if ours["final_loss"] is not None and plain["final_loss"] is not None
                        else None
                    ),
                }
            )
            report["ok"] = report["ok"] and bool(ours["ok"] and plain["ok"])
            _save(report, args.out, started)
        # QLoRA at 3B beside lora-sft's bf16 run of the same records.
        base, built = bases["llama-3.2-3b"]
        path, _ = datasets["spread 64-2048"]
        if not cuda:
            qlora = _failed_run("quantization nf4 needs a CUDA GPU (bitsandbytes): not run on the CPU")
        elif importlib.util.find_spec("bitsandbytes") is None:
            qlora = _failed_run("bitsandbytes is not installed on this machine")
        else:
            qlora = _complete(
                _spawn(
                    {
                        "action": "run",
                        "trainer": "lora_sft",
                        "kernels": args.kernels,
                        "quantization": "nf4",
                        "shape": shapes["llama-3.2-3b"],
                        "base": str(base),
                        "data": str(path),
                        "steps": steps,
                        "warmup_steps": warmup,
                        "batch_size": args.batch_size,
                    }
                )
            )
        bf16 = report["shapes"][1]["lora_sft"]
        report["qlora"] = {
            "shape": "llama-3.2-3b",
            "data": "spread 64-2048",
            "nf4": qlora,
            "bf16": {key: bf16[key] for key in ("real_tokens_per_second", "peak_memory_mib", "final_loss")},
            "real_tokens_per_second_ratio": _ratio(qlora["real_tokens_per_second"], bf16["real_tokens_per_second"]),
            "peak_memory_ratio": _ratio(qlora["peak_memory_mib"], bf16["peak_memory_mib"]),
        }
    _save(report, args.out, started)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
