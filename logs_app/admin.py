from django.contrib import admin, messages

from . import retention
from .models import LogCursor, LogEntry, LogStream


@admin.register(LogEntry)
class LogEntryAdmin(admin.ModelAdmin):
    list_display = ("job", "seq", "timestamp", "level", "source", "short_message")
    list_filter = ("level", "source")
    search_fields = ("message", "job__name", "=job__id")
    readonly_fields = ("job", "seq", "timestamp", "level", "message", "source", "created_at")
    list_select_related = ("job",)
    raw_id_fields = ("job",)
    ordering = ("-id",)
    show_full_result_count = False  # COUNT(*) over millions of lines on every page is not worth it

    @admin.display(description="message")
    def short_message(self, entry: LogEntry) -> str:
        return entry.message[:120]

    def has_add_permission(self, request) -> bool:
        return False  # lines come in through log_lines_append only


@admin.register(LogStream)
class LogStreamAdmin(admin.ModelAdmin):
    list_display = ("job", "last_seq", "line_count", "warn_count", "error_count", "archived_at", "updated_at")
    list_filter = (("archived_at", admin.EmptyFieldListFilter),)
    search_fields = ("=job__id", "job__name", "archive_key")
    readonly_fields = [field.name for field in LogStream._meta.fields]
    list_select_related = ("job",)
    actions = ["archive_now"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Archive the log now (finished jobs past the retention period)")
    def archive_now(self, request, queryset):
        archived = 0
        for job_id in queryset.values_list("job_id", flat=True):
            try:
                archived += retention.log_archive_job(job_id=job_id)
            except Exception as exc:
                self.message_user(request, f"Job #{job_id}: {exc}", level=messages.ERROR)
        self.message_user(request, f"{archived} log(s) archived.")


@admin.register(LogCursor)
class LogCursorAdmin(admin.ModelAdmin):
    list_display = ("job", "key", "offset", "lines_read", "updated_at")
    search_fields = ("key", "=job__id")
    readonly_fields = ("job", "key", "offset", "lines_read", "updated_at")
    list_select_related = ("job",)
    list_filter = ("updated_at",)

    def has_add_permission(self, request) -> bool:
        return False
