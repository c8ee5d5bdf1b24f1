"""A field a request body does not take is a 400 naming it, on every endpoint that takes a body, and nothing changes.

DRF drops unknown keys silently: before, ``{"dataset_id": 3}`` created a job with no dataset and
``{"hyperparameter": {…}}`` one trained on the defaults, and the client never learnt why.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Dataset, Job
from models_app.models import RegisteredModel

from .world import owner_state

pytestmark = pytest.mark.django_db

JOB = {"name": "x", "base_model": "tiny", "trainer": "external"}
SWEEP = {"name": "x", "trainer": "example", "base_model": "tiny", "strategy": "grid", "search_space": {}}

# (endpoint, method, path, body, the misspelt field, the field it most likely meant)
MISSPELT = [
    ("job create", "post", "/api/v1/jobs/", {**JOB, "dataset_id": "{dataset}"}, "dataset_id", "dataset"),
    (
        "job create",
        "post",
        "/api/v1/jobs/",
        {**JOB, "hyperparameter": {"epochs": 1}},
        "hyperparameter",
        "hyperparameters",
    ),
    (
        "job complete",
        "post",
        "/api/v1/jobs/{job}/complete",
        {"status": "failed", "error_mesage": "x"},
        "error_mesage",
        "error_message",
    ),
    ("dataset split", "post", "/api/v1/datasets/{dataset}/split", {"test_fraction": 0.5, "seeds": 1}, "seeds", "seed"),
    (
        "model create",
        "post",
        "/api/v1/models/",
        {"name": "x", "base_model": "tiny", "descripton": "x"},
        "descripton",
        "description",
    ),
    ("model deploy", "post", "/api/v1/models/{model}/deploy", {"ollama_nam": "x"}, "ollama_nam", "ollama_name"),
    (
        "evaluate",
        "post",
        "/api/v1/models/{model}/evaluate",
        {"test_set_path": "{dataset_path}", "fine_tuned_model": "x"},
        "fine_tuned_model",
        "fine_tuned_name",
    ),
    ("alias move", "put", "/api/v1/registry/{registered_name}/aliases/candidate", {"versoin": 1}, "versoin", "version"),
    (
        "gate set",
        "put",
        "/api/v1/registry/{registered_name}/gate",
        {"test_set_path": "{dataset_path}", "treshold": 0.5},
        "treshold",
        "threshold",
    ),
    ("sweep create", "post", "/api/v1/sweeps/", {**SWEEP, "n_trial": 2}, "n_trial", "n_trials"),
    (
        "webhook create",
        "post",
        "/api/v1/webhooks/",
        {"url": "https://hooks.example.com/x", "event": ["job.finished"]},
        "event",
        "events",
    ),
]


def fill(value, ids: dict):
    if isinstance(value, dict):
        return {key: fill(item, ids) for key, item in value.items()}
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return ids[value[1:-1]]
    return value


@pytest.fixture
def ids(world):
    return {**world.ids(), "dataset_path": world.dataset.path}


@pytest.mark.parametrize(
    "method, path, body, misspelt, meant",
    [row[1:] for row in MISSPELT],
    ids=[f"{row[0]}: {row[4]}" for row in MISSPELT],
)
def test_a_misspelt_field_is_a_400_that_names_it_and_what_was_meant_and_nothing_changes(
    world, ids, alice_api, method, path, body, misspelt, meant
):
    before = owner_state(world)
    response = getattr(alice_api, method)(path.format(**ids), fill(body, ids), format="json")
    assert response.status_code == 400, response.content[:500]
    answer = response.json()
    assert answer["errors"][misspelt] == [f"Unknown field: did you mean {meant!r}?"]
    assert answer["detail"].startswith(f"{misspelt}: Unknown field")
    assert owner_state(world) == before


def test_a_field_like_no_other_lists_what_the_endpoint_takes(world, alice_api):
    response = alice_api.post("/api/v1/jobs/", {**JOB, "priority": "high"}, format="json")
    assert response.status_code == 400
    message = response.json()["errors"]["priority"][0]
    assert message.startswith(
        "Unknown field; this endpoint takes: name, base_model, initial_model, dataset, validation_dataset, trainer, "
    )
    assert "hyperparameters" in message
    assert not Job.objects.filter(name="x").exists()


def test_unknown_fields_are_reported_with_the_other_fields_errors_in_one_answer(world, alice_api):
    response = alice_api.post("/api/v1/models/", {"base_model": "tiny", "nmae": "x"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"nmae", "name"}
    assert not RegisteredModel.objects.filter(base_model="tiny", owner=world.owner).exclude(id=world.model.id).exists()


def test_an_unknown_form_field_of_an_upload_is_refused_and_nothing_is_stored(world, alice_api):
    datasets = Dataset.objects.count()
    upload = SimpleUploadedFile("train.jsonl", b'{"text": "a", "label": "b"}\n')
    response = alice_api.post("/api/v1/datasets/", {"file": upload, "nmae": "typo"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["errors"]["nmae"] == ["Unknown field: did you mean 'name'?"]
    assert Dataset.objects.count() == datasets


def test_a_body_read_from_the_api_can_be_sent_back_with_its_read_only_fields(world, alice_api):
    path = f"/api/v1/registry/{world.registered_name.name}/gate"
    gate = alice_api.get(path).json()
    assert {"updated_by", "updated_at"} <= set(gate)
    response = alice_api.put(path, {**gate, "threshold": 0.05}, format="json")
    assert response.status_code == 200, response.content[:500]
    assert response.json()["threshold"] == 0.05


def test_endpoints_with_fixed_fields_keep_their_own_words(world, ids, alice_api):
    """A URL in an evaluation, a candidate in a parity check, a read-only field of a model or an evaluation."""
    evaluate = alice_api.post(
        f"/api/v1/models/{world.model.id}/evaluate",
        {"test_set_path": world.dataset.path, "base_url": "http://10.0.0.1"},
        format="json",
    )
    assert "a URL or key is never accepted" in evaluate.json()["errors"]["base_url"][0]
    parity = alice_api.post(
        f"/api/v1/models/{world.model.id}/parity", {"test_set_path": world.dataset.path, "endpoint": "x"}, format="json"
    )
    assert parity.json()["errors"]["endpoint"][0].startswith("not a parity check field")
    model = alice_api.patch(f"/api/v1/models/{world.model.id}", {"files": []}, format="json")
    assert model.json()["errors"]["files"][0].startswith("This field is read-only or unknown")
    evaluation = alice_api.patch(f"/api/v1/evaluations/{world.evaluation.id}", {"status": "completed"}, format="json")
    assert evaluation.json()["errors"]["status"] == ["this field cannot be changed (only name and note can)"]
    assert {evaluate.status_code, parity.status_code, model.status_code, evaluation.status_code} == {400}
