"""The promotion gate on the `local` endpoint: each version is its registry adapter on its base.

One evaluation asks one registry adapter, so against a champion the gate asks for two evaluations, the
version's and the champion's, each against the base, and pairs their answers example by example. Completed
evaluations are seeded as a finished run stores them (rows, predictions, results from the real metrics):
the runs themselves (the engine on the demo base) are covered by test_local_loop.
"""

import pytest
from django.utils import timezone

from evaluations import metrics
from evaluations.models import Evaluation, Prediction
from models_app import services as model_services
from models_app.models import AliasEvent, ModelAlias
from tests.factories import LABELS, make_trained_job

from .conftest import sample_records

BASE = "/api/v1/registry/contracts"
RECORDS = sample_records(40)


@pytest.fixture
def local_gate(alice, alice_api, olivia_api, make_test_set, settings, tmp_path):
    """contracts v1 and v2 (LoRA adapters on demo-base), a gate on local, accuracy > 0.05."""
    demo = tmp_path / "demo-base"
    demo.mkdir()
    (demo / "config.json").write_text("{}")  # the catalogue's test for a model folder; nothing is loaded here
    settings.DEMO_BASE_DIR = demo
    for run in ("contracts run 1", "contracts run 2"):
        job = make_trained_job(alice, name=run, base_model="demo-base", registered_name="contracts")
        model_services.model_create_from_job(job_id=job.id)
    test_set = make_test_set(alice, RECORDS)
    response = alice_api.put(
        f"{BASE}/gate",
        {"test_set_path": test_set.path, "metric": "accuracy", "endpoint": "local", "threshold": 0.05},
        format="json",
    )
    assert response.status_code == 200, response.content
    return test_set


def _version(number: int):
    return _registered().versions.get(version=number)


def _registered():
    from models_app.models import RegisteredName

    return RegisteredName.objects.get(name="contracts")


def _make_champion(olivia_api, version: int) -> None:
    owner = _registered().owner_id
    moved = olivia_api.put(
        f"{BASE}/aliases/champion?owner={owner}", {"version": version, "override_reason": "first one"}, format="json"
    )
    assert moved.status_code == 200, moved.content


def _completed_row(model, test_set, *, task: str, endpoint: str) -> Evaluation:
    """The evaluation row a finished run leaves: ``model``'s adapter against the base, both on ``endpoint``."""
    return Evaluation.objects.create(
        owner=model.owner,
        model=model,
        test_set_path=test_set.path,
        base_model_name="demo-base",
        fine_tuned_name=model.name,
        status=Evaluation.Status.COMPLETED,
        completed_at=timezone.now(),
        config={
            "task": task,
            "fine_tuned_names": [model.name],
            "candidates": [
                {"name": "demo-base", "role": "base", "endpoint": endpoint, "source": "named"},
                {"name": model.name, "role": "fine_tuned", "endpoint": endpoint, "source": "registry_adapter"},
            ],
        },
    )


def _completed(model, test_set, *, right: int, endpoint: str = "local") -> Evaluation:
    """A finished run of ``model``'s adapter against the base: the base answers none right, the adapter the first
    ``right`` examples."""
    tuned = model.name
    evaluation = _completed_row(model, test_set, task="classification", endpoint=endpoint)
    rows = []
    for index, record in enumerate(RECORDS):
        wrong = next(label for label in LABELS if label != record["label"])
        for candidate, label in (("demo-base", wrong), (tuned, record["label"] if index < right else wrong)):
            rows.append(
                Prediction(
                    evaluation=evaluation,
                    index=index,
                    candidate=candidate,
                    input_text=record["text"],
                    expected=record["label"],
                    prediction_text=label,
                    parsed_label=label,
                    correct=label == record["label"],
                )
            )
    Prediction.objects.bulk_create(rows)
    results, examples = metrics.compute_results(rows, labels=sorted(LABELS), candidates=["demo-base", tuned])
    evaluation.results, evaluation.examples = results, examples
    evaluation.save(update_fields=["results", "examples"])
    return evaluation


