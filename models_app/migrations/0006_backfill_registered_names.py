"""Models registered before names existed become versions of a name derived from their own name."""

from django.db import migrations
from django.utils.text import slugify


def backfill(apps, schema_editor):
    RegisteredModel = apps.get_model("models_app", "RegisteredModel")
    RegisteredName = apps.get_model("models_app", "RegisteredName")
    names = {}
    for model in RegisteredModel.objects.filter(registered_name__isnull=True).order_by("created_at", "id").iterator():
        slug = slugify(model.name or "")[:100].strip("-_.") or f"models-of-user-{model.owner_id}"
        key = (model.owner_id, slug)
        if key not in names:
            names[key], _ = RegisteredName.objects.get_or_create(owner_id=model.owner_id, name=slug)
        registered = names[key]
        registered.last_version += 1
        registered.save(update_fields=["last_version"])
        RegisteredModel.objects.filter(id=model.id).update(registered_name=registered, version=registered.last_version)


class Migration(migrations.Migration):
    dependencies = [("models_app", "0005_registered_names")]

    operations = [migrations.RunPython(backfill, migrations.RunPython.noop)]
