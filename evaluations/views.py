"""Evaluation pages: list, create form, and the side-by-side viewer (live while running)."""

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from finetune_studio.streaming import response_chunks
from inference.base import InferenceError

from . import chat, selectors, services
from .forms import ChatForm, EvaluationForm
from .local_models import has_adapter
from .models import Evaluation

# (key, label, higher is better)
METRIC_CARDS = (
    ("accuracy", "Accuracy", True),
    ("f1_macro", "Macro F1", True),
    ("precision_macro", "Macro precision", True),
    ("recall_macro", "Macro recall", True),
    ("f1_weighted", "Weighted F1", True),
    ("unparseable_rate", "Unparseable answers", False),
)


@login_required
def evaluation_list(request):
    evaluations = selectors.evaluations_visible(user=request.user)
    status = request.GET.get("status")
    if status in Evaluation.Status.values:
        evaluations = evaluations.filter(status=status)
    model_id = request.GET.get("model")
    if model_id and model_id.isdigit():
        evaluations = evaluations.filter(model_id=int(model_id))
    page = Paginator(evaluations, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "evaluations/evaluation_list.html",
        {"page": page, "statuses": Evaluation.Status.values, "status": status},
    )


def _endpoints(catalogue: list[str]) -> list:
    """Every endpoint with its availability and the models it offers (the local engine's: the catalogue).

    Servers are asked in parallel with a short timeout; nothing here imports torch.
    """
    from dataclasses import replace

    from inference.selectors import endpoint_statuses

    return [replace(status, models=catalogue) if status.kind == "local" else status for status in endpoint_statuses()]


def _local_ready(model, catalogue: list[str]) -> bool:
    """Whether the local endpoint can ask this model as is: its adapter in the registry, its base here."""
    return model.base_model in catalogue and has_adapter(model)


