"""0002 seals the signing secrets that earlier versions kept in clear, and going back opens them again."""

import pytest

from finetune_studio.sealing import unseal
from tests.support.migrations import migrate, migrate_to_latest

BEFORE = [("webhooks", "0001_initial")]
AFTER = [("webhooks", "0002_sealed_secrets")]


@pytest.fixture(autouse=True)
def latest_schema_afterwards():
    yield
    migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_0002_seals_secrets_kept_in_clear_and_the_deliveries_still_verify(alice):
    apps = migrate(BEFORE)
    Webhook = apps.get_model("webhooks", "Webhook")
    plain = "whsec_" + "ab" * 24
    webhook_id = Webhook.objects.create(owner_id=alice.id, url="https://hooks.example.com/a", secret=plain).id

    apps = migrate(AFTER)
    stored = apps.get_model("webhooks", "Webhook").objects.get(id=webhook_id).secret
    assert plain not in stored and unseal(stored) == plain

    apps = migrate(BEFORE)
    assert apps.get_model("webhooks", "Webhook").objects.get(id=webhook_id).secret == plain
