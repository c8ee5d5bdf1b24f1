"""Inference backends: the local engine batched vs one request at a time, and the HTTP backends' overhead.

1. Local engine on the demo base (built here, nothing downloaded), CPU: 64 clause prompts answered greedily
   (24 new tokens each) in batches of 16 vs one at a time (batch size 1, the same engine and code path).
   The answers must be identical token for token; the figure is the examples/s ratio (target >= 4x).
2. The OpenAI-compatible backend against the test server answering in a fixed 50 ms, at concurrency 8 and
   32: wall time vs the ideal requests x 50 ms / concurrency (target <= 1.15x). The server runs in its own
   process so it does not compete with the client for the GIL. The Ollama backend at 8 for comparison.

Prints one JSON object.
"""

import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LOCAL_EXAMPLES = 64
LOCAL_BATCH = 16
NEW_TOKENS = 24
LATENCY = 0.050
HTTP_SECONDS_IDEAL = 4.0  # requests per run = this x concurrency / latency


def local_figures() -> dict:
    import torch

    from inference.local import LocalEngine, LocalModelRef
    from trainers.demo_base import CLASSIFY_INSTRUCTION, build_demo_base, corpus_from_files, synthetic_clause_records

    sample = ROOT / "samples" / "contracts" / "train.jsonl"
    # One thread, as in the trainer runs: on busy shared cores OpenMP's spinning threads make a small model
    # many times slower, and the ratio would measure the neighbours.
    torch.set_num_threads(int(os.environ.get("BENCH_TORCH_THREADS", "1")))
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        texts = corpus_from_files([sample]) if sample.exists() else None
        base = build_demo_base(Path(folder) / "demo-base", texts=texts, seed=0)
        ref = LocalModelRef(str(base))
        records = synthetic_clause_records(LOCAL_EXAMPLES, seed=7)
        prompts = [
            [{"role": "system", "content": CLASSIFY_INSTRUCTION}, {"role": "user", "content": record["input"]}]
            for record in records
        ]
        batched_engine = LocalEngine(device="cpu", batch_size=LOCAL_BATCH)
        single_engine = LocalEngine(device="cpu", batch_size=1)
        batched_engine.generate(ref, prompts[:2], max_new_tokens=4)  # load and warm up both
        single_engine.generate(ref, prompts[:2], max_new_tokens=4)
        batched_times, single_times = [], []
        for _ in range(3):
            started = time.perf_counter()
            batched = batched_engine.generate(ref, prompts, max_new_tokens=NEW_TOKENS)
            batched_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            single = single_engine.generate(ref, prompts, max_new_tokens=NEW_TOKENS)
            single_times.append(time.perf_counter() - started)
    same = [a.token_ids for a in batched] == [b.token_ids for b in single]
    batched_s, single_s = statistics.median(batched_times), statistics.median(single_times)
    return {
        "examples": LOCAL_EXAMPLES,
        "batch_size": LOCAL_BATCH,
        "new_tokens": NEW_TOKENS,
        "torch_threads": threads,
        "batched_s": round(batched_s, 3),
        "one_at_a_time_s": round(single_s, 3),
        "batched_examples_per_s": round(LOCAL_EXAMPLES / batched_s, 1),
        "one_at_a_time_examples_per_s": round(LOCAL_EXAMPLES / single_s, 1),
        "ratio": round(single_s / batched_s, 2),
        "target_ratio": 4.0,
        "same_outputs": same,
    }


def serve(kind: str, latency: float, queue, stop) -> None:
    if kind == "openai":
        from tests.support.openai_server import OpenAIServer as Server
    else:
        from tests.support.ollama_server import OllamaServer as Server
    with Server(latency=latency) as server:
        server.add_model("tuned", answer=lambda model, prompt: "positive" if "good" in prompt else "negative")
        queue.put(server.url)
        stop.wait()


def http_figures(kind: str, concurrency: int) -> dict:
    from inference.base import ChatRequest
    from inference.ollama_backend import OllamaBackend
    from inference.openai import OpenAIBackend

    requests = round(HTTP_SECONDS_IDEAL * concurrency / LATENCY)
    queue, stop = multiprocessing.Queue(), multiprocessing.Event()
    process = multiprocessing.Process(target=serve, args=(kind, LATENCY, queue, stop), daemon=True)
    process.start()
    try:
        url = queue.get(timeout=30)
        cls = OpenAIBackend if kind == "openai" else OllamaBackend
        backend = cls(endpoint="bench", url=url, concurrency=concurrency, timeout=30)
        texts = [f"clause {i} is {'good' if i % 2 else 'bad'}" for i in range(requests)]
        asks = [ChatRequest.from_prompt("tuned", text) for text in texts]
        list(backend.chat_many(asks[:concurrency]))  # connections opened before the clock starts
        started = time.perf_counter()
        outcomes = list(backend.chat_many(asks))
        wall = time.perf_counter() - started
        backend.close()
    finally:
        stop.set()
        process.join(timeout=10)
    errors = sum(1 for outcome in outcomes if outcome.error is not None)
    correct = sum(
        1
        for outcome in outcomes
        if outcome.answer and outcome.answer.content == ("positive" if outcome.index % 2 else "negative")
    )
    ideal = requests * LATENCY / concurrency
    return {
        "backend": kind,
        "concurrency": concurrency,
        "requests": requests,
        "latency_ms": LATENCY * 1000,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "wall_vs_ideal": round(wall / ideal, 3),
        "target_wall_vs_ideal": 1.15,
        "errors": errors,
        "correct_answers": correct,
    }


def main() -> None:
    figures = {
        "local_engine_cpu": local_figures(),
        "http": [http_figures("openai", 8), http_figures("openai", 32), http_figures("ollama", 8)],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
