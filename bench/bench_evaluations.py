"""Evaluation engine throughput against the Ollama and OpenAI-compatible test servers (loopback only).

1,000 examples × 2 candidates with the server answering in a fixed 50 ms: wall time
vs the ideal 2,000 × 50 ms ÷ concurrency (target ≤ 1.15×), through the inference backends the
evaluations use (Ollama at concurrency 8; the OpenAI-compatible server at 8 and 32). Then the same run with
0 ms answers gives the engine's own cost per example (target < 5 ms; it still includes
HTTP on loopback and the server's work, so it is an upper bound). The server runs in its
own process so it does not compete with the engine for the GIL. Prints one JSON object.
"""

import json
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXAMPLES = 1000
LATENCY = 0.050
CONCURRENCY = 8
LABELS = ["positive", "negative", "neutral"]


def records():
    from finetune_studio.records import Record

    return [
        Record(text=f"Example {i}: clause number {i} of the contract.", label=LABELS[i % 3]) for i in range(EXAMPLES)
    ]


def serve(latency: float, queue, stop, kind: str = "ollama") -> None:
    from tests.support.ollama_server import OllamaServer
    from tests.support.openai_server import OpenAIServer

    # The text carries its number: a dictionary lookup keeps the server's cost per request flat.
    by_number = {record.text.split(":")[0]: record.label for record in records()}

    def fine_tuned(model, prompt):
        marker = prompt.rfind("Example ")
        return by_number.get(prompt[marker:].split(":")[0], "neutral")

    with (OllamaServer if kind == "ollama" else OpenAIServer)(latency=latency) as server:
        server.add_model("base", answer="neutral")
        server.add_model("tuned", answer=fine_tuned)
        queue.put(server.url)
        stop.wait()


def run(latency: float, concurrency: int, kind: str = "ollama") -> dict:
    from evaluations import engine
    from inference.ollama_backend import OllamaBackend
    from inference.openai import OpenAIBackend

    queue, stop = multiprocessing.Queue(), multiprocessing.Event()
    process = multiprocessing.Process(target=serve, args=(latency, queue, stop, kind), daemon=True)
    process.start()
    try:
        url = queue.get(timeout=30)
        config = engine.EvaluationConfig(concurrency=concurrency, timeout=30)
        examples, labels = engine.prepare_examples(records(), config)
        backend_class = OllamaBackend if kind == "ollama" else OpenAIBackend
        backend = backend_class(endpoint=kind, url=url, concurrency=concurrency, timeout=30)
        candidates = [engine.Candidate(name=name, backend=backend) for name in ("base", "tuned")]
        store = engine.MemoryStore()
        started = time.perf_counter()
        engine.run_evaluation(records=examples, candidates=candidates, labels=labels, config=config, store=store)
        wall = time.perf_counter() - started
        backend.close()
    finally:
        stop.set()
        process.join(timeout=10)
    assert len(store.predictions) == 2 * EXAMPLES
    return {"wall_s": wall, "predictions": store.predictions, "labels": labels}


def main() -> None:
    from evaluations import metrics

    timed = run(LATENCY, CONCURRENCY)
    ideal = 2 * EXAMPLES * LATENCY / CONCURRENCY
    openai = {concurrency: run(LATENCY, concurrency, "openai")["wall_s"] for concurrency in (8, 32)}
    bare = run(0.0, CONCURRENCY)
    serial = run(0.0, 1)
    started = time.perf_counter()
    results, _examples = metrics.compute_results(
        timed["predictions"], labels=timed["labels"], candidates=["base", "tuned"]
    )
    metrics_s = time.perf_counter() - started
    figures = {
        "examples": EXAMPLES,
        "candidates": 2,
        "concurrency": CONCURRENCY,
        "latency_ms": LATENCY * 1000,
        "wall_s": round(timed["wall_s"], 3),
        "ideal_s": round(ideal, 3),
        "wall_vs_ideal": round(timed["wall_s"] / ideal, 3),
        "target_wall_vs_ideal": 1.15,
        "openai_wall_vs_ideal": {
            str(concurrency): round(wall / (2 * EXAMPLES * LATENCY / concurrency), 3)
            for concurrency, wall in openai.items()
        },
        "overhead_ms_per_example_at_0ms": round(1000 * bare["wall_s"] / EXAMPLES, 3),
        "overhead_ms_per_example_at_0ms_concurrency_1": round(1000 * serial["wall_s"] / EXAMPLES, 3),
        "target_overhead_ms_per_example": 5.0,
        "metrics_s_with_2000_bootstrap_resamples": round(metrics_s, 3),
        "fine_tuned_accuracy": results["fine_tuned"]["accuracy"],
        "verdict": results["significance"]["verdict"],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
