#!/usr/bin/env python3
"""Compare a base model with fine-tuned ones through Ollama, from the command line.

The same engine and metrics as the server's evaluations (evaluations.engine,
evaluations.metrics), without the web app, a database or Django settings:

    python scripts/evaluate_model.py --test-set data/test.jsonl --base-model llama3.2:3b \\
        --finetuned-model my-model [--finetuned-model other] [--labels positive negative neutral] \\
        [--ollama-url http://localhost:11434] [--output results.json] [--concurrency 4] [--max-examples 200]

Generation (chat, instruction and prompt/completion test sets; the default for them):

    python scripts/evaluate_model.py --task generation --test-set chat.jsonl --base-model llama3.2:3b \
        --finetuned-model my-model [--json-schema schema.json] [--judge-model qwen2.5:7b \
        [--judge-endpoint http://judge-host:11434] [--judge-prompt prompt.txt] [--judge-cache judge.json]]

The judge is an Ollama server (default: --ollama-url); --judge-cache keeps its answers in a JSON file so
a re-run asks it nothing it already answered.

Exit status: 0 on success, 1 when Ollama fails (unreachable, unknown model, persistent
errors), 2 for bad arguments or an unreadable test set, 3 for a missing dependency.
It never installs packages: a missing one is reported with the command to install it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _import_engine():
    try:
        import finetune_studio.records  # noqa: F401  (the test-set reader the engine uses)
        from evaluations import engine, generation, judge, metrics
        from inference.base import InferenceError, RetryPolicy
        from inference.ollama_backend import OllamaBackend
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        sys.stderr.write(
            f"error: a required package is missing ({missing}). Install the project's dependencies with:\n"
            f"    pip install -r {ROOT / 'requirements.txt'}\n"
        )
        raise SystemExit(3) from None
    return engine, metrics, OllamaBackend, RetryPolicy, InferenceError, generation, judge


class ProgressBar:
    """A one-line progress bar on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self._last_line = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.tty and done < total and now - self._last_line < 2:
            return
        self._last_line = now
        fraction = done / total if total else 1.0
        filled = int(self.width * fraction)
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} answers {100 * fraction:5.1f}% {rate:6.1f}/s"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        if self.tty and done >= total:
            self.stream.write("\n")
        self.stream.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate fine-tuned models against their base through Ollama.")
    parser.add_argument("--test-set", required=True, help="JSON array, JSON lines or CSV (text/label records)")
    parser.add_argument("--base-model", required=True, help="the base model's name in Ollama")
    parser.add_argument(
        "--finetuned-model",
        "--fine-tuned-model",
        action="append",
        required=True,
        dest="finetuned_models",
        help="a fine-tuned model's name in Ollama (repeat to compare several)",
    )
    parser.add_argument("--labels", nargs="+", help="the label set (default: the labels found in the test set)")
    parser.add_argument("--ollama-url", default=os.environ.get("OLLAMA_URL", "http://localhost:11434"))
    parser.add_argument("--output", help="write the results, examples and every prediction to this JSON file")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-examples", type=int)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--task", choices=["classification", "generation"], help="default: the test set's (from its records)"
    )
    parser.add_argument("--json-schema", help="generation: a JSON schema file the answers must match (json_valid)")
    parser.add_argument("--judge-model", help="generation: a pairwise judge model (asked in both orders)")
    parser.add_argument("--judge-endpoint", help="the judge's Ollama URL (default: --ollama-url)")
    parser.add_argument("--judge-prompt", help="a file with the judge prompt ({question}, {answer_a}, {answer_b}…)")
    parser.add_argument("--judge-cache", help="a JSON file of the judge's answers, read and updated")
    args = parser.parse_args(argv)
    if args.task == "classification" and (args.judge_model or args.json_schema):
        parser.error("--judge-model and --json-schema are for --task generation")
    if (args.judge_endpoint or args.judge_prompt or args.judge_cache) and not args.judge_model:
        parser.error("--judge-endpoint, --judge-prompt and --judge-cache need --judge-model")
    if args.concurrency < 1 or args.concurrency > 64:
        parser.error("--concurrency must be between 1 and 64")
    if args.max_examples is not None and args.max_examples < 1:
        parser.error("--max-examples must be at least 1")
    return args


