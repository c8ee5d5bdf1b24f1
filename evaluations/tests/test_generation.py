"""Generative evaluations through the API: references, per-example scores, comparisons and a pairwise judge."""

import csv
import io
import json
import re

import pytest

from evaluations.models import Evaluation, JudgeAnswer, Prediction
from tests.support.ollama_server import (
    RawAnswer,
    answer_from_mapping,
    position_a_judge,
    prose_judge,
    reference_judge,
)

COUNT = 12
INSTRUCTION = "Translate the word into French."


def translation_records(count: int = COUNT) -> list[dict]:
    return [{"instruction": INSTRUCTION, "input": f"word {i}", "output": f"mot {i}"} for i in range(count)]


def translate(prompt_or_text: str) -> str:
    return answer_from_mapping({f"word {i}": f"mot {i}" for i in range(100)}, default="je ne sais pas")(
        "", prompt_or_text
    )


@pytest.fixture
def translators(ollama_server):
    """A base that never knows and a fine-tune that always does; the judges are added per test."""
    ollama_server.add_model("llama3.2:3b", answer="I do not know")
    ollama_server.add_model("contracts-ft", answer=lambda model, prompt: translate(prompt))
    return ollama_server


@pytest.fixture
def run_generation(alice, alice_api, make_model, make_test_set, django_capture_on_commit_callbacks):
    """POST a generation evaluation as alice (on a fresh translation set) and run it to its end."""

    def run(*, user_api=None, model=None, dataset=None, **extra):
        model = model or make_model(alice)
        dataset = dataset or make_test_set(alice, translation_records())
        body = {"test_set_path": dataset.path, "base_model_name": "llama3.2:3b", "task": "generation", **extra}
        with django_capture_on_commit_callbacks(execute=True):
            response = (user_api or alice_api).post(f"/api/v1/models/{model.id}/evaluate", body, format="json")
        assert response.status_code == 202, response.content
        evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
        assert evaluation.status == "completed", evaluation.error_message
        return evaluation

    return run


def test_each_candidate_answers_the_conversation_up_to_its_last_assistant_turn(translators, run_generation):
    run_generation()
    sent = translators.chat_requests(model="contracts-ft")[0].body["messages"]
    assert [message["role"] for message in sent] == ["user"]
    assert INSTRUCTION in sent[-1]["content"] and "word " in sent[-1]["content"]
    assert "mot " not in json.dumps(sent)  # the reference is never shown to the candidate
    assert "format" not in translators.chat_requests(model="contracts-ft")[0].body  # no label schema forced


def test_a_generation_evaluation_reports_every_metric_per_candidate_with_improvement_and_comparisons(
    translators, run_generation
):
    evaluation = run_generation()
    results = evaluation.results
    assert results["task"] == "generation"
    assert results["examples_evaluated"] == COUNT
    for metric in ("exact_match", "token_f1", "rouge_l", "chrf"):
        assert 0 <= results["base"][metric] <= 1
        assert results["fine_tuned"][metric] == 1.0
        assert results["improvement"][metric] == pytest.approx(1.0 - results["base"][metric], abs=1e-6)
        comparison = results["comparisons"][metric]
        assert comparison["ci_low"] <= comparison["delta"] <= comparison["ci_high"]
        assert comparison["minimum_detectable_effect"]["n"] == COUNT
    assert results["base"]["exact_match"] == 0.0
    assert results["comparisons"]["exact_match"]["verdict"] == "significant improvement"
    assert "json_valid" not in results["base"]  # only when a schema is given
    assert results["significance"]["verdict"] == "significant improvement"


def test_per_example_scores_are_stored_with_the_predictions(translators, run_generation):
    evaluation = run_generation()
    fine_tuned = Prediction.objects.get(evaluation=evaluation, candidate="contracts-ft", index=3)
    assert fine_tuned.expected == "mot 3" and fine_tuned.prediction_text == "mot 3"
    assert fine_tuned.scores == {"exact_match": 1.0, "token_f1": 1.0, "rouge_l": 1.0, "chrf": 1.0}
    base = Prediction.objects.get(evaluation=evaluation, candidate="llama3.2:3b", index=3)
    assert base.scores["exact_match"] == 0.0 and base.scores["token_f1"] == 0.0


