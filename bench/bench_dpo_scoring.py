"""lora-dpo's scoring of answers: from the full logits, or from the hidden states of the answer positions only.

DPO needs each answer's summed log-probability, with gradients. Scored from the model's full logits, every
position of every sequence — mostly prompt, which DPO does not score — is projected onto the vocabulary and kept
in float32 until the backward pass (twice: logits and their log-softmax). ``trainers.lora_sft.losses.
chunked_sequence_logps`` projects only the scored positions, a chunk at a time, and keeps no logits.

A generated Llama-shaped model (random weights, nothing downloaded) with a realistic vocabulary, LoRA on q/v,
and a batch of preference pairs whose prompts are much longer than their answers, as in real preference data.
Each variant runs in a process of its own (its peak RSS is its own): the same model and batch (same seed), a few
steps of forward + backward of a DPO-weighted objective. Prints ONE JSON object: per variant the peak memory the
step added over the loaded model (MiB, RSS high-water mark), the seconds per step, and the ratios; the two
variants' log-probabilities must agree.

    python3 bench/bench_dpo_scoring.py

Sizes: BENCH_DPO_VOCAB (32000), BENCH_DPO_HIDDEN (512), BENCH_DPO_LAYERS (2), BENCH_DPO_PAIRS (8),
BENCH_DPO_PROMPT (384 tokens), BENCH_DPO_ANSWER (32 tokens), BENCH_DPO_STEPS (3).
"""

import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "vocab": int(os.environ.get("BENCH_DPO_VOCAB", "32000")),
    "hidden": int(os.environ.get("BENCH_DPO_HIDDEN", "512")),
    "layers": int(os.environ.get("BENCH_DPO_LAYERS", "2")),
    "pairs": int(os.environ.get("BENCH_DPO_PAIRS", "8")),
    "prompt": int(os.environ.get("BENCH_DPO_PROMPT", "384")),
    "answer": int(os.environ.get("BENCH_DPO_ANSWER", "32")),
    "steps": int(os.environ.get("BENCH_DPO_STEPS", "3")),
}


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(variant: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainers.lora_dpo.train import sequence_logps
    from trainers.lora_sft.chat import IGNORE_INDEX, Example

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = LlamaConfig(
        vocab_size=SIZES["vocab"],
        hidden_size=SIZES["hidden"],
        intermediate_size=SIZES["hidden"] * 2,
        num_hidden_layers=SIZES["layers"],
        num_attention_heads=8,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    model = get_peft_model(
        LlamaForCausalLM(config), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    model.train()
    generator = torch.Generator().manual_seed(1)

    def example() -> Example:
        ids = torch.randint(3, SIZES["vocab"], (SIZES["prompt"] + SIZES["answer"],), generator=generator).tolist()
        return Example(input_ids=ids, labels=[IGNORE_INDEX] * SIZES["prompt"] + ids[SIZES["prompt"] :])

    examples = [example() for _ in range(2 * SIZES["pairs"])]
    weights = torch.linspace(-1.0, 1.0, len(examples))
    figures = {"pad_token_id": 0, "device": "cpu", "autocast": contextlib.nullcontext}
    before = _rss_mib()
    seconds, logps = [], None
    for _ in range(SIZES["steps"]):
        started = time.perf_counter()
        model.zero_grad(set_to_none=True)
        logps = sequence_logps(model, examples, fused=variant == "chunked", **figures)
        (logps * weights).sum().backward()
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "peak_step_memory_mib": round(peak - before, 1),
        "seconds_per_step": round(sorted(seconds)[len(seconds) // 2], 4),
        "logps": [round(float(value), 4) for value in logps.detach()],
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--variant":
        print(json.dumps(child(sys.argv[2])))
        return
    runs = {}
    for variant in ("full_logits", "chunked"):
        done = subprocess.run(
            [sys.executable, __file__, "--variant", variant],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
        runs[variant] = json.loads(done.stdout)
    full, chunked = runs["full_logits"], runs["chunked"]
    agree = max(abs(a - b) for a, b in zip(full.pop("logps"), chunked.pop("logps"), strict=True))
    print(
        json.dumps(
            {
                "benchmark": "dpo_scoring",
                "sizes": SIZES,
                "full_logits": full,
                "chunked": chunked,
                "peak_step_memory_ratio": round(chunked["peak_step_memory_mib"] / full["peak_step_memory_mib"], 3),
                "speedup": round(full["seconds_per_step"] / chunked["seconds_per_step"], 2),
                "logps_max_abs_difference": round(agree, 5),
                "target": {"peak_step_memory_ratio": "< 0.5", "logps_max_abs_difference": "< 0.01"},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
