from django import forms
from django.contrib import admin, messages

from . import hyperparameters, services
from .models import Dataset, Job, JobMetric, Trainer
from .selectors import trainer_availability


class TrainerForm(forms.ModelForm):
    class Meta:
        model = Trainer
        fields = [
            "name",
            "description",
            "command",
            "hyperparameter_schema",
            "required_modules",
            "loads_base_model",
            "takes_validation_dataset",
            "record_formats",
            "takes_initial_adapter",
            "presets",
            "queue",
            "timeout_seconds",
            "enabled",
        ]

    def clean_presets(self):
        presets = self.cleaned_data["presets"]
        if not isinstance(presets, dict) or not all(isinstance(values, dict) for values in presets.values()):
            raise forms.ValidationError(
                'An object of base model name → hyperparameters, e.g. {"demo-base": {"epochs": 20}}.'
            )
        schema = self.cleaned_data.get("hyperparameter_schema") or {}
        for base, values in presets.items():
            errors = hyperparameters.validate(schema, values)[1] if isinstance(schema, dict) else {}
            if errors:
                raise forms.ValidationError(f"The preset for {base} does not fit the schema: {errors}")
        return presets

    def clean_command(self):
        command = self.cleaned_data["command"]
        if not isinstance(command, list) or not all(isinstance(part, str) for part in command):
            raise forms.ValidationError('An argument list of strings, e.g. ["{python}", "-m", "trainers.example"].')
        return command

    def clean_hyperparameter_schema(self):
        schema = self.cleaned_data["hyperparameter_schema"]
        try:
            hyperparameters.check_schema(schema)
        except hyperparameters.SchemaError as exc:
            raise forms.ValidationError(str(exc))
        return schema

    def clean_record_formats(self):
        formats = self.cleaned_data["record_formats"]
        known = [value for value in Dataset.Format.values if value]
        if not isinstance(formats, list) or not all(isinstance(name, str) and name in known for name in formats):
            raise forms.ValidationError(f"A list of record formats among {', '.join(known)}; [] takes any.")
        return formats

    def clean_required_modules(self):
        modules = self.cleaned_data["required_modules"]
        if not isinstance(modules, list) or not all(isinstance(name, str) and name for name in modules):
            raise forms.ValidationError('A list of importable module names, e.g. ["torch", "peft"].')
        return modules


@admin.register(Trainer)
class TrainerAdmin(admin.ModelAdmin):
    form = TrainerForm
    list_display = ("name", "enabled", "queue", "timeout_seconds", "availability", "updated_at")
    list_filter = ("enabled", "queue")
    search_fields = ("name", "description")
    readonly_fields = ("created_at", "updated_at")
    actions = ("sync_builtin",)

    @admin.display(description="Availability")
    def availability(self, trainer: Trainer) -> str:
        available, reason = trainer_availability(trainer)
        return "available" if available else reason

    @admin.action(description="Create missing built-in trainers")
    def sync_builtin(self, request, queryset):
        created = services.trainer_sync_builtin()
        self.message_user(request, f"Created: {', '.join(created)}" if created else "All built-in trainers exist.")


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "format",
        "task",
        "file_format",
        "records",
        "tool_call_answers",
        "size_bytes",
        "created_at",
    )
    list_filter = ("task", "format", "file_format")
    search_fields = ("name", "path", "owner__username", "sha256")
    list_select_related = ("owner",)
    readonly_fields = (
        "path",
        "file_format",
        "format",
        "task",
        "sha256",
        "size_bytes",
        "records",
        "labels",
        "label_counts",
        "tools",
        "tool_call_answers",
        "created_at",
        "updated_at",
    )
    actions = ("delete_with_object",)

    def has_add_permission(self, request) -> bool:
        return False  # uploads go through the validating service (page or API)

    @admin.action(description="Delete datasets and their stored files")
    def delete_with_object(self, request, queryset):
        for dataset in queryset:
            try:
                services.dataset_delete(dataset_id=dataset.id)
            except services.JobsConflict as exc:
                self.message_user(request, f"{dataset}: {exc}", messages.ERROR)


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "trainer", "status", "base_model", "created_at", "finished_at")
    list_filter = ("status", "trainer")
    search_fields = ("name", "base_model", "owner__username", "error_message")
    list_select_related = ("owner", "trainer")
    readonly_fields = (
        "status",
        "storage_prefix",
        "exit_code",
        "error_message",
        "progress",
        "metrics",
        "lease_owner",
        "lease_expires_at",
        "heartbeat_at",
        "created_at",
        "updated_at",
        "queued_at",
        "started_at",
        "finished_at",
    )
    actions = ("cancel_jobs", "sweep_stale")

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request, queryset):
        self._each_job(request, queryset, services.job_cancel)

    def _each_job(self, request, queryset, service) -> None:
        """``service(job_id=…)`` for each selected job; a refusal (409) becomes a warning, the others go on."""
        for job_id in queryset.values_list("id", flat=True):
            try:
                service(job_id=job_id)
            except services.JobsConflict as exc:
                self.message_user(request, str(exc), messages.WARNING)

    def has_delete_permission(self, request, obj=None):
        # As in the API: a job is cancelled before it is deleted.
        return super().has_delete_permission(request, obj) and (obj is None or obj.is_finished)

    def get_deleted_objects(self, objs, request):
        # A selection with running jobs: the finished ones are deleted, the others are named in a warning.
        return super().get_deleted_objects([obj for obj in objs if obj.is_finished], request)

    def delete_model(self, request, obj):
        services.job_delete(job_id=obj.id)  # the row locked first, the log objects removed too

    def delete_queryset(self, request, queryset):
        self._each_job(request, queryset, services.job_delete)

    @admin.action(description="Fail running jobs whose worker stopped sending heartbeats")
    def sweep_stale(self, request, queryset):
        self.message_user(request, f"{services.job_sweep_stale()} job(s) marked failed.")


@admin.register(JobMetric)
class JobMetricAdmin(admin.ModelAdmin):
    list_display = ("job", "step", "created_at")
    search_fields = ("job__name",)
    list_select_related = ("job",)
    readonly_fields = ("created_at",)
