"""Migrations that move data: what existing rows hold after them."""

import pytest
from django.utils import timezone

from tests.support.migrations import migrate, migrate_to_latest

BEFORE = [("models_app", "0004_list_search_and_size_indexes")]
AFTER = [("models_app", "0005_live_deployment_and_last_attempt")]


@pytest.fixture(autouse=True)
def latest_schema_afterwards():
    yield
    migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_0005_gives_a_deployed_model_its_live_record_and_leaves_a_failed_one_without_invented_details(alice):
    apps = migrate(BEFORE)
    RegisteredModel = apps.get_model("models_app", "RegisteredModel")
    deployed_at = timezone.now()
    details = {"target": "clauses", "smoke": {"answer": "ready"}, "template": {"family": "chatml"}}
    deployed = RegisteredModel.objects.create(
        owner_id=alice.id,
        name="deployed",
        base_model="b",
        ollama_name="clauses",
        ollama_digest="ab" * 32,
        deployed_at=deployed_at,
        deploy_status="deployed",
        deploy_details=details,
    )
    failed = RegisteredModel.objects.create(
        owner_id=alice.id,
        name="failed redeploy",
        base_model="b",
        ollama_name="older",
        ollama_digest="cd" * 32,
        deployed_at=deployed_at,
        deploy_status="failed",
        deploy_details={"target": "older", "error_code": "ollama_error"},
    )

    RegisteredModel = migrate(AFTER).get_model("models_app", "RegisteredModel")

    deployed = RegisteredModel.objects.get(id=deployed.id)
    assert deployed.live_deploy_details == details and deployed.deploy_finished_at == deployed_at
    failed = RegisteredModel.objects.get(id=failed.id)
    assert failed.live_deploy_details == {} and failed.deploy_details["error_code"] == "ollama_error"
    assert failed.ollama_digest == "cd" * 32