def test_a_long_reference_is_kept_whole(translators, run_generation, alice, make_test_set):
    long_answer = "mot " + "très " * 400
    records = [{"instruction": INSTRUCTION, "input": f"word {i}", "output": long_answer} for i in range(3)]
    evaluation = run_generation(dataset=make_test_set(alice, records))
    assert Prediction.objects.filter(evaluation=evaluation).first().expected == long_answer.strip()


def test_the_examples_put_the_largest_changes_first_with_both_answers_and_their_scores(translators, run_generation):
    evaluation = run_generation()
    first = evaluation.examples[0]
    assert first["outcome"] == "improved" and first["delta"] == 1.0
    assert first["reference"] == first["fine_tuned_answer"]
    assert first["base_answer"] == "I do not know"
    assert first["fine_tuned_scores"]["chrf"] == 1.0
    deltas = [abs(example["delta"]) for example in evaluation.examples]
    assert deltas == sorted(deltas, reverse=True)


def test_a_json_schema_adds_json_valid(translators, run_generation):
    translators.add_model("contracts-ft", answer=lambda model, prompt: json.dumps({"french": translate(prompt)}))
    schema = {"type": "object", "properties": {"french": {"type": "string"}}, "required": ["french"]}
    evaluation = run_generation(json_schema=schema)
    assert evaluation.results["fine_tuned"]["json_valid"] == 1.0
    assert evaluation.results["base"]["json_valid"] == 0.0  # {"label": …} is JSON, but not this schema
    assert "json_valid" in evaluation.results["comparisons"]
    assert translators.chat_requests(model="contracts-ft")[0].body["format"] == schema


def test_a_judge_biased_to_position_a_gives_ties_not_wins(translators, run_generation):
    translators.add_model("judge", answer=position_a_judge())
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    judge = evaluation.results["judge"]
    assert (judge["wins"], judge["losses"], judge["ties"]) == (0, 0, COUNT)
    assert judge["win_rate"] is None and judge["p_value"] == 1.0
    assert judge["requests"] == 2 * COUNT and judge["cache_hits"] == 0
    assert judge["no_verdict"] == 0 and judge["no_verdict_answers"] == 0  # it named a winner every time
    example = evaluation.examples[0]
    assert example["judge"]["outcome"] == "tie"
    assert example["judge"]["base_first"] == {"winner": "A", "reason": "answer A is better"}
    assert example["judge"]["fine_tuned_first"]["winner"] == "A"
    assert example["judge_disagrees"] is False  # a tie disagrees with nobody


def test_a_judge_that_agrees_in_both_orders_counts_wins_with_a_wilson_interval(translators, run_generation):
    translators.add_model("judge", answer=reference_judge())
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    judge = evaluation.results["judge"]
    assert (judge["wins"], judge["losses"], judge["ties"]) == (COUNT, 0, 0)
    assert judge["win_rate"] == 1.0 and judge["win_rate_ci"][0] > 0.7
    assert judge["p_value"] < 0.001
    assert judge["no_verdict"] == 0 and judge["no_verdict_answers"] == 0
    reasons = evaluation.examples[0]["judge"]
    assert reasons["base_first"] == {"winner": "B", "reason": "B matches the reference"}
    prompt = translators.chat_requests(model="judge")[0].body["messages"][-1]["content"]
    assert "Reference answer:\nmot " in prompt and "Answer A:\n" in prompt and "Answer B:\n" in prompt


def json_then_prose_judge(model: str, prompt: str):
    """Names a winner with the base's answer as A; with the fine-tuned answer as A it names one (the same
    answer) for odd words only and answers prose for even ones."""
    if "Answer A:\nI do not know" in prompt:
        return json.dumps({"winner": "B", "reason": "B is the translation"})
    if int(re.search(r"word (\d+)", prompt)[1]) % 2:
        return json.dumps({"winner": "A", "reason": "A is the translation"})
    return RawAnswer("Answer A looks like French to me.")