def _completed_generation(model, test_set, *, right: int) -> Evaluation:
    """``_completed`` for an instruction test set: the base's answers score 0 on every metric, the adapter's
    first ``right`` answers are the references (1 on every metric), the rest 0."""
    from evaluations import generation

    tuned = model.name
    evaluation = _completed_row(model, test_set, task="generation", endpoint="local")
    rows = []
    for index, record in enumerate(TRANSLATIONS):
        for candidate, good in (("demo-base", False), (tuned, index < right)):
            rows.append(
                Prediction(
                    evaluation=evaluation,
                    index=index,
                    candidate=candidate,
                    input_text=record["input"],
                    expected=record["output"],
                    prediction_text=record["output"] if good else "je ne sais pas",
                    correct=good,
                    scores={metric: 1.0 if good else 0.0 for metric in ("exact_match", "token_f1", "rouge_l", "chrf")},
                )
            )
    Prediction.objects.bulk_create(rows)
    results, examples = generation.compute_results(rows, candidates=["demo-base", tuned])
    evaluation.results, evaluation.examples = results, examples
    evaluation.save(update_fields=["results", "examples"])
    return evaluation


TRANSLATIONS = [
    {"instruction": "Translate into French.", "input": f"word {i}", "output": f"mot {i}"} for i in range(40)
]


def test_on_local_a_chat_models_champion_moves_on_two_generation_evaluations_paired_by_example(
    alice, alice_api, olivia_api, local_gate, make_dataset
):
    translations = make_dataset(alice, rows=TRANSLATIONS, name="translations")
    gate = {"test_set_path": translations.path, "endpoint": "local", "threshold": 0.05}
    assert alice_api.put(f"{BASE}/gate", gate, format="json").json()["metric"] == "token_f1"
    _make_champion(olivia_api, 1)
    # A classification evaluation on another test set is no evidence for this gate: both are asked for.
    _completed(_version(2), local_gate, right=40)
    missing = alice_api.put(f"{BASE}/aliases/champion", {"version": 2, "from_version": 1}, format="json").json()
    assert missing["evidence"]["missing"][0].startswith("a completed generation evaluation of v2 against the base")
    theirs = _completed_generation(_version(1), translations, right=10)
    mine = _completed_generation(_version(2), translations, right=30)
    moved = alice_api.put(f"{BASE}/aliases/champion", {"version": 2, "from_version": 1}, format="json")
    assert moved.status_code == 200, moved.content
    evidence = AliasEvent.objects.latest("id").evidence
    assert (evidence["evaluation_id"], evidence["holder_evaluation_id"]) == (mine.id, theirs.id)
    # 20 of 40 more answers are the reference: the paired token-F1 gain over v1, not either one's over the base.
    assert evidence["metric"] == "token_f1" and evidence["delta"] == pytest.approx(0.5) and evidence["ci_low"] > 0.05
    assert "paired over 40 examples" in evidence["reason"]


def test_on_local_the_one_click_evaluates_the_versions_own_adapter_against_its_base(alice_api, local_gate):
    started = alice_api.post(f"{BASE}/versions/1/evaluate")
    assert started.status_code == 202, started.content
    evaluation = Evaluation.objects.get()
    assert evaluation.model == _version(1) and evaluation.config["task"] == "classification"
    assert [(plan["role"], plan["endpoint"], plan["source"]) for plan in evaluation.candidate_plans] == [
        ("base", "local", "named"),
        ("fine_tuned", "local", "registry_adapter"),
    ]
    assert evaluation.base_model_name == "demo-base"


