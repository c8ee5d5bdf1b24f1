from django.contrib import admin

from .models import InferenceEndpoint


@admin.register(InferenceEndpoint)
class InferenceEndpointAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "url", "key_source", "concurrency", "timeout_seconds", "enabled", "updated_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "url")
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "kind", "url", "enabled")}),
        (
            "API key (never stored here: where the workers read it)",
            {"fields": ("api_key_env", "api_key_file")},
        ),
        ("Limits", {"fields": ("concurrency", "timeout_seconds")}),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="API key from")
    def key_source(self, endpoint: InferenceEndpoint) -> str:
        return endpoint.to_config().key_source or "—"
