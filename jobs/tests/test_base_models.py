"""A job's base model is one the studio knows, or a folder inside the roots the operator allows.

Bob must never train on Alice's files, and no answer may tell what lies where on the server.
"""

import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from jobs.models import Job, Trainer
from runner.services import run_job

pytestmark = pytest.mark.django_db


def model_folder(path: Path, model_type: str = "llama") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return path


@pytest.fixture
def base_folders(settings, tmp_path):
    """An operator's layout: BASE_MODELS_DIR with one base, the demo base, an empty HF cache."""
    settings.BASE_MODELS_DIR = tmp_path / "base-models"
    settings.BASE_MODEL_ROOTS = []
    settings.BASE_MODELS = {}
    demo = settings.DEMO_BASE_DIR = model_folder(settings.VAR_DIR / "test-demo-base")
    settings.HF_HUB_CACHE = tmp_path / "hf" / "hub"
    model_folder(settings.BASE_MODELS_DIR / "llama-3.2-1b")
    yield settings.BASE_MODELS_DIR
    (demo / "config.json").unlink()
    demo.rmdir()


@pytest.fixture
def record_only_trainer(db):
    return Trainer.objects.create(name="record-only", command=["{python}", "-c", "pass"], loads_base_model=False)


def create_job(api, dataset, base_model, trainer="lora-sft"):
    return api.post(
        "/api/v1/jobs",
        {"name": "j", "base_model": base_model, "dataset": dataset.id, "trainer": trainer},
        format="json",
    )


def refusal(response) -> str:
    assert response.status_code == 400, response.content[:300]
    return " ".join(response.json()["errors"]["base_model"])


def test_bob_cannot_train_on_the_files_alice_uploaded_to_her_model(
    alice, alice_api, bob, bob_api, make_dataset, local_storage, base_folders
):
    created = alice_api.post("/api/v1/models", {"name": "alice-base", "base_model": "demo-base"}, format="json")
    assert created.status_code == 201
    model_id = created.json()["model"]["id"]
    config = SimpleUploadedFile("config.json", b'{"model_type": "llama"}', content_type="application/json")
    uploaded = alice_api.post(
        f"/api/v1/models/{model_id}/files", {"path": "config.json", "file": config}, format="multipart"
    )
    assert uploaded.status_code == 201, uploaded.content
    alice_folder = local_storage / "models" / "users" / str(alice.id) / "models" / str(model_id)
    assert (alice_folder / "config.json").is_file()
    dataset = make_dataset(bob)

    response = create_job(bob_api, dataset, str(alice_folder) + "/")

    assert "inside the studio's own storage" in refusal(response)
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("trick", "expected"),
    [
        ("/etc", "outside the folders allowed for base models"),
        ("/tmp", "outside the folders allowed for base models"),
        ("/", "outside the folders allowed for base models"),
        ("../../../../etc", "not an absolute path"),
        ("./models", "not an absolute path"),
        ("~root", "not an absolute path"),
        ("llama-3.2-1b/../../../etc", "not an absolute path"),
        ("file:///etc", "not an absolute path"),
        ("C:\\models", "not an absolute path"),
        ("nobody/not-in-the-cache", "is not available here"),
        ("llama3.2:3b", "is not available here"),
        ("demo\x1b[31mbase", "control characters"),
        ("demo\x00base", "Null characters are not allowed"),
        ("   ", "required (it may be left out only with initial_model"),
    ],
)
def test_a_lora_job_refuses_paths_and_names_the_studio_does_not_allow(
    alice_api, alice, make_dataset, base_folders, trick, expected
):
    response = create_job(alice_api, make_dataset(alice), trick)
    assert expected in refusal(response)
    assert not Job.objects.exists()


def test_a_path_that_climbs_out_of_an_allowed_root_is_refused(alice_api, alice, make_dataset, base_folders):
    response = create_job(alice_api, make_dataset(alice), f"{base_folders}/llama-3.2-1b/../../../etc")
    assert "outside the folders allowed" in refusal(response)