def test_a_judge_that_answers_prose_decides_no_pair_and_the_summary_says_so(translators, run_generation):
    translators.add_model("judge", answer=prose_judge())
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    judge = evaluation.results["judge"]
    assert (judge["wins"], judge["losses"], judge["ties"]) == (0, 0, COUNT)
    assert judge["win_rate"] is None
    assert judge["no_verdict"] == COUNT and judge["no_verdict_answers"] == 2 * COUNT
    verdicts = evaluation.examples[0]["judge"]
    assert verdicts["outcome"] == "tie"
    for order in ("base_first", "fine_tuned_first"):
        assert verdicts[order]["winner"] == "none"
        assert (
            verdicts[order]["reason"]
            == "the judge's answer named no winner: 'Both answers have their merits; the second reads a little better.'"
        )
    assert set(JudgeAnswer.objects.values_list("winner", flat=True)) == {"none"}
    # The model keeps the count with its summary, so the ties are not read as the judge's choice there either.
    evaluation.model.refresh_from_db()
    assert evaluation.model.eval_results["judge"]["no_verdict"] == COUNT


def test_a_rerun_from_the_cache_still_counts_the_answers_that_named_no_winner(translators, run_generation):
    translators.add_model("judge", answer=prose_judge())
    run_generation(judge={"endpoint": "ollama", "model": "judge"})
    judge = run_generation(judge={"endpoint": "ollama", "model": "judge"}).results["judge"]
    assert judge["requests"] == 0 and judge["cache_hits"] == 2 * COUNT
    assert judge["no_verdict"] == COUNT and judge["no_verdict_answers"] == 2 * COUNT


def test_a_pair_with_json_in_one_order_and_prose_in_the_other_is_a_tie_counted_as_no_verdict(
    translators, run_generation
):
    translators.add_model("judge", answer=json_then_prose_judge)
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    judge = evaluation.results["judge"]
    half = COUNT // 2
    assert (judge["wins"], judge["losses"], judge["ties"]) == (half, 0, half)
    assert judge["no_verdict"] == half and judge["no_verdict_answers"] == half
    assert judge["win_rate"] == 1.0  # over the pairs it decided
    even = next(example["judge"] for example in evaluation.examples if example["index"] % 2 == 0)
    assert even["outcome"] == "tie"
    assert even["base_first"] == {"winner": "B", "reason": "B is the translation"}
    assert even["fine_tuned_first"]["winner"] == "none"


def test_a_rerun_asks_the_judge_nothing_it_asked_before(translators, run_generation):
    translators.add_model("judge", answer=reference_judge())
    run_generation(judge={"endpoint": "ollama", "model": "judge"})
    asked = len(translators.chat_requests(model="judge"))
    again = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    assert len(translators.chat_requests(model="judge")) == asked
    judge = again.results["judge"]
    assert judge["requests"] == 0 and judge["cache_hits"] == 2 * COUNT and judge["cache_hit_rate"] == 1.0
    assert judge["wins"] == COUNT


def test_an_edited_judge_prompt_is_used_and_cached_apart(translators, run_generation):
    translators.add_model("judge", answer=position_a_judge())
    run_generation(judge={"endpoint": "ollama", "model": "judge"})
    prompt = "Q: {question}\nFirst: {answer_a}\nSecond: {answer_b}\nJSON verdict please."
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge", "prompt": prompt})
    assert evaluation.results["judge"]["requests"] == 2 * COUNT
    assert evaluation.config["judge"]["prompt"] == prompt
    assert translators.chat_requests(model="judge")[-1].body["messages"][-1]["content"].startswith("Q: ")


def test_the_judge_cache_is_per_owner(translators, run_generation, bob, bob_api, make_model, make_test_set):
    translators.add_model("judge", answer=position_a_judge())
    run_generation(judge={"endpoint": "ollama", "model": "judge"})
    evaluation = run_generation(
        user_api=bob_api,
        model=make_model(bob),
        dataset=make_test_set(bob, translation_records()),
        judge={"endpoint": "ollama", "model": "judge"},
    )
    assert evaluation.results["judge"]["cache_hits"] == 0
    assert JudgeAnswer.objects.filter(owner=bob).count() == 2 * COUNT


