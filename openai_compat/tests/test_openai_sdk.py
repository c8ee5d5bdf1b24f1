"""A script written for OpenAI's fine-tuning, run unchanged against the studio: only base_url and the key differ.

OpenAI's own Python SDK talks HTTP to a live studio server; the job trains a real LoRA adapter on the demo base
and ends as a version in the registry.
"""

import time

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")
openai = pytest.importorskip("openai", reason="the dev requirements (requirements-dev.txt) are not installed")

from rest_framework.authtoken.models import Token  # noqa: E402

from models_app.archive import lineage_card  # noqa: E402
from models_app.lineage import model_lineage  # noqa: E402
from models_app.models import RegisteredModel  # noqa: E402
from tests.factories import jsonl  # noqa: E402
from trainers.tests.conftest import demo_base  # noqa: E402, F401 - a fixture, used by name

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

TRAINING = [
    {
        "messages": [
            {"role": "system", "content": "Answer with the sum."},
            {"role": "user", "content": f"{i} + 2"},
            {"role": "assistant", "content": str(i + 2)},
        ]
    }
    for i in range(24)
]
VALIDATION = [
    {"messages": [{"role": "user", "content": f"{i} + 2"}, {"role": "assistant", "content": str(i + 2)}]}
    for i in range(30, 36)
]


@pytest.fixture
def client(live_server, alice, settings, demo_base, monkeypatch):  # noqa: F811 - demo_base is the fixture above
    settings.DEMO_BASE_DIR = demo_base
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # passed through to the trainer: threads only slow the tiny model
    key = Token.objects.get_or_create(user=alice)[0].key
    return openai.OpenAI(base_url=f"{live_server.url}/openai/v1", api_key=key, max_retries=0, timeout=300)


def wait_until_finished(client, job_id: str, *, seconds: float = 240):
    deadline = time.monotonic() + seconds
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_an_openai_fine_tuning_script_trains_a_lora_adapter_into_the_registry(client, alice):
    uploaded = client.files.create(file=("arithmetic.jsonl", jsonl(TRAINING)), purpose="fine-tune")
    assert uploaded.status == "processed" and uploaded.id.startswith("file-")
    assert client.files.content(uploaded.id).read() == jsonl(TRAINING)

    validation = client.files.create(file=("held-out.jsonl", jsonl(VALIDATION)), purpose="fine-tune")
    created = client.fine_tuning.jobs.create(
        model="demo-base",
        training_file=uploaded.id,
        validation_file=validation.id,
        suffix="adder",
        seed=3,
        metadata={"experiment": "sums"},
        hyperparameters={"n_epochs": 2, "batch_size": 8},
    )
    job = wait_until_finished(client, created.id)

    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == "adder:v1"
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 8
    model = RegisteredModel.objects.get(owner=alice, registered_name__name="adder", version=1)
    assert job.studio["model"] == model.id  # the SDK keeps the studio's own fields
    # The SDK's auto-paging walks every event, newest first, through the "after" cursor.
    events = list(client.fine_tuning.jobs.list_events(created.id, limit=5))
    assert len({event.id for event in events}) == len(events) > 5
    metrics = [event for event in events if event.type == "metrics" and "train_loss" in event.data]
    assert metrics and metrics[0].data["step"] == metrics[0].data["total_steps"]
    # Every training record was trained on; the validation file was the validation set.
    assert "24 records for training, 6 from the validation dataset for validation" in [e.message for e in events]
    assert [event for event in events if event.type == "metrics" and "valid_loss" in event.data]
    assert job.validation_file == validation.id
    # The registry keeps which file validated the version: its lineage, page and ZIP card say so.
    lineage = model_lineage(model)
    assert lineage["validation_dataset"]["id"] == int(validation.id.removeprefix("file-"))
    assert "- Validation dataset: held-out (#" in "\n".join(lineage_card(lineage))
    assert [listed.id for listed in client.fine_tuning.jobs.list(metadata={"experiment": "sums"})] == [created.id]
    assert list(client.fine_tuning.jobs.list(metadata={"experiment": "other"})) == []
    assert "adder:v1" in [listed.id for listed in client.models.list()]
    assert client.models.retrieve("adder:v1").owned_by == f"user-{alice.id}"
    results = client.files.content(job.result_files[0]).text.splitlines()
    assert results[0] == "step,train_loss,valid_loss,eval_exact_match" and len(results) > 2
    (checkpoint,) = client.fine_tuning.jobs.checkpoints.list(created.id)
    assert checkpoint.fine_tuned_model_checkpoint == "adder:v1" and checkpoint.metrics.valid_loss is not None

    # The fine-tuned model answers at once (the standalone studio's local engine), asked as it was trained.
    question = [{"role": "system", "content": "Answer with the sum."}, {"role": "user", "content": "5 + 2"}]
    completion = client.chat.completions.create(model=job.fine_tuned_model, messages=question, temperature=0)
    assert completion.model == "adder:v1" and completion.choices[0].message.role == "assistant"
    assert completion.usage.prompt_tokens > 0 and "local engine" in completion.studio["served_by"]
    streamed = client.chat.completions.create(model=job.fine_tuned_model, messages=question, temperature=0, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed) == completion.choices[0].message.content


def test_the_sdk_raises_its_usual_errors_with_the_studios_reasons(client):
    uploaded = client.files.create(file=("arithmetic.jsonl", jsonl(TRAINING)), purpose="fine-tune")

    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-999999")
    with pytest.raises(openai.NotFoundError) as unknown_model:
        client.chat.completions.create(model="adder:v9", messages=[{"role": "user", "content": "1 + 2"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="not-a-studio-token", max_retries=0).files.list()

    assert refused.value.param == "model" and "demo-base" in refused.value.message
    assert unknown_model.value.code == "model_not_found"