def test_a_symlink_inside_an_allowed_root_pointing_outside_it_is_refused(
    alice_api, alice, make_dataset, base_folders, tmp_path
):
    outside = model_folder(tmp_path / "elsewhere" / "weights")
    (base_folders / "sneaky").symlink_to(outside, target_is_directory=True)
    dataset = make_dataset(alice)

    assert "outside the folders allowed" in refusal(create_job(alice_api, dataset, str(base_folders / "sneaky")))
    assert "is not available here" in refusal(create_job(alice_api, dataset, "sneaky"))


def test_the_storage_root_and_var_are_refused_even_under_an_allowed_root(
    settings, alice_api, alice, make_dataset, base_folders, local_storage
):
    settings.BASE_MODEL_ROOTS = ["/"]  # an operator who allows everything still never exposes the storage
    model_folder(settings.VAR_DIR / "test-var-model")
    model_folder(local_storage / "models" / "users" / "9" / "models" / "1")
    dataset = make_dataset(alice)
    try:
        for path in (
            str(local_storage),
            str(local_storage / "models" / "users" / "9" / "models" / "1"),
            str(settings.VAR_DIR),
            str(settings.VAR_DIR / "test-var-model"),
            str(settings.DEMO_BASE_DIR),  # the demo base is used by its name, never by its path
        ):
            assert "inside the studio's own storage" in refusal(create_job(alice_api, dataset, path)), path
    finally:
        (settings.VAR_DIR / "test-var-model" / "config.json").unlink()
        (settings.VAR_DIR / "test-var-model").rmdir()
    assert not Job.objects.exists()


def test_the_demo_base_and_folders_inside_an_allowed_root_are_accepted(
    alice_api, alice, make_dataset, base_folders, settings, tmp_path
):
    settings.BASE_MODEL_ROOTS = [tmp_path / "shared-bases"]
    nested = model_folder(tmp_path / "shared-bases" / "org" / "qwen")
    dataset = make_dataset(alice)

    stored = {}
    for given in ("demo-base", "llama-3.2-1b", str(base_folders / "llama-3.2-1b"), str(nested)):
        response = create_job(alice_api, dataset, given)
        assert response.status_code == 201, response.content
        stored[given] = response.json()["base_model"]

    assert stored == {
        "demo-base": "demo-base",
        "llama-3.2-1b": "llama-3.2-1b",
        str(base_folders / "llama-3.2-1b"): "llama-3.2-1b",  # recorded by its catalogue name
        str(nested): str(nested),  # inside an allowed root: the path may be shown
    }


def test_declared_names_and_the_local_hugging_face_cache_are_known(
    alice_api, alice, make_dataset, base_folders, settings, tmp_path
):
    settings.BASE_MODEL_ROOTS = [tmp_path / "declared"]
    settings.BASE_MODELS = {"team-llama": str(model_folder(tmp_path / "declared" / "team-llama-v3"))}
    snapshot = model_folder(settings.HF_HUB_CACHE / "models--meta-llama--Llama-3.2-1B" / "snapshots" / "abc123")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    dataset = make_dataset(alice)

    for name in ("team-llama", "meta-llama/Llama-3.2-1B"):
        response = create_job(alice_api, dataset, name)
        assert response.status_code == 201, response.content
        assert response.json()["base_model"] == name


def test_the_demo_base_not_built_yet_says_how_to_build_it(alice_api, alice, make_dataset, base_folders, settings):
    settings.DEMO_BASE_DIR = settings.VAR_DIR / "no-demo-base-here"
    assert "build_demo_base" in refusal(create_job(alice_api, make_dataset(alice), "demo-base"))