def print_summary(results: dict, stream=sys.stdout) -> None:
    rows = results.get("candidates") or {"base": results["base"], "fine_tuned": results["fine_tuned"]}
    stream.write(f"{'model':<32} {'accuracy':>9} {'macro F1':>9} {'unparseable':>12} {'p50 ms':>8}\n")
    for scores in rows.values():
        p50 = scores["latency_ms"]["p50"]
        stream.write(
            f"{scores['model'][:32]:<32} {scores['accuracy']:>9.3f} {scores['f1_macro']:>9.3f} "
            f"{scores['unparseable']:>12d} {p50 if p50 is not None else float('nan'):>8.1f}\n"
        )
    headline = results.get("headline")
    if headline:
        stream.write(
            f"Headline: {headline['model']}, the best of {len(headline['ranking'])} fine-tuned candidates "
            f"by {headline['metric']} (ties: {headline['tie_breaker']}); its comparison with the base:\n"
        )
    stream.write(results["significance"]["summary"] + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    engine, metrics, OllamaBackend, RetryPolicy, InferenceError, generation, judge = _import_engine()
    config = engine.EvaluationConfig(
        labels=args.labels or [],
        max_examples=args.max_examples,
        concurrency=args.concurrency,
        timeout=args.timeout,
        max_retries=args.retries,
    )
    try:
        all_records = engine.load_records_from_file(args.test_set)
        task = args.task or generation.records_task(all_records)
        if task == generation.GENERATION:
            return run_generation(args, all_records, config, engine, generation, judge, OllamaBackend, RetryPolicy)
        records, labels = engine.prepare_examples(all_records, config)
    except engine.EvaluationInputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        # The server's rule: a model named twice is asked once; the base is never one of the fine-tuned.
        candidates = [args.base_model, *engine.distinct_fine_tuned(args.base_model, args.finetuned_models)]
    except engine.EvaluationInputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    client = OllamaBackend(
        endpoint="ollama",
        url=args.ollama_url,
        concurrency=args.concurrency,
        timeout=args.timeout,
        retry=RetryPolicy(max_retries=args.retries),
    )
    progress = None if args.quiet else ProgressBar()
    store = engine.MemoryStore(on_progress=progress)
    try:
        engine.run_evaluation(
            records=records,
            candidates=[engine.Candidate(name=name, backend=client) for name in candidates],
            labels=labels,
            config=config,
            store=store,
        )
    except InferenceError as exc:
        sys.stderr.write(f"\nerror: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    finally:
        client.close()
    results, examples = metrics.compute_results(store.predictions, labels=labels, candidates=candidates)
    print_summary(results)
    if args.output:
        document = {
            "test_set": args.test_set,
            "ollama_url": args.ollama_url,
            "candidates": candidates,
            "config": config.to_dict(),
            "results": results,
            "examples": examples,
            "predictions": [vars(p) for p in sorted(store.predictions, key=lambda p: (p.index, p.candidate))],
        }
        Path(args.output).write_text(json.dumps(document, indent=2, ensure_ascii=False))
        sys.stderr.write(f"results written to {args.output}\n")
    return 0


def _read_json(path: str, what: str, engine):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise engine.EvaluationInputError(f"cannot read {what} {path}: {exc}") from None


def run_generation(args, all_records, config, engine, generation, judge, OllamaBackend, RetryPolicy) -> int:
    """--task generation: the server's generation run (generation.run_and_score) on in-memory stores."""
    schema = _read_json(args.json_schema, "the JSON schema", engine) if args.json_schema else None
    if schema is not None and (reason := generation.check_json_schema(schema)):
        raise engine.EvaluationInputError(f"--json-schema {reason}")
    records, _ = generation.prepare_examples(all_records, config)
    config.num_predict = generation.DEFAULT_MAX_TOKENS
    retry = RetryPolicy(max_retries=args.retries)
    client = OllamaBackend(
        endpoint="ollama", url=args.ollama_url, concurrency=args.concurrency, timeout=args.timeout, retry=retry
    )
    backends = [client]
    plan = judge_backend = None
    cache = judge.MemoryJudgeCache()
    if args.judge_model:
        prompt = judge.DEFAULT_JUDGE_PROMPT
        if args.judge_prompt:
            try:
                prompt = Path(args.judge_prompt).read_text()
            except OSError as exc:
                raise engine.EvaluationInputError(f"cannot read the judge prompt: {exc}") from None
            if reason := judge.check_prompt(prompt):
                raise engine.EvaluationInputError(f"--judge-prompt {reason}")
        url = args.judge_endpoint or args.ollama_url
        plan = judge.JudgePlan(endpoint=url, model=args.judge_model, prompt=prompt)
        judge_backend = (
            client
            if url == args.ollama_url
            else OllamaBackend(
                endpoint="judge", url=url, concurrency=args.concurrency, timeout=args.timeout, retry=retry
            )
        )
        backends.append(judge_backend)
        if args.judge_cache and Path(args.judge_cache).exists():
            stored = _read_json(args.judge_cache, "the judge cache", engine)
            cache.verdicts = {key: judge.Verdict.from_dict(value) for key, value in stored.items()}
    candidates = [args.base_model, *args.finetuned_models]
    store = engine.MemoryStore(on_progress=None if args.quiet else ProgressBar())
    try:
        results, examples = generation.run_and_score(
            records=records,
            candidates=[engine.Candidate(name=name, backend=client) for name in candidates],
            config=config,
            store=store,
            load_predictions=lambda: store.predictions,
            schema=schema,
            judge_plan=plan,
            judge_backend=judge_backend,
            judge_cache=cache,
        )
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    finally:
        for backend in {id(b): b for b in backends}.values():
            backend.close()
        if args.judge_cache and args.judge_model:
            document = {key: vars(verdict) for key, verdict in cache.verdicts.items()}
            Path(args.judge_cache).write_text(json.dumps(document, ensure_ascii=False))
    print_generation_summary(results)
    if args.output:
        document = {
            "test_set": args.test_set,
            "ollama_url": args.ollama_url,
            "task": "generation",
            "candidates": candidates,
            "config": config.to_dict(),
            "results": results,
            "examples": examples,
            "predictions": [vars(p) for p in sorted(store.predictions, key=lambda p: (p.index, p.candidate))],
        }
        Path(args.output).write_text(json.dumps(document, indent=2, ensure_ascii=False))
        sys.stderr.write(f"results written to {args.output}\n")
    return 0


def print_generation_summary(results: dict, stream=sys.stdout) -> None:
    metrics = results["metrics"]
    rows = results.get("candidates") or {"base": results["base"], "fine_tuned": results["fine_tuned"]}
    stream.write(f"{'model':<32}" + "".join(f" {metric:>12}" for metric in metrics) + "\n")
    for scores in rows.values():
        stream.write(f"{scores['model'][:32]:<32}" + "".join(f" {scores[m]:>12.3f}" for m in metrics) + "\n")
    for comparison in results["comparisons"].values():
        stream.write(comparison["summary"] + "\n")
    if "judge" in results:
        j = results["judge"]
        rate = "n/a" if j["win_rate"] is None else f"{j['win_rate']:.3f}"
        answers = 2 * j["pairs"]
        stream.write(
            f"judge {j['model']}: wins {j['wins']}, losses {j['losses']}, ties {j['ties']}, win rate {rate} "
            f"(95 % CI {j['win_rate_ci'][0]:.3f} to {j['win_rate_ci'][1]:.3f}), sign test p = {j['p_value']:.3g}; "
            f"{j['requests']} judge requests, {j['cache_hits']} from the cache; "
            f"no verdict in {j['no_verdict']} pairs ({j['no_verdict_answers']} of {answers} answers named no winner)\n"
        )
        if j["no_verdict"]:
            undecided = "the judge gave no usable verdict: " if j["no_verdict"] == j["pairs"] else ""
            stream.write(
                f"warning: {undecided}{j['no_verdict']} of the {j['ties']} ties are pairs the judge did not decide; "
                f"{j['model']} may not follow the verdict format: read its reasons in the examples (--output), "
                "or choose another judge\n"
            )


if __name__ == "__main__":
    sys.exit(main())
