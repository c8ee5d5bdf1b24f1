from finetune_studio.objects import bucket
from models_app.models import RegisteredModel
from tests.factories import make_model


def test_admin_lists_models_and_deletes_through_the_service_files_first(admin_client, alice):
    client = admin_client
    model = make_model(alice, files={"a.bin": b"a"}, name="admin target")
    assert b"admin target" in client.get("/admin/models_app/registeredmodel/").content
    response = client.post(
        "/admin/models_app/registeredmodel/",
        {"action": "delete_selected", "_selected_action": [model.id], "post": "yes"},
    )
    assert response.status_code == 302
    assert not RegisteredModel.objects.filter(id=model.id).exists()
    assert list(bucket("models").list(model.storage_path)) == []


def test_admin_archive_action_moves_status_through_the_service(admin_client, alice):
    client = admin_client
    model = make_model(alice)
    client.post("/admin/models_app/registeredmodel/", {"action": "archive_models", "_selected_action": [model.id]})
    model.refresh_from_db()
    assert model.status == "archived"


def test_admin_marks_ready_only_models_that_have_files(admin_client, alice):
    empty = make_model(alice, name="no files yet", status="pending")
    full = make_model(alice, name="has files", status="uploading", files={"a.bin": b"a"})
    response = admin_client.post(
        "/admin/models_app/registeredmodel/",
        {"action": "mark_ready", "_selected_action": [empty.id, full.id]},
        follow=True,
    )
    assert b"Not marked ready (no files yet): no files yet" in response.content
    assert RegisteredModel.objects.get(id=empty.id).status == "pending"
    assert RegisteredModel.objects.get(id=full.id).status == "ready"
