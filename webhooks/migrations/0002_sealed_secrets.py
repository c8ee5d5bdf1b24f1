from django.db import migrations, models


def seal_plain_secrets(apps, schema_editor):
    from finetune_studio.sealing import is_sealed, seal

    Webhook = apps.get_model("webhooks", "Webhook")
    for webhook in Webhook.objects.only("id", "secret").iterator():
        if not is_sealed(webhook.secret):
            Webhook.objects.filter(id=webhook.id).update(secret=seal(webhook.secret))


def unseal_secrets(apps, schema_editor):
    from finetune_studio.sealing import is_sealed, unseal

    Webhook = apps.get_model("webhooks", "Webhook")
    for webhook in Webhook.objects.only("id", "secret").iterator():
        if is_sealed(webhook.secret):
            Webhook.objects.filter(id=webhook.id).update(secret=unseal(webhook.secret))


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0001_initial")]

    operations = [
        migrations.AlterField(
            model_name="webhook",
            name="secret",
            field=models.CharField(
                help_text="The signing secret, sealed under SECRET_KEY (finetune_studio.sealing).", max_length=300
            ),
        ),
        migrations.RunPython(seal_plain_secrets, unseal_secrets),
        migrations.AddField(
            model_name="webhook",
            name="secret_rotated_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
