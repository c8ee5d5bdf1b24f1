"""S3 failing under the registry: a ZIP never ends as a valid-looking truncated archive; uploads report it."""

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from finetune_studio.objects import bucket
from models_app.models import RegisteredModel
from models_app.services import artifacts_manifest

from .support import BIG, read_stream

pytestmark = pytest.mark.django_db


def test_a_connection_reset_mid_zip_never_yields_a_valid_archive(world, alice_api, storage_spy):
    model = world.model
    bucket("models").put_bytes(model.storage_path + "gguf/model.gguf", BIG)
    RegisteredModel.objects.filter(id=model.id).update(files=artifacts_manifest(model.storage_path))
    storage_spy.reset_after = 256 * 1024  # every S3 connection dies after 256 KiB of answer
    response = alice_api.get(f"/api/v1/models/{model.id}/download")
    received, error = read_stream(response) if response.status_code == 200 else (b"", None)
    if response.status_code == 200:
        assert error is not None, "the stream ended normally although storage failed"
        with pytest.raises(zipfile.BadZipFile):
            zipfile.ZipFile(io.BytesIO(received)).testzip()
    else:
        assert response.status_code == 503
    assert storage_spy.resets >= 1
    print(
        "FAULTS",
        json.dumps({"scenario": "s3 reset during zip", "resets": storage_spy.resets, "valid_truncated_zips": 0}),
    )


def test_storage_refusing_an_upload_is_reported_and_nothing_is_recorded(world, alice_api, storage_spy):
    storage_spy.refuse = True
    upload = SimpleUploadedFile("w.bin", BIG)
    response = alice_api.post(
        f"/api/v1/models/{world.model.id}/files", {"path": "extra/w.bin", "file": upload}, format="multipart"
    )
    assert response.status_code == 503, response.content[:300]
    assert response.json()["detail"]
    files = {entry["path"] for entry in RegisteredModel.objects.get(id=world.model.id).files}
    assert "extra/w.bin" not in files
    storage_spy.heal()
    assert not bucket("models").exists(world.model.storage_path + "extra/w.bin")
    print("FAULTS", json.dumps({"scenario": "s3 refused during upload", "resets": storage_spy.resets, "rows_lost": 0}))


def test_a_dataset_upload_with_storage_down_is_a_503_and_leaves_no_row(alice, alice_api, storage_spy):
    from jobs.models import Dataset

    storage_spy.refuse = True
    rows = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'
    response = alice_api.post("/api/v1/datasets/", {"file": SimpleUploadedFile("d.jsonl", rows)}, format="multipart")
    assert response.status_code == 503, response.content[:300]
    assert not Dataset.objects.filter(owner=alice).exists()
