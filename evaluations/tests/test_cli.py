"""scripts/evaluate_model.py end to end, as a subprocess against the Ollama test server."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ollama_server import OllamaServer, answer_from_mapping

from .conftest import sample_records

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "evaluate_model.py"


def run_cli(*args, env=None):
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO", "PYTEST"))}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, env=environment, cwd="/"
    )


@pytest.fixture
def ollama():
    with OllamaServer() as server:
        server.add_model("llama3.2:3b", answer="neutral")
        mapping = {r["text"]: r["label"] for r in sample_records(30)}
        server.add_model("contracts-ft", answer=answer_from_mapping(mapping))
        server.add_model("contracts-ft-v2", answer="positive")
        yield server


@pytest.fixture
def test_set(tmp_path):
    path = tmp_path / "test.csv"
    lines = ["text,label", *(f'"{r["text"]}",{r["label"]}' for r in sample_records(30))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_cli_evaluates_and_writes_the_same_results_as_the_server(ollama, test_set, tmp_path):
    output = tmp_path / "results.json"
    result = run_cli(
        "--test-set",
        str(test_set),
        "--base-model",
        "llama3.2:3b",
        "--finetuned-model",
        "contracts-ft",
        "--ollama-url",
        ollama.url,
        "--output",
        str(output),
        "--concurrency",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert "60/60 answers" in result.stderr  # the progress bar
    assert "Significant improvement" in result.stdout
    document = json.loads(output.read_text())
    assert document["results"]["fine_tuned"]["accuracy"] == 1.0
    assert document["results"]["base"]["accuracy"] == pytest.approx(10 / 30, abs=1e-6)
    assert len(document["predictions"]) == 60 and len(document["examples"]) == 20
    assert len(ollama.chat_requests()) == 60


def test_the_cli_compares_several_fine_tuned_models_with_given_labels(ollama, test_set, tmp_path):
    output = tmp_path / "results.json"
    result = run_cli(
        "--test-set",
        str(test_set),
        "--base-model",
        "llama3.2:3b",
        "--finetuned-model",
        "contracts-ft",
        "--finetuned-model",
        "contracts-ft-v2",
        "--labels",
        "positive",
        "negative",
        "neutral",
        "--ollama-url",
        ollama.url,
        "--output",
        str(output),
        "--max-examples",
        "9",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(output.read_text())["results"]
    assert set(results["candidates"]) == {"llama3.2:3b", "contracts-ft", "contracts-ft-v2"}
    assert results["labels"] == ["positive", "negative", "neutral"]
    assert results["examples_evaluated"] == 9


def test_the_cli_exits_non_zero_with_a_clear_message_for_a_missing_model(ollama, test_set):
    result = run_cli(
        "--test-set",
        str(test_set),
        "--base-model",
        "llama3.2:3b",
        "--finetuned-model",
        "nope",
        "--ollama-url",
        ollama.url,
        "--quiet",
    )
    assert result.returncode == 1
    assert f"error: model 'nope' not found on endpoint 'ollama' ({ollama.url})" in result.stderr


def test_the_cli_says_when_ollama_is_unreachable(test_set):
    from tests.support.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli(
        "--test-set",
        str(test_set),
        "--base-model",
        "a",
        "--finetuned-model",
        "b",
        "--ollama-url",
        url,
        "--retries",
        "0",
        "--quiet",
    )
    assert result.returncode == 1
    assert f"endpoint 'ollama' ({url}) kept failing" in result.stderr and "connection refused" in result.stderr


def test_the_cli_refuses_a_bad_test_set(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    result = run_cli("--test-set", str(bad), "--base-model", "a", "--finetuned-model", "b", "--quiet")
    assert result.returncode == 2
    assert "line 2" in result.stderr and "or 'text' and 'label' (found: " in result.stderr


def test_the_cli_reports_a_missing_dependency_instead_of_installing_it(tmp_path):
    # A sitecustomize that hides scikit-learn, as on a machine without it.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'sklearn' or name.startswith('sklearn.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'sklearn'\", name='sklearn')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    environment = {k: v for k, v in environment.items() if not k.startswith(("DJANGO", "PYTEST"))}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--test-set", "x.csv", "--base-model", "a", "--finetuned-model", "b"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert result.returncode == 3
    assert "a required package is missing (sklearn)" in result.stderr
    assert "pip install -r" in result.stderr


def test_the_cli_asks_a_model_named_twice_once_and_refuses_the_base_as_a_candidate(ollama, test_set, tmp_path):
    output = tmp_path / "results.json"
    common = ("--test-set", str(test_set), "--ollama-url", ollama.url, "--max-examples", "3", "--quiet")
    result = run_cli(
        *common,
        "--base-model",
        "llama3.2:3b",
        "--finetuned-model",
        "contracts-ft",
        "--finetuned-model",
        "contracts-ft:latest",
        "--output",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(output.read_text())["candidates"] == ["llama3.2:3b", "contracts-ft"]
    assert len(ollama.chat_requests(model="contracts-ft")) == 3
    refused = run_cli(*common, "--base-model", "contracts-ft", "--finetuned-model", "contracts-ft:latest")
    assert refused.returncode == 2
    assert "'contracts-ft:latest' is the base model" in refused.stderr


def test_the_cli_names_the_candidate_its_verdict_describes(ollama, test_set):
    result = run_cli(
        "--test-set",
        str(test_set),
        "--base-model",
        "llama3.2:3b",
        "--finetuned-model",
        "contracts-ft-v2",
        "--finetuned-model",
        "contracts-ft",
        "--ollama-url",
        ollama.url,
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "Headline: contracts-ft, the best of 2 fine-tuned candidates by accuracy" in result.stdout
    assert "Significant improvement" in result.stdout


@pytest.fixture
def translation_set(tmp_path):
    path = tmp_path / "translations.jsonl"
    records = [{"instruction": "Translate into French.", "input": f"word {i}", "output": f"mot {i}"} for i in range(10)]
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    return path


@contextlib.contextmanager
def judged_translation_cli(translation_set, tmp_path, judge_answer):
    """A base that knows nothing, a perfect translator and ``judge`` answering ``judge_answer``; the CLI's args."""
    with OllamaServer() as server:
        server.add_model("llama3.2:3b", answer="I do not know")
        server.add_model("translator", answer=answer_from_mapping({f"word {i}": f"mot {i}" for i in range(10)}))
        server.add_model("judge", answer=judge_answer)
        output, cache = tmp_path / "results.json", tmp_path / "judge.json"
        args = ["--task", "generation", "--test-set", str(translation_set), "--base-model", "llama3.2:3b"]
        args += ["--finetuned-model", "translator", "--ollama-url", server.url, "--output", str(output), "--quiet"]
        args += ["--judge-model", "judge", "--judge-cache", str(cache)]
        yield server, args, output, cache


