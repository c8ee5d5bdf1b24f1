from django.contrib import admin

from .models import Sweep, SweepTrial


class SweepTrialInline(admin.TabularInline):
    model = SweepTrial
    extra = 0
    raw_id_fields = ("job", "model", "evaluation")
    readonly_fields = ("index", "hyperparameters", "error")


@admin.register(Sweep)
class SweepAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "trainer", "strategy", "n_trials", "concurrency", "status", "created_at")
    list_filter = ("status", "strategy")
    raw_id_fields = ("owner", "dataset")
    inlines = [SweepTrialInline]
