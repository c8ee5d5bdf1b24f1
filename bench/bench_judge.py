"""The pairwise judge's cost: requests per example on a first run and the cache hit rate on a re-run.

A real HTTP judge (the Ollama test server with a judge that picks the answer equal to the reference) over
PAIRS synthetic pairs, through ``evaluations.judge.run`` with an in-memory cache (the database cache has the
same contract): the first run asks each pair in both orders (2 requests per example, fewer where both
answers are the same text), the re-run must ask nothing (target: 100 % cache hits). Also states what
scoring costs per answer: one by one, in the run's batches (``generation.ScoringStore``) and all at once.
Prints one JSON object; exits 1 when the re-run hit rate is under 100 %.
"""

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAIRS = 400
CONCURRENCY = 8


def main() -> int:
    from evaluations import generation, judge
    from evaluations import generation_metrics as gm
    from inference.base import RetryPolicy
    from inference.ollama_backend import OllamaBackend
    from tests.support.ollama_server import OllamaServer, reference_judge

    rng = random.Random(7)
    words = [
        "the",
        "supplier",
        "shall",
        "pay",
        "each",
        "invoice",
        "within",
        "thirty",
        "days",
        "of",
        "receipt",
        "notice",
        "clause",
    ]
    pairs = []
    for index in range(PAIRS):
        reference = " ".join(rng.choices(words, k=rng.randint(3, 15)))
        wrong = " ".join(rng.choices(words, k=rng.randint(3, 15)))
        tuned = reference if rng.random() < 0.6 else wrong
        base = wrong if rng.random() < 0.7 else reference
        pairs.append(
            {
                "index": index,
                "question": f"Q{index}",
                "reference": reference,
                "base_answer": base,
                "fine_tuned_answer": tuned,
            }
        )
    with OllamaServer() as server:
        server.add_model("judge", answer=reference_judge())
        backend = OllamaBackend(
            endpoint="ollama", url=server.url, concurrency=CONCURRENCY, timeout=30, retry=RetryPolicy(max_retries=1)
        )
        plan = judge.JudgePlan(endpoint="ollama", model="judge")
        cache = judge.MemoryJudgeCache()
        try:
            started = time.perf_counter()
            first = judge.run(plan=plan, backend=backend, cache=cache, pairs=pairs)["summary"]
            first_seconds = time.perf_counter() - started
            served = len(server.chat_requests(model="judge"))
            started = time.perf_counter()
            second = judge.run(plan=plan, backend=backend, cache=cache, pairs=pairs)["summary"]
            second_seconds = time.perf_counter() - started
            served_again = len(server.chat_requests(model="judge")) - served
        finally:
            backend.close()

    references = [pair["reference"] for pair in pairs]
    answers = [pair["fine_tuned_answer"] for pair in pairs]
    started = time.perf_counter()
    for answer, reference in zip(answers, references, strict=True):
        generation.score_one(answer, reference, schema=None)
    one_by_one = time.perf_counter() - started
    started = time.perf_counter()
    gm.score_answers({"a": answers}, references)
    at_once = time.perf_counter() - started
    # What a run does: the engine hands its store batches (here 50 answers) and ScoringStore scores each at once.
    from evaluations.engine import MemoryStore, Prediction

    scoring = generation.ScoringStore(MemoryStore(), schema=None)
    batch = [
        Prediction(index=i, candidate="c", expected=r, input_text="", prediction_text=a)
        for i, (a, r) in enumerate(zip(answers, references, strict=True))
    ]
    started = time.perf_counter()
    for start in range(0, len(batch), 50):
        scoring.save(batch[start : start + 50], done=start, total=len(batch))
    in_batches = time.perf_counter() - started

    result = {
        "pairs": PAIRS,
        "first_run": {
            "requests": first["requests"],
            "requests_per_example": first["requests_per_example"],
            "served_by_judge": served,
            "seconds": round(first_seconds, 3),
            "wins": first["wins"],
            "losses": first["losses"],
            "ties": first["ties"],
        },
        "re_run": {
            "requests": second["requests"],
            "served_by_judge": served_again,
            "cache_hits": second["cache_hits"],
            "cache_hit_rate": second["cache_hit_rate"],
            "seconds": round(second_seconds, 3),
            "same_outcome": (first["wins"], first["losses"], first["ties"])
            == (second["wins"], second["losses"], second["ties"]),
        },
        "scoring_us_per_answer": {
            "one_by_one": round(1e6 * one_by_one / PAIRS, 1),
            "run_batches_of_50": round(1e6 * in_batches / PAIRS, 1),
            "whole_set": round(1e6 * at_once / PAIRS, 1),
        },
        "target_cache_hit_rate": 1.0,
    }
    print(json.dumps(result, indent=2))
    return 0 if second["cache_hit_rate"] == 1.0 and served_again == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