def test_a_judge_that_fails_fails_the_evaluation_with_the_reason_and_a_retry_asks_only_the_judge(
    translators, alice, alice_api, make_model, make_test_set, django_capture_on_commit_callbacks
):
    translators.add_model("judge", answer=position_a_judge())
    translators.inject("status", status=404, model="judge", message="model 'judge' not found")
    body = {
        "test_set_path": make_test_set(alice, translation_records()).path,
        "base_model_name": "llama3.2:3b",
        "task": "generation",
        "judge": {"endpoint": "ollama", "model": "judge"},
    }
    model = make_model(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(f"/api/v1/models/{model.id}/evaluate", body, format="json")
    evaluation = Evaluation.objects.get(id=response.json()["evaluation_id"])
    assert evaluation.status == "failed" and "judge" in evaluation.error_message
    candidate_requests = len(translators.chat_requests(model="contracts-ft"))
    translators.clear_faults()
    with django_capture_on_commit_callbacks(execute=True):
        assert alice_api.post(f"/api/v1/evaluations/{evaluation.id}/retry").status_code == 202
    evaluation.refresh_from_db()
    assert evaluation.status == "completed", evaluation.error_message
    assert len(translators.chat_requests(model="contracts-ft")) == candidate_requests  # answers were stored
    assert evaluation.results["judge"]["ties"] == COUNT


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"task": "summarise"}, "task", ""),
        ({"task": "classification", "judge": {"endpoint": "ollama", "model": "judge"}}, "judge", "generation"),
        ({"task": "generation", "judge": {"endpoint": "no-such", "model": "judge"}}, "judge", "no-such"),
        ({"task": "generation", "judge": {"endpoint": "http://evil:1/", "model": "judge"}}, "judge", "never a URL"),
        ({"task": "generation", "judge": {"endpoint": "ollama", "model": "j", "url": "http://x"}}, "judge", "url"),
        ({"task": "generation", "judge": {"endpoint": "ollama", "model": "../etc"}}, "judge", "not a valid"),
        ({"task": "generation", "judge": {"endpoint": "ollama"}}, "judge", "model: is required"),
        ({"task": "generation", "judge": "ollama"}, "judge", "an object"),
        (
            {"task": "generation", "judge": {"endpoint": "ollama", "model": "j", "prompt": "Which?"}},
            "judge",
            "{answer_a}",
        ),
        ({"task": "generation", "json_schema": {"type": 12}}, "json_schema", "not a valid JSON schema"),
        ({"task": "generation", "json_schema": ["a"]}, "json_schema", "JSON object"),
        ({"task": "generation", "json_schema": {"enum": ["x" * 30000]}}, "json_schema", "larger than"),
    ],
)
def test_bad_generation_settings_get_a_400_naming_the_field(
    extra, field, words, alice, alice_api, make_model, make_test_set, ollama_server
):
    dataset = make_test_set(alice, translation_records())
    body = {"test_set_path": dataset.path, "base_model_name": "llama3.2:3b", **extra}
    response = alice_api.post(f"/api/v1/models/{make_model(alice).id}/evaluate", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert words in json.dumps(response.json())
    assert not Evaluation.objects.exists()


def test_a_classification_comparison_states_its_minimum_detectable_effect(
    alice, alice_api, make_model, make_test_set, ollama_server, django_capture_on_commit_callbacks
):
    ollama_server.add_model("llama3.2:3b", answer="neutral")
    ollama_server.add_model("contracts-ft", answer="neutral")
    body = {"test_set_path": make_test_set(alice).path, "base_model_name": "llama3.2:3b"}
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_api.post(f"/api/v1/models/{make_model(alice).id}/evaluate", body, format="json")
    significance = Evaluation.objects.get(id=response.json()["evaluation_id"]).results["significance"]
    assert significance["verdict"] == "not significant"
    mde = significance["minimum_detectable_effect"]
    assert mde["n"] == 12 and 0 < mde["mde"] < 1 and mde["sd_assumed"] is True
    assert significance["bootstrap"]["accuracy"]["minimum_detectable_effect"] == mde
    assert "cannot be told apart" in significance["summary"]


# --- the page and the exports -----------------------------------------------------------------------------
def test_the_page_shows_metric_cards_the_judge_and_answers_side_by_side_with_a_word_diff(
    translators, run_generation, alice_browser
):
    translators.add_model("judge", answer=reference_judge())
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    page = alice_browser.get(f"/evaluations/{evaluation.id}/").content.decode()
    for label in ("Exact match", "Token F1", "ROUGE-L", "chrF"):
        assert label in page
    assert "95 % CI" in page and "detectable" in page
    assert "fine-tuned wins 12, loses 0, ties 0" in page
    assert "data-judge-no-verdict" not in page and "show=judge_no_verdict" not in page
    assert "B matches the reference" in page  # the judge's reasons
    assert "<del>mot 0</del>" in page  # the base missed the reference's words
    assert "<ins>I do not know</ins>" in page
    assert 'href="?show=regressed"' in page and "Regressed (0)" in page and "Improved (12)" in page


def test_the_page_says_a_judge_that_answered_prose_gave_no_usable_verdict(translators, run_generation, alice_browser):
    translators.add_model("judge", answer=prose_judge())
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    page = alice_browser.get(f"/evaluations/{evaluation.id}/").content.decode()
    assert "fine-tuned wins 0, loses 0, ties 12" in page
    assert "the judge gave no usable verdict" in page and "no pair was decided" not in page
    assert "12 of the 12 ties are pairs the judge did not decide: 24 of its 24 answers named no winner" in page
    assert "may not follow the verdict format" in page and "choose another judge" in page
    assert "Judge, base's answer as A: no winner named — the judge&#x27;s answer named no winner" in page
    assert "judge: tie, no verdict" in page
    undecided = alice_browser.get(f"/evaluations/{evaluation.id}/?show=judge_no_verdict").content.decode()
    assert "Judge named no winner (12)" in undecided and undecided.count("data-example=") == COUNT


def test_the_page_counts_the_undecided_ties_beside_a_win_rate(translators, run_generation, alice_browser):
    translators.add_model("judge", answer=json_then_prose_judge)
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    page = alice_browser.get(f"/evaluations/{evaluation.id}/").content.decode()
    assert "fine-tuned wins 6, loses 0, ties 6" in page and "win rate 100.0 %" in page
    assert "6 of the 6 ties are pairs the judge did not decide: 6 of its 24 answers named no winner" in page
    assert "no usable verdict" not in page


def test_a_page_from_before_the_no_verdict_counts_still_shows_the_judge(translators, run_generation, alice_browser):
    translators.add_model("judge", answer=position_a_judge())
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    results = evaluation.results
    for key in ("no_verdict", "no_verdict_answers"):
        del results["judge"][key]
    Evaluation.objects.filter(id=evaluation.id).update(results=results)
    response = alice_browser.get(f"/evaluations/{evaluation.id}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "fine-tuned wins 0, loses 0, ties 12" in page and "no pair was decided" in page
    assert "data-judge-no-verdict" not in page


def test_the_page_filters_examples_by_outcome(translators, run_generation, alice_browser):
    evaluation = run_generation()
    regressed = alice_browser.get(f"/evaluations/{evaluation.id}/?show=regressed").content.decode()
    assert "No example matches this filter." in regressed
    improved = alice_browser.get(f"/evaluations/{evaluation.id}/?show=improved").content.decode()
    assert improved.count('data-outcome="improved"') == COUNT
    assert alice_browser.get(f"/evaluations/{evaluation.id}/?show=<script>").status_code == 200


def test_answers_are_escaped_on_the_page(translators, run_generation, alice_browser):
    translators.add_model("llama3.2:3b", answer="<script>alert(1)</script>")
    evaluation = run_generation()
    page = alice_browser.get(f"/evaluations/{evaluation.id}/").content.decode()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_bob_cannot_see_alices_generation_evaluation(translators, run_generation, bob_api, client, bob):
    evaluation = run_generation()
    client.force_login(bob)
    assert client.get(f"/evaluations/{evaluation.id}/").status_code == 404
    assert bob_api.get(f"/api/v1/evaluations/{evaluation.id}/export.json").status_code == 404


def test_exports_carry_the_per_example_scores_and_the_judge(translators, run_generation, alice_api):
    translators.add_model("judge", answer=position_a_judge())
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    body = alice_api.get(f"/api/v1/evaluations/{evaluation.id}/export.json").content
    rows = json.loads(body)["predictions"]
    assert len(rows) == 2 * COUNT
    assert {row["scores"]["chrf"] for row in rows if row["role"] == "fine_tuned"} == {1.0}
    assert {row["judge"] for row in rows} == {"tie"}
    text = alice_api.get(f"/api/v1/evaluations/{evaluation.id}/export.csv").content.decode()
    header = text.splitlines()[0].split(",")
    assert header[-6:] == [
        "score_exact_match",
        "score_token_f1",
        "score_rouge_l",
        "score_chrf",
        "judge",
        "judge_no_verdict",
    ]
    assert {row["judge_no_verdict"] for row in rows} == {False}  # a position-A judge names a winner, the same one


def test_the_json_export_says_which_of_the_judges_answers_named_no_winner(translators, run_generation, alice_api):
    translators.add_model("judge", answer=json_then_prose_judge)
    evaluation = run_generation(judge={"endpoint": "ollama", "model": "judge"})
    body = json.loads(alice_api.get(f"/api/v1/evaluations/{evaluation.id}/export.json").content)
    assert body["evaluation"]["results"]["judge"]["no_verdict"] == COUNT // 2
    even = next(example["judge"] for example in body["evaluation"]["examples"] if example["index"] == 0)
    assert even["fine_tuned_first"]["winner"] == "none"
    assert even["fine_tuned_first"]["reason"].startswith("the judge's answer named no winner: ")
    assert {row["judge"] for row in body["predictions"] if row["index"] == 0} == {"tie"}  # the pair's outcome
    assert {row["judge_no_verdict"] for row in body["predictions"] if row["index"] == 0} == {True}
    assert {row["judge_no_verdict"] for row in body["predictions"] if row["index"] == 1} == {False}
    csv_rows = list(
        csv.DictReader(io.StringIO(alice_api.get(f"/api/v1/evaluations/{evaluation.id}/export.csv").content.decode()))
    )
    assert {
        (row["index"], row["judge"], row["judge_no_verdict"]) for row in csv_rows if row["index"] in ("0", "1")
    } == {
        ("0", "tie", "True"),
        ("1", "fine_tuned", "False"),
    }


def test_the_list_summarises_a_generation_evaluation(translators, run_generation, alice_api):
    run_generation()
    summary = alice_api.get("/api/v1/evaluations").json()["results"][0]["summary"]
    assert summary["task"] == "generation" and summary["headline_metric"] == "token_f1"
    assert summary["fine_tuned_score"] == 1.0 and summary["verdict"] == "significant improvement"


# --- chat records ------------------------------------------------------------------------------------------
def test_a_multi_turn_chat_record_is_asked_with_its_system_prompt_and_earlier_turns(
    translators, run_generation, alice, make_test_set
):
    records = [
        {
            "messages": [
                {"role": "system", "content": "You translate into French."},
                {"role": "user", "content": "word 1"},
                {"role": "assistant", "content": "mot 1", "weight": 0},
                {"role": "user", "content": f"word {i}"},
                {"role": "assistant", "content": f"mot {i}"},
            ]
        }
        for i in range(2, 8)
    ]
    dataset = make_test_set(alice, records, labels=[])
    evaluation = run_generation(dataset=dataset)
    sent = translators.chat_requests(model="contracts-ft")[0].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "You translate into French." and sent[2]["content"] == "mot 1"
    assert evaluation.results["examples_evaluated"] == 6
    # answer_from_mapping matches the longest text first: "word 1" from the earlier turn is also in the prompt,
    # so only the reference decides; the stored reference is the last assistant turn.
    assert {p.expected for p in Prediction.objects.filter(evaluation=evaluation)} == {f"mot {i}" for i in range(2, 8)}


def test_the_dashboard_shows_a_generation_evaluations_headline_delta(translators, run_generation, alice_browser):
    run_generation()
    page = alice_browser.get("/").content.decode()
    assert "token F1" in page and "+100.0" in page and "not evaluated" not in page


def test_the_evaluation_list_shows_a_generation_evaluations_token_f1_delta(translators, run_generation, alice_browser):
    run_generation()
    page = alice_browser.get("/evaluations/").content.decode()
    assert '+100.0 pts <span class="hint">token F1</span>' in page


def test_the_form_starts_a_generation_evaluation_with_a_judge(
    translators, alice, alice_browser, make_model, make_test_set, django_capture_on_commit_callbacks
):
    from evaluations.judge import DEFAULT_JUDGE_PROMPT

    translators.add_model("judge", answer=position_a_judge())
    model, dataset = make_model(alice), make_test_set(alice, translation_records())
    form = alice_browser.get("/evaluations/new/").content.decode()
    assert 'name="judge_model"' in form and "{answer_a}" in form
    fields = {
        "model": model.id,
        "test_set_path": dataset.path,
        "base_model_name": "llama3.2:3b",
        "task": "generation",
        "judge_endpoint": "ollama",
        "judge_model": "judge",
        "judge_prompt": DEFAULT_JUDGE_PROMPT,
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = alice_browser.post("/evaluations/new/", fields)
    evaluation = Evaluation.objects.get()
    assert response.status_code == 302, response.content.decode()[:500]
    assert evaluation.status == "completed", evaluation.error_message
    assert evaluation.results["judge"]["ties"] == COUNT


def test_the_form_says_why_a_judge_is_refused(translators, alice, alice_browser, make_model, make_test_set):
    fields = {
        "model": make_model(alice).id,
        "test_set_path": make_test_set(alice).path,
        "base_model_name": "llama3.2:3b",
        "task": "classification",
        "judge_endpoint": "ollama",
        "judge_model": "judge",
    }
    page = alice_browser.post("/evaluations/new/", fields).content.decode()
    assert "only a generation evaluation" in page and not Evaluation.objects.exists()


def test_the_task_defaults_to_the_test_sets(translators, alice, alice_api, make_model, make_test_set):
    dataset = make_test_set(alice, translation_records(), labels=[])
    type(dataset).objects.filter(id=dataset.id).update(task="generation")
    body = {"test_set_path": dataset.path, "base_model_name": "llama3.2:3b"}
    response = alice_api.post(f"/api/v1/models/{make_model(alice).id}/evaluate", body, format="json")
    assert response.status_code == 202, response.content
    assert Evaluation.objects.get().config["task"] == "generation"


@pytest.mark.parametrize(
    ("content", "winner"),
    [
        ('{"winner": "A", "reason": "r"}', "A"),
        ('{"winner": "b", "reason": "r"}', "B"),
        ('{"winner": "tie", "reason": "r"}', "tie"),
        ('Sure! {"winner": "B", "reason": "r"} Hope that helps.', "B"),
        ("Answer B is clearly better.", "none"),
        ('{"winner": "A", "reason": ', "none"),
        ('{"verdict": "A"}', "none"),
        ('{"winner": "none", "reason": "cannot tell"}', "none"),
        ("", "none"),
    ],
)
def test_a_judge_answer_that_names_no_winner_is_told_apart_from_a_tie(content, winner):
    from evaluations.judge import parse_verdict

    parsed, reason = parse_verdict(content)
    assert parsed == winner
    if winner == "none":
        assert reason == f"the judge's answer named no winner: {content.strip()[:200]!r}"


def test_an_answer_that_contains_a_placeholder_is_never_expanded():
    from evaluations.judge import DEFAULT_JUDGE_PROMPT, fill_prompt

    filled = fill_prompt(DEFAULT_JUDGE_PROMPT, question="q", reference="", answer_a="{answer_b}", answer_b="real B")
    assert "Answer A:\n{answer_b}\n" in filled and filled.count("real B") == 1
    assert "Reference answer" not in filled  # no reference, no empty reference section