def test_the_cli_runs_a_generation_evaluation_with_a_judge_and_its_cache(translation_set, tmp_path):
    from tests.support.ollama_server import reference_judge

    with judged_translation_cli(translation_set, tmp_path, reference_judge()) as (server, args, output, cache):
        first = run_cli(*args)
        assert first.returncode == 0, first.stderr
        results = json.loads(output.read_text())["results"]
        assert results["fine_tuned"]["exact_match"] == 1.0 and results["base"]["exact_match"] == 0.0
        assert results["comparisons"]["chrf"]["verdict"] == "significant improvement"
        assert results["judge"]["wins"] == 10 and results["judge"]["requests"] == 20
        assert "judge judge: wins 10, losses 0, ties 0" in first.stdout
        assert "no verdict in 0 pairs (0 of 20 answers named no winner)" in first.stdout
        assert "warning" not in first.stdout
        asked = len(server.chat_requests(model="judge"))
        second = run_cli(*args)
        assert second.returncode == 0, second.stderr
        assert json.loads(output.read_text())["results"]["judge"]["cache_hits"] == 20
        assert len(server.chat_requests(model="judge")) == asked


def test_the_cli_says_when_the_judge_named_no_winner_also_from_a_cache_kept_before_that_was_told_apart(
    translation_set, tmp_path
):
    from tests.support.ollama_server import prose_judge

    with judged_translation_cli(translation_set, tmp_path, prose_judge()) as (server, args, output, cache):
        first = run_cli(*args)
        assert first.returncode == 0, first.stderr
        assert "wins 0, losses 0, ties 10, win rate n/a" in first.stdout
        assert "no verdict in 10 pairs (20 of 20 answers named no winner)" in first.stdout
        assert "warning: the judge gave no usable verdict: 10 of the 10 ties are pairs the judge did not decide" in (
            first.stdout
        )
        assert "may not follow the verdict format" in first.stdout
        # A cache file written before "none" existed kept these answers as "tie", its reason saying why.
        kept = json.loads(cache.read_text())
        assert {verdict["winner"] for verdict in kept.values()} == {"none"}
        cache.write_text(json.dumps({key: {**verdict, "winner": "tie"} for key, verdict in kept.items()}))
        second = run_cli(*args)
        assert second.returncode == 0, second.stderr
        judge = json.loads(output.read_text())["results"]["judge"]
        assert judge["requests"] == 0 and judge["no_verdict"] == 10 and judge["no_verdict_answers"] == 20


def test_the_cli_refuses_a_judge_on_a_classification_run(test_set):
    result = run_cli("--task", "classification", "--test-set", str(test_set), "--base-model", "b")
    assert result.returncode == 2  # argparse: --finetuned-model missing
    result = run_cli(
        "--task",
        "classification",
        "--test-set",
        str(test_set),
        "--base-model",
        "b",
        "--finetuned-model",
        "f",
        "--judge-model",
        "j",
    )
    assert result.returncode == 2 and "--task generation" in result.stderr