@login_required
def evaluation_create(request):
    from finetune_studio.base_models import base_model_catalogue
    from inference.selectors import endpoint_default_name

    catalogue = [entry.name for entry in base_model_catalogue()]
    models = list(selectors.evaluatable_models(user=request.user).order_by("-created_at")[:500])
    datasets = list(selectors.test_sets_of(user=request.user)[:500])
    for model in models:
        model.default_ollama_name = services.default_fine_tuned_name(model)
        model.local_ready = _local_ready(model, catalogue)
    endpoints = _endpoints(catalogue)
    default_endpoint = endpoint_default_name()
    initial = {"base_endpoint": default_endpoint, "fine_tuned_endpoint": default_endpoint}
    if request.GET.get("model", "").isdigit():
        initial["model"] = int(request.GET["model"])
        chosen = next((m for m in models if m.id == initial["model"]), None)
        if chosen is not None and chosen.local_ready:
            # "Evaluate" on a model trained here: its own adapter on its base, in the studio's engine.
            initial.update(base_endpoint="local", fine_tuned_endpoint="local", base_model_name=chosen.base_model)
    form = EvaluationForm(request.POST or None, models=models, datasets=datasets, endpoints=endpoints, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        model = next((m for m in models if m.id == data["model"]), None)
        if model is None:
            raise Http404
        try:
            evaluation = services.evaluation_start(
                user=request.user,
                model=model,
                test_set_path=data["test_set_path"],
                base_model_name=data["base_model_name"] or None,
                fine_tuned_name=data["fine_tuned_name"] or None,
                base_endpoint=data["base_endpoint"] or None,
                fine_tuned_endpoint=data["fine_tuned_endpoint"] or None,
                labels=data["labels"],
                max_examples=data["max_examples"],
                concurrency=data["concurrency"],
                name=data["name"],
                task=data["task"] or None,
                judge=form.judge(),
            )
        except services.EvaluationsInvalid as exc:
            for field, reason in exc.errors.items():
                field = {
                    "fine_tuned_names": "fine_tuned_name",
                    "endpoint": "fine_tuned_endpoint",
                    "judge": "judge_model",
                }.get(field, field)
                form.add_error(field if field in form.fields else None, reason)
        else:
            messages.success(request, "Evaluation started.")
            return redirect("evaluation-detail", pk=evaluation.id)
    return render(
        request,
        "evaluations/evaluation_form.html",
        {
            "form": form,
            "models": models,
            "datasets": datasets,
            "endpoints": endpoints,
            "default_endpoint": default_endpoint,
            "selected_base_endpoint": form["base_endpoint"].value() or default_endpoint,
            "selected_fine_tuned_endpoint": form["fine_tuned_endpoint"].value() or default_endpoint,
        },
    )


def _cards(results: dict) -> list[dict]:
    cards = []
    for key, label, higher_is_better in METRIC_CARDS:
        base, fine_tuned = results["base"].get(key), results["fine_tuned"].get(key)
        delta = results["improvement"].get(key, 0.0)
        better = delta > 0 if higher_is_better else delta < 0
        direction = "flat" if abs(delta) < 1e-9 else ("up" if better else "down")
        arrow = {"flat": "→", "up": "▲", "down": "▼"}[direction]
        cards.append(
            {
                "key": key,
                "label": label,
                "base": base,
                "fine_tuned": fine_tuned,
                "delta": delta,
                "direction": direction,
                "arrow": arrow,
            }
        )
    return cards


def _metric_name(key: str) -> str:
    label = next((label for name, label, _higher in METRIC_CARDS if name == key), key)
    return label[:1].lower() + label[1:]


def _headline(results: dict) -> dict | None:
    """Which fine-tuned candidate the page headlines and why (only when there are several)."""
    headline = results.get("headline")
    if not headline:
        return None
    return {
        **headline,
        "metric_name": _metric_name(headline["metric"]),
        "tie_breaker_name": _metric_name(headline["tie_breaker"]),
        "out_of": len(headline["ranking"]),
    }


def _candidate_rows(results: dict, candidates: list[dict]) -> list[dict]:
    """Every candidate's scores and, for each fine-tuned one, its own comparison with the base."""
    base_name = results["base"]["model"]
    headline = results["fine_tuned"]["model"]
    comparisons = results.get("comparisons") or {
        headline: {"improvement": results["improvement"], "significance": results.get("significance", {})}
    }
    rows = []
    for scores in candidates:
        comparison = comparisons.get(scores["model"]) if scores["model"] != base_name else None
        rows.append(
            {
                "scores": scores,
                "is_base": scores["model"] == base_name,
                "is_headline": scores["model"] == headline,
                "accuracy_delta": comparison["improvement"]["accuracy"] if comparison else None,
                "verdict": comparison["significance"].get("verdict", "") if comparison else "base",
            }
        )
    return rows


def _heatmap(scores: dict) -> dict:
    matrix = scores["confusion_matrix"]
    rows = []
    for label, counts in zip(matrix["labels"], matrix["matrix"], strict=True):
        total = sum(counts) or 1
        cells = []
        for column, count in zip(matrix["columns"], counts, strict=True):
            share = count / total
            cells.append(
                {
                    "count": count,
                    "share": round(100 * share),
                    "alpha": round(0.08 + 0.8 * share, 2) if count else 0,
                    "diagonal": column == label,
                }
            )
        rows.append({"label": label, "cells": cells, "total": sum(counts)})
    return {"model": scores["model"], "columns": matrix["columns"], "rows": rows}


@login_required
def evaluation_detail(request, pk: int):
    evaluation = selectors.evaluation_get(user=request.user, evaluation_id=pk)
    results = evaluation.results or {}
    plans = evaluation.candidate_plans
    context = {
        "evaluation": evaluation,
        "results": results,
        "base_plan": plans[0],
        "fine_tuned_plans": plans[1:],
        "parity": results.get("parity"),
        "test_set": selectors.evaluation_test_set(evaluation=evaluation),
    }
    if results.get("task") == "generation":
        from .generation_page import page_context

        context.update(page_context(evaluation, results, request.GET.get("show", "all")))
    elif results.get("base"):
        by_model = results.get("candidates") or {
            results["base"]["model"]: results["base"],
            results["fine_tuned"]["model"]: results["fine_tuned"],
        }
        # In the order they were given (the base first): a JSON column does not keep its keys' order.
        candidates = [by_model[name] for name in evaluation.candidates if name in by_model] or list(by_model.values())
        context.update(
            {
                "cards": _cards(results),
                "per_label": [
                    {
                        "label": label,
                        "base": results["base"]["per_label"][label],
                        "fine_tuned": results["fine_tuned"]["per_label"][label],
                    }
                    for label in results["labels"]
                ],
                "heatmaps": [_heatmap(scores) for scores in candidates],
                "candidate_rows": _candidate_rows(results, candidates),
                "significance": results.get("significance", {}),
                "headline": _headline(results),
                "examples": selectors.evaluation_side_by_side(evaluation=evaluation),
            }
        )
    return render(request, "evaluations/evaluation_detail.html", context)


@login_required
@require_POST
def evaluation_cancel(request, pk: int):
    evaluation = selectors.evaluation_get(user=request.user, evaluation_id=pk)
    try:
        services.evaluation_cancel(evaluation=evaluation)
    except services.EvaluationsConflict as exc:
        messages.warning(request, str(exc).capitalize() + ".")
    else:
        messages.success(request, "Evaluation cancelled.")
    return redirect("evaluation-detail", pk=pk)


@login_required
@require_POST
def evaluation_retry(request, pk: int):
    """The page's Retry: the API's service, so the same rule (failed only) and the stored answers are kept."""
    try:
        evaluation = selectors.evaluation_get(user=request.user, evaluation_id=pk)
    except Evaluation.DoesNotExist:
        raise Http404("No such evaluation.")
    try:
        services.evaluation_retry(evaluation=evaluation)
    except services.EvaluationsConflict as exc:
        reason = str(exc)
        messages.warning(request, reason[:1].upper() + reason[1:] + ".")
    except services.EvaluationQueueUnavailable as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Evaluation queued again; the answers already stored are kept and not asked again.")
    return redirect("evaluation-detail", pk=pk)


@login_required
def model_parity(request, pk: int):
    """The model page's "Check parity": a test set (and variants) → a parity check, then its evaluation page."""
    from finetune_studio.base_models import base_model_catalogue

    from . import parity

    model = selectors.evaluatable_models(user=request.user).filter(id=pk).first()
    if model is None:
        raise Http404("No such model.")
    datasets = list(selectors.test_sets_of(user=request.user)[:500])
    errors: dict[str, str] = {}
    chosen = {"test_set_path": "", "variants": "", "max_examples": "", "task": ""}
    if request.method == "POST":
        chosen = {key: request.POST.get(key, "").strip() for key in chosen}
        max_examples = None
        if chosen["max_examples"]:
            if not chosen["max_examples"].isdigit() or not 1 <= int(chosen["max_examples"]) <= 1_000_000:
                errors["max_examples"] = "a whole number from 1 to 1000000"
            else:
                max_examples = int(chosen["max_examples"])
        variants = [item.strip() for item in chosen["variants"].replace(",", " ").split() if item.strip()]
        if not errors:
            try:
                evaluation = parity.parity_check_start(
                    user=request.user,
                    model=model,
                    test_set_path=chosen["test_set_path"],
                    variants=variants,
                    task=chosen["task"] or None,
                    max_examples=max_examples,
                )
            except services.EvaluationsInvalid as exc:
                errors.update(exc.errors)
            else:
                messages.success(request, "Parity check started.")
                return redirect("evaluation-detail", pk=evaluation.id)
    catalogue = [entry.name for entry in base_model_catalogue()]
    return render(
        request,
        "evaluations/parity_form.html",
        {
            "model": model,
            "datasets": datasets,
            "chosen": chosen,
            "errors": errors,
            "local_ready": _local_ready(model, catalogue),
        },
        status=400 if errors else 200,
    )


@login_required
def model_chat(request, pk: int):
    """The model page's Chat: a conversation with the version, kept in the page's form (nothing is stored).

    Without JavaScript the form posts here and the page comes back with the answer; the page's script posts to
    ``model_chat_stream`` instead and shows the answer as it is generated."""
    model = _chat_model(request, pk)
    unavailable = None
    try:
        target = chat.chat_target_for_model(model=model, name=model.name)
    except chat.ChatUnavailable as exc:
        target, unavailable = None, str(exc)
    asked = ChatForm(request.POST if request.method == "POST" else None)
    chosen = asked.chosen
    turns, errors = [], {}
    if asked.is_bound and target is not None:
        turns, errors = asked.turns, asked.errors_by_field
    if asked.is_bound and target is not None and not errors:
        try:
            reply = chat.chat_page_reply(user=request.user, target=target, turns=turns, **asked.question)
        except chat.ChatInvalid as exc:
            errors.update(exc.errors)
        except (chat.ChatUnavailable, InferenceError) as exc:
            errors["model"] = str(exc)
        else:
            turns, chosen["message"] = reply.turns, ""
    return render(
        request,
        "evaluations/model_chat.html",
        {
            "model": model,
            "target": target,
            "unavailable": unavailable,
            "turns": turns,
            "history": json.dumps(turns),
            "chosen": chosen,
            "errors": errors,
            "max_tokens_limit": settings.CHAT_MAX_TOKENS,
        },
        status=400 if errors and "model" not in errors else 200,
    )


@login_required
@require_POST
def model_chat_stream(request, pk: int):
    """The Chat form's answer as it is generated, as JSON lines: ``{"delta": text}`` pieces, then
    ``{"turns": [...], "history": "..."}`` (the conversation to carry on with), or ``{"error": reason}`` when the
    model fails part-way. What cannot be asked is a 400 (409: nothing serves the version) of ``{"errors": {field:
    reason}}`` before anything is asked."""
    model = _chat_model(request, pk)
    try:
        target = chat.chat_target_for_model(model=model, name=model.name)
    except chat.ChatUnavailable as exc:
        return JsonResponse({"errors": {"model": str(exc)}}, status=409)
    asked = ChatForm(request.POST)
    errors = asked.errors_by_field
    if not errors:
        try:
            pieces = chat.chat_page_stream(user=request.user, target=target, turns=asked.turns, **asked.question)
        except chat.ChatInvalid as exc:
            errors.update(exc.errors)
    if errors:
        return JsonResponse({"errors": errors}, status=400)
    lines = (json.dumps(line).encode() + b"\n" for line in _chat_stream_lines(pieces))
    response = StreamingHttpResponse(response_chunks(request, lines), content_type="application/x-ndjson")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # a proxy in front passes each piece on as it comes
    return response


def _chat_stream_lines(pieces):
    try:
        for piece in pieces:
            if isinstance(piece, chat.ChatReply):
                yield {"turns": piece.turns, "history": json.dumps(piece.turns)}
            else:
                yield {"delta": piece.text}
    except (chat.ChatUnavailable, InferenceError) as exc:
        yield {"error": str(exc)}


def _chat_model(request, pk: int):
    model = selectors.evaluatable_models(user=request.user).filter(id=pk).first()
    if model is None:
        raise Http404("No such model.")
    return model