def test_record_only_trainers_take_any_name_but_no_path_outside_the_roots(
    alice_api, alice, make_dataset, base_folders, record_only_trainer
):
    dataset = make_dataset(alice)
    for name in ("llama3.2:3b", "gpt-4o-mini-2024-07-18", "meta-llama/Llama-3.1-8B"):
        response = create_job(alice_api, dataset, name, trainer="example")
        assert response.status_code == 201, response.content
        assert response.json()["base_model"] == name
    for path in ("/etc", "../secret", "/tmp/x"):
        assert "base model" in refusal(create_job(alice_api, dataset, path, trainer="example"))
        assert "base model" in refusal(create_job(alice_api, dataset, path, trainer=record_only_trainer.name))
    external = alice_api.post(
        "/api/v1/jobs", {"name": "remote", "base_model": "/etc/shadow", "trainer": "external"}, format="json"
    )
    assert "outside the folders allowed" in refusal(external)


def test_the_runner_checks_the_base_again_before_the_trainer_starts(
    alice, make_dataset, base_folders, settings, tmp_path
):
    trainer = Trainer.objects.create(name="loads-base", command=["{python}", "-c", "pass"], loads_base_model=True)
    job = Job.objects.create(
        owner=alice, name="j", base_model="llama-3.2-1b", dataset=make_dataset(alice), trainer=trainer, status="queued"
    )
    settings.BASE_MODELS_DIR = tmp_path / "moved-away"  # the operator moved the folder since creation

    assert run_job(job_id=job.id) == "failed"

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error_message.startswith("not started: base model 'llama-3.2-1b' is not available here")
    assert "starting trainer" not in " ".join(job.log_entries.values_list("message", flat=True))


def test_a_model_record_never_shows_a_server_path_outside_the_roots(alice_api, base_folders):
    refused = alice_api.post("/api/v1/models", {"name": "m", "base_model": "/etc/passwd"}, format="json")
    assert refused.status_code == 400
    assert "outside the folders allowed" in " ".join(refused.json()["errors"]["base_model"])
    created = alice_api.post("/api/v1/models", {"name": "m", "base_model": "llama3.2:3b"}, format="json")
    assert created.status_code == 201
    model_id = created.json()["model"]["id"]
    patched = alice_api.patch(f"/api/v1/models/{model_id}", {"base_model": "/root"}, format="json")
    assert patched.status_code == 400


def safetensors_file(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file with zero-filled F32 tensors (header: 8-byte length, then JSON)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4
        for dimension in shape:
            size *= dimension
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + b"\0" * offset)


def test_the_catalogue_describes_each_base_without_showing_its_folder(alice_api, base_folders, settings):
    folder = base_folders / "llama-3.2-1b"
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    safetensors_file(folder / "model.safetensors", {"embed": [10, 4], "lm_head": [4, 10], "norm": [4]})

    response = alice_api.get("/api/v1/base-models")

    assert response.status_code == 200
    bases = {entry["name"]: entry for entry in response.json()["results"]}
    assert set(bases) == {"demo-base", "llama-3.2-1b"}
    assert bases["llama-3.2-1b"] | {"size_bytes": None} == {
        "name": "llama-3.2-1b",
        "source": "folder",
        "architecture": "LlamaForCausalLM",
        "model_type": "llama",
        "parameters": 84,
        "chat_template": True,
        "size_bytes": None,
        "presets": {},
    }
    assert bases["llama-3.2-1b"]["size_bytes"] == sum(p.stat().st_size for p in folder.iterdir())
    assert bases["demo-base"]["presets"]["lora-sft"]["epochs"] == 20
    assert str(base_folders) not in response.content.decode()
    assert str(settings.DEMO_BASE_DIR) not in response.content.decode()


def test_the_catalogue_page_lists_the_bases_and_links_their_presets(alice_browser, base_folders):
    page = alice_browser.get("/base-models/").content.decode()
    assert "<code>llama-3.2-1b</code>" in page and "<code>demo-base</code>" in page
    assert "/jobs/new/?trainer=lora-sft&amp;base_model=demo-base" in page
