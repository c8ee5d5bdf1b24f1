"""Sweep pages: the list with a create form, and a live sweep page (trials, best so far, a plot per
hyperparameter against the metric, cancel, promote the best)."""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from finetune_studio.base_models import base_model_catalogue
from finetune_studio.errors import DomainConflict as Conflict
from finetune_studio.records import METRICS_BY_TASK, TASK_NAMES
from inference.selectors import endpoint_default_name, endpoint_statuses, endpoint_suggested_name
from jobs.models import Dataset, Trainer
from models_app import artifacts, registry
from models_app.models import RegisteredModel

from . import selectors, services

PLOT_WIDTH, PLOT_HEIGHT, PAD = 240, 120, 12


def _int(raw, default=None):
    raw = (raw or "").strip()
    return int(raw) if raw.lstrip("-").isdigit() else default


@login_required
@require_http_methods(["GET", "POST"])
def sweep_list(request):
    endpoints = endpoint_statuses()
    suggested = {"endpoint": endpoint_suggested_name(statuses=endpoints)}
    context = {
        "sweeps": selectors.sweep_list(user=request.user)[:100],
        "trainers": Trainer.objects.exclude(name=Trainer.EXTERNAL).filter(enabled=True),
        "datasets": Dataset.objects.filter(owner=request.user)[:200],
        "versions": [
            model
            for model in RegisteredModel.objects.filter(owner=request.user, status=RegisteredModel.Status.READY)
            .select_related("registered_name")
            .order_by("-id")[:200]
            if artifacts.has_lora_adapter(model.files)
        ],
        "base_models": [entry.name for entry in base_model_catalogue()],
        "endpoints": endpoints,
        "metric_groups": [(TASK_NAMES[task], metrics) for task, metrics in METRICS_BY_TASK.items()],
        "given": request.POST if request.method == "POST" else suggested,
    }
    if request.method == "POST":
        try:
            space = json.loads(request.POST.get("search_space") or "{}")
            sweep = services.sweep_create(
                owner=request.user,
                name=request.POST.get("name", ""),
                trainer_name=request.POST.get("trainer", ""),
                dataset_id=_int(request.POST.get("dataset")),
                base_model=request.POST.get("base_model", ""),
                strategy=request.POST.get("strategy", "grid"),
                search_space=space,
                n_trials=_int(request.POST.get("n_trials")),
                seed=_int(request.POST.get("seed")),
                concurrency=_int(request.POST.get("concurrency"), 1),
                test_set_path=request.POST.get("test_set_path", ""),
                endpoint=request.POST.get("endpoint", "") or endpoint_default_name(),
                evaluation_base=request.POST.get("evaluation_base", ""),
                metric=request.POST.get("metric") or None,
                registered_name=request.POST.get("registered_name", ""),
                validation_dataset_id=_int(request.POST.get("validation_dataset")),
                initial_model_id=_int(request.POST.get("initial_model")),
            )
        except ValueError as exc:  # SweepInvalid, or the search space is not JSON
            context["error"] = f"{getattr(exc, 'field', 'search_space')}: {exc}"
            return render(request, "sweeps/sweep_list.html", context, status=400)
        messages.success(request, f"Sweep “{sweep.name}” started: {sweep.n_trials} trials.")
        return redirect("sweep-detail", pk=sweep.id)
    return render(request, "sweeps/sweep_list.html", context)


def _plots(sweep, ranking) -> list[dict]:
    """One small scatter per searched hyperparameter: x its value (categories spaced evenly), y the metric."""
    rows = [row for row in ranking["ranking"] if row.get("score") is not None]
    plots = []
    for name in sorted(sweep.search_space):
        values = [row["hyperparameters"].get(name) for row in rows]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        categories = sorted({json.dumps(v) for v in values})
        xs = values if numeric else [categories.index(json.dumps(v)) for v in values]
        scores = [row["score"] for row in rows]
        points = []
        if rows:
            low_x, high_x = min(xs), max(xs)
            low_y, high_y = min(scores), max(scores)
            for row, x, y in zip(rows, xs, scores, strict=True):
                px = PAD + (PLOT_WIDTH - 2 * PAD) * ((x - low_x) / (high_x - low_x) if high_x > low_x else 0.5)
                py = (
                    PLOT_HEIGHT
                    - PAD
                    - (PLOT_HEIGHT - 2 * PAD) * ((y - low_y) / (high_y - low_y) if high_y > low_y else 0.5)
                )
                points.append(
                    {
                        "x": round(px, 1),
                        "y": round(py, 1),
                        "trial": row["trial"],
                        "value": row["hyperparameters"].get(name),
                        "score": y,
                    }
                )
        plots.append({"name": name, "points": points, "width": PLOT_WIDTH, "height": PLOT_HEIGHT})
    return plots


@login_required
def sweep_detail(request, pk: int):
    sweep = selectors.sweep_get(user=request.user, sweep_id=pk)
    trials = selectors.sweep_trials(sweep=sweep)
    ranking = selectors.sweep_ranking(sweep=sweep, trials=trials)
    rows = [{"trial": trial, "state": selectors.trial_state(trial, sweep_status=sweep.status)} for trial in trials]
    by_trial = {row["trial"]: row for row in ranking["ranking"]}
    for row in rows:
        row["result"] = by_trial.get(row["trial"].index)
    context = {"sweep": sweep, "rows": rows, "ranking": ranking, "plots": _plots(sweep, ranking)}
    return render(request, "sweeps/sweep_detail.html", context)


@login_required
@require_POST
def sweep_cancel(request, pk: int):
    sweep = selectors.sweep_get(user=request.user, sweep_id=pk)
    try:
        services.sweep_cancel(sweep_id=sweep.id)
    except Conflict as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, "Sweep cancelled with its queued and running jobs.")
    return redirect("sweep-detail", pk=sweep.id)


@login_required
@require_POST
def sweep_promote(request, pk: int):
    sweep = selectors.sweep_get(user=request.user, sweep_id=pk)
    try:
        moved = services.sweep_promote_best(sweep_id=sweep.id, moved_by=request.user)
    except registry.GateRefused as exc:
        messages.error(request, f"Refused by the gate: {exc.evidence.reason}")
    except (Conflict, registry.RegistryInvalid, registry.OverrideNotAllowed) as exc:
        messages.error(request, str(getattr(exc, "detail", exc)))
    else:
        messages.success(request, f"champion now points to v{moved['version']} of {moved['registered_name']}.")
    return redirect("sweep-detail", pk=sweep.id)
