"""GPU check of the local inference engine: batched greedy tokens/s vs one request at a time on a ~1B base.

Builds a Llama-architecture base (hidden 2048, 16 layers, 16 heads, intermediate 8192: ≈ 1.1B parameters;
random weights, tokenizer trained here, nothing downloaded), loads it in the local engine (bfloat16 on a GPU
that supports it) and answers 64 clause prompts with 64 new tokens each: in batches of 32, then one at a time
(batch size 1, the same code path). Prints ONE JSON object: tokens/s of each, the ratio, how many answers
agree token for token (bfloat16 sums in a different order when padded, so a few may differ), peak GPU memory.
Without CUDA it prints {"skipped": true, ...}; ``--allow-cpu`` runs a tiny version to check the script itself.

    .venv/bin/python bench/gpu_inference_check.py              # on a machine with a GPU; about 2-3 minutes
    .venv/bin/python bench/gpu_inference_check.py --allow-cpu

Not part of ``make bench`` (named gpu_*, not bench_*) and never required by CI.
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GPU_SHAPE = {"hidden_size": 2048, "num_layers": 16, "num_heads": 16, "intermediate_size": 8192, "vocab_size": 4096}
CPU_SHAPE = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "vocab_size": 512}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    if importlib.util.find_spec("torch") is None:
        print(json.dumps({"skipped": True, "reason": "torch is not installed (requirements-train.txt)"}))
        return 0
    import torch

    from inference.local import LocalEngine, LocalModelRef
    from trainers.demo_base import CLASSIFY_INSTRUCTION, build_demo_base, synthetic_clause_records

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(json.dumps({"skipped": True, "reason": "no CUDA device"}))
        return 0
    shape = GPU_SHAPE if cuda else CPU_SHAPE
    device = "cuda" if cuda else "cpu"
    figures: dict = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "shape": shape}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        base = build_demo_base(Path(folder) / "base", seed=0, max_position_embeddings=2048, **shape)
        figures["build_s"] = round(time.perf_counter() - started, 1)
        ref = LocalModelRef(str(base))
        records = synthetic_clause_records(args.prompts, seed=7, clauses_per_record=2)
        prompts = [
            [{"role": "system", "content": CLASSIFY_INSTRUCTION}, {"role": "user", "content": record["input"]}]
            for record in records
        ]
        batched_engine = LocalEngine(device=device, batch_size=args.batch_size, max_bytes=64 * 2**30)
        started = time.perf_counter()
        loaded = batched_engine.load(ref)
        figures["load_s"] = round(time.perf_counter() - started, 1)
        figures["parameters"] = sum(p.numel() for p in loaded.model.parameters())
        figures["dtype"] = str(next(loaded.model.parameters()).dtype)
        single_engine = LocalEngine(device=device, batch_size=1, max_bytes=64 * 2**30)
        single_engine.cache = batched_engine.cache  # the same loaded weights
        batched_engine.generate(ref, prompts[:4], max_new_tokens=4)  # kernels warmed up
        single_engine.generate(ref, prompts[:1], max_new_tokens=4)

        def timed(engine):
            if cuda:
                torch.cuda.synchronize()
            began = time.perf_counter()
            answers = engine.generate(ref, prompts, max_new_tokens=args.new_tokens)
            if cuda:
                torch.cuda.synchronize()
            return answers, time.perf_counter() - began

        if cuda:
            torch.cuda.reset_peak_memory_stats()
        batched, batched_s = timed(batched_engine)
        single, single_s = timed(single_engine)
    batched_tokens = sum(len(answer.token_ids) for answer in batched)
    single_tokens = sum(len(answer.token_ids) for answer in single)
    figures.update(
        prompts=args.prompts,
        new_tokens=args.new_tokens,
        batch_size=args.batch_size,
        batched_s=round(batched_s, 3),
        one_at_a_time_s=round(single_s, 3),
        batched_tokens_per_s=round(batched_tokens / batched_s, 1),
        one_at_a_time_tokens_per_s=round(single_tokens / single_s, 1),
        ratio=round((batched_tokens / batched_s) / (single_tokens / single_s), 2),
        answers_identical=sum(a.token_ids == b.token_ids for a, b in zip(batched, single, strict=True)),
    )
    if cuda:
        figures["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
