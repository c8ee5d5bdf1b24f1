from django.contrib import admin, messages
from django.template.defaultfilters import filesizeformat

from finetune_studio.objects import StorageError

from . import deploy, deployments, services
from .models import RegisteredModel


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "base_model", "type", "status", "size", "job", "deploy_status", "created_at")
    list_filter = ("status", "type", "deploy_status", "created_at")
    search_fields = ("name", "description", "base_model", "owner__username", "storage_path", "ollama_name")
    list_select_related = ("owner", "job")
    raw_id_fields = ("owner", "job")
    readonly_fields = (
        "storage_path",
        "lora_adapters_path",
        "gguf_path",
        "files",
        "total_size",
        "training_metrics",
        "provenance",
        "ollama_name",
        "ollama_base",
        "ollama_digest",
        "deployed_at",
        "live_deploy_details",
        "deploy_parity",
        "deploy_status",
        "deploy_error",
        "deploy_started_at",
        "deploy_finished_at",
        "deploy_details",
        "created_at",
        "updated_at",
    )
    date_hierarchy = "created_at"
    actions = ("archive_models", "mark_ready", "deploy_to_ollama")

    @admin.display(description="size", ordering="total_size")
    def size(self, model):
        return filesizeformat(model.total_size)

    @admin.action(description="Archive selected models")
    def archive_models(self, request, queryset):
        for model in queryset:
            services.model_update(model_id=model.id, changes={"status": RegisteredModel.Status.ARCHIVED})
        self.message_user(request, f"Archived {queryset.count()} models.")

    @admin.action(description="Mark selected models ready")
    def mark_ready(self, request, queryset):
        marked, refused = 0, []
        for model in queryset:
            try:
                services.model_update(model_id=model.id, changes={"status": RegisteredModel.Status.READY})
                marked += 1
            except services.ModelsInvalid:
                refused.append(model.name)
        self.message_user(request, f"Marked {marked} models ready.")
        if refused:
            self.message_user(
                request, f"Not marked ready (no files yet): {', '.join(refused)}.", level=messages.WARNING
            )

    @admin.action(description="Deploy selected models to Ollama (default name and base)")
    def deploy_to_ollama(self, request, queryset):
        for model in queryset:
            try:
                deployments.model_deploy_start(model_id=model.id)
            except (deploy.DeployRefused, services.ModelQueueUnavailable) as exc:
                self.message_user(request, f"{model}: not deployed: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{model}: deploying to Ollama.")

    # Deleting goes through the service so stored files go first (and a storage failure keeps the row).
    def delete_model(self, request, obj):
        try:
            services.model_delete(model_id=obj.id)
        except services.ModelsConflict as exc:
            self.message_user(request, f"{obj}: kept: {exc}", messages.ERROR)
        except StorageError as exc:
            self.message_user(request, f"{obj}: files could not be deleted, model kept: {exc}", messages.ERROR)

    def delete_queryset(self, request, queryset):
        for model in queryset:
            self.delete_model(request, model)
