from django.contrib import admin, messages

from . import services
from .models import ChatUsage, Evaluation, JudgeAnswer, Prediction


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "model", "status", "base_model_name", "fine_tuned_name", "created_at")
    list_filter = ("status", "created_at")
    search_fields = ("name", "base_model_name", "fine_tuned_name", "test_set_path", "owner__username")
    list_select_related = ("owner", "model")
    readonly_fields = (
        "status",
        "progress",
        "results",
        "examples",
        "config",
        "started_at",
        "completed_at",
        "heartbeat_at",
        "attempts",
        "attempts_since_retry",
        "error_message",
        "created_at",
        "updated_at",
    )
    raw_id_fields = ("owner", "model", "job")
    actions = ["cancel_selected"]

    @admin.action(description="Cancel selected evaluations")
    def cancel_selected(self, request, queryset):
        cancelled = 0
        for evaluation in queryset.filter(status__in=Evaluation.UNFINISHED):
            try:
                services.evaluation_cancel(evaluation=evaluation)
                cancelled += 1
            except services.EvaluationsConflict:
                pass  # finished between the listing and the click: nothing left to cancel
        self.message_user(request, f"{cancelled} evaluation(s) cancelled.", messages.SUCCESS)


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ("evaluation", "index", "candidate", "expected", "parsed_label", "correct", "latency_ms")
    list_filter = ("correct",)
    search_fields = ("candidate", "expected", "parsed_label", "input_text")
    list_select_related = ("evaluation",)
    readonly_fields = ("created_at",)
    raw_id_fields = ("evaluation",)


@admin.register(JudgeAnswer)
class JudgeAnswerAdmin(admin.ModelAdmin):
    """The judge's cached answers: read-only (deleting one only makes the next run ask again)."""

    list_display = ("id", "owner", "endpoint", "judge_model", "winner", "created_at")
    list_filter = ("endpoint", "winner")
    search_fields = ("judge_model", "owner__username", "reason")
    list_select_related = ("owner",)
    readonly_fields = ("owner", "key", "endpoint", "judge_model", "winner", "reason", "content", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ChatUsage)
class ChatUsageAdmin(admin.ModelAdmin):
    """Who asked which model how much, per day: counts only, written by the chats themselves (read-only)."""

    list_display = (
        "day",
        "owner",
        "model_name",
        "source",
        "requests",
        "failures",
        "prompt_tokens",
        "completion_tokens",
    )
    list_filter = ("source", "day")
    search_fields = ("model_name", "owner__username")
    list_select_related = ("owner",)
    date_hierarchy = "day"
    readonly_fields = [field.name for field in ChatUsage._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