def test_against_a_champion_on_local_both_versions_are_evaluated_against_the_base_and_the_champion_once(
    alice_api, olivia_api, local_gate
):
    _make_champion(olivia_api, 1)
    assert alice_api.post(f"{BASE}/versions/2/evaluate").status_code == 202
    started = Evaluation.objects.order_by("id")
    assert [(item.model.version, item.base_model_name, item.fine_tuned_endpoint) for item in started] == [
        (2, "demo-base", "local"),
        (1, "demo-base", "local"),
    ]
    # The champion's evaluation is still queued: a second click asks only for v2 again.
    assert alice_api.post(f"{BASE}/versions/2/evaluate").status_code == 202
    assert [item.model.version for item in Evaluation.objects.order_by("id")] == [2, 1, 2]


def test_on_local_without_the_champions_evaluation_the_move_says_both_are_needed_and_why(
    alice_api, olivia_api, local_gate
):
    _make_champion(olivia_api, 1)
    mine = _completed(_version(2), local_gate, right=30)
    refused = alice_api.put(f"{BASE}/aliases/champion", {"version": 2, "from_version": 1}, format="json")
    assert refused.status_code == 409
    evidence = refused.json()["evidence"]
    assert evidence["evaluation_id"] == mine.id and evidence["holder_evaluation_id"] is None
    assert "evaluation of v1 against the base (demo-base)" in evidence["missing"][0]
    assert "each compared against the base" in evidence["missing"][1]


def test_on_local_the_champion_moves_on_two_evaluations_against_the_base_paired_by_example(
    alice_api, alice_browser, olivia_api, local_gate
):
    _make_champion(olivia_api, 1)
    theirs = _completed(_version(1), local_gate, right=10)
    mine = _completed(_version(2), local_gate, right=30)
    moved = alice_api.put(f"{BASE}/aliases/champion", {"version": 2, "from_version": 1}, format="json")
    assert moved.status_code == 200, moved.content
    evidence = AliasEvent.objects.latest("id").evidence
    assert evidence["passed"] is True and evidence["endpoint"] == "local"
    assert (evidence["evaluation_id"], evidence["holder_evaluation_id"]) == (mine.id, theirs.id)
    assert evidence["method"].startswith("two evaluations on local, each against the base")
    # v2 answers 20 of 40 more examples right than v1: the paired improvement, not either one's over the base.
    assert evidence["delta"] == pytest.approx(0.5) and evidence["ci_low"] > 0.05
    assert evidence["baseline"] == "v1" and "paired over 40 examples" in evidence["reason"]
    page = alice_browser.get("/registry/contracts/").content.decode()
    assert f'href="/evaluations/{mine.id}/"' in page and f'href="/evaluations/{theirs.id}/"' in page


def test_on_local_a_version_worse_than_the_champion_is_refused_with_the_paired_interval(
    alice_api, olivia_api, local_gate
):
    _make_champion(olivia_api, 2)
    _completed(_version(2), local_gate, right=30)
    _completed(_version(1), local_gate, right=10)  # much better than the base, worse than the champion
    refused = alice_api.put(f"{BASE}/aliases/champion", {"version": 1, "from_version": 2}, format="json")
    assert refused.status_code == 409
    evidence = refused.json()["evidence"]
    assert evidence["ci_high"] < 0 and "not above the threshold" in evidence["reason"]
    assert ModelAlias.objects.get(alias="champion").model.version == 2


def test_a_local_gate_does_not_count_an_evaluation_asked_on_ollama(alice_api, local_gate):
    _completed(_version(2), local_gate, right=40, endpoint="ollama")
    refused = alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json")
    assert refused.status_code == 409
    assert "through local" in refused.json()["evidence"]["missing"][0]


def test_against_the_base_on_local_one_evaluation_decides(alice_api, local_gate):
    mine = _completed(_version(2), local_gate, right=30)
    moved = alice_api.put(f"{BASE}/aliases/champion", {"version": 2}, format="json")
    assert moved.status_code == 200, moved.content
    evidence = AliasEvent.objects.get().evidence
    assert evidence["evaluation_id"] == mine.id and evidence["holder_evaluation_id"] is None
    assert evidence["baseline"] == "demo-base" and evidence["delta"] == pytest.approx(0.75)
