"""Generation metrics and bootstrap CIs over 10,000 examples × 2 candidates (issue 16's target: under 5 s).

Synthetic answers of 0-40 words from a contract vocabulary (with accents, dashes and the euro sign); 30 % of
the fine-tuned answers equal their reference. Measures ``score_answers`` (exact match, token F1, ROUGE-L,
chrF, JSON validity) plus ``compare_scores`` (paired bootstrap, 2,000 resamples, and the minimum detectable
effect) for both candidates, and, in the same run, sacrebleu's own sentence-level chrF over the same pairs:
the ratio is what our vectorised chrF saves. Prints one JSON object; exits 1 when the target is missed.
"""

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluations import generation_metrics as gm  # noqa: E402

EXAMPLES = 10_000
TARGET_SECONDS = 5.0
VOCABULARY = (
    "the supplier shall pay each invoice within thirty days of receipt governed by the laws of "
    "state agreement party naïve Ünïcode € — terminate notice confidential clause"
)
WORDS = VOCABULARY.split(" ")


def synthetic(seed: int = 0):
    rng = random.Random(seed)
    references = [" ".join(rng.choices(WORDS, k=rng.randint(1, 40))) for _ in range(EXAMPLES)]
    base = [" ".join(rng.choices(WORDS, k=rng.randint(0, 40))) for _ in range(EXAMPLES)]
    tuned = [ref if rng.random() < 0.3 else " ".join(rng.choices(WORDS, k=rng.randint(0, 40))) for ref in references]
    return references, {"base": base, "fine_tuned": tuned}


def main() -> int:
    references, answers = synthetic()
    started = time.perf_counter()
    scores = gm.score_answers(answers, references, schema={"type": "string"})
    scored = time.perf_counter()
    comparison = gm.compare_scores(scores["base"], scores["fine_tuned"])
    finished = time.perf_counter()

    from sacrebleu.metrics import CHRF

    library = CHRF()
    sample = 2_000  # sacrebleu's loop, timed on a fifth of the pairs and scaled
    library_started = time.perf_counter()
    for name in answers:
        for prediction, reference in zip(answers[name][:sample], references[:sample], strict=True):
            library.sentence_score(prediction, [reference])
    library_seconds = (time.perf_counter() - library_started) * EXAMPLES / sample
    ours_started = time.perf_counter()
    for name in answers:
        gm.chrf_scores(answers[name], references)
    ours_seconds = time.perf_counter() - ours_started

    total = finished - started
    result = {
        "benchmark": "generation_metrics",
        "examples": EXAMPLES,
        "candidates": len(answers),
        "metrics": [*gm.GENERATION_METRICS, gm.JSON_METRIC],
        "score_seconds": round(scored - started, 3),
        "bootstrap_seconds": round(finished - scored, 3),
        "total_seconds": round(total, 3),
        "target_seconds": TARGET_SECONDS,
        "chrf_seconds_ours": round(ours_seconds, 3),
        "chrf_seconds_sacrebleu_sentence_loop": round(library_seconds, 3),
        "chrf_speedup": round(library_seconds / ours_seconds, 1),
        "exact_match_delta": comparison["exact_match"]["delta"],
        "meets_target": total < TARGET_SECONDS,
    }
    print(json.dumps(result))
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
