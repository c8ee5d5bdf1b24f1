"""Model registry reads, always through the viewer's permissions (owner sees theirs, staff see all)."""

import hashlib
import logging
import posixpath
from typing import NamedTuple

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Q, QuerySet, Sum

from finetune_studio.errors import DomainNotFound
from finetune_studio.keys import download_filename
from finetune_studio.objects import bucket
from finetune_studio.ownership import visible_to

from . import artifacts
from .models import RegisteredModel

logger = logging.getLogger(__name__)

# Heavy JSON columns the list never shows (a manifest can hold hundreds of entries, the history thousands).
LIST_DEFERRED = (
    "files",
    "training_metrics",
    "eval_results",
    "provenance",
    "deploy_details",
    "live_deploy_details",
    "deploy_parity",
)


class ModelsNotFound(DomainNotFound):
    """No such model among those the user may see."""


def models_visible(*, user) -> QuerySet[RegisteredModel]:
    return visible_to(RegisteredModel.objects.select_related("registered_name"), user)


class ModelTotals(NamedTuple):
    size: int
    count: int
    with_files: int


def models_recent(*, user, limit: int) -> QuerySet[RegisteredModel]:
    return models_visible(user=user).exclude(status=RegisteredModel.Status.ARCHIVED)[:limit]


def model_totals(*, user) -> ModelTotals:
    """Every model the user sees (any status), their bytes, and how many have files yet: one query."""
    totals = models_visible(user=user).aggregate(
        size=Sum("total_size"), n=Count("id"), with_files=Count("id", filter=~Q(total_size=0))
    )
    return ModelTotals(size=totals["size"] or 0, count=totals["n"], with_files=totals["with_files"])


def model_list(*, user) -> QuerySet[RegisteredModel]:
    """``models_visible`` without the heavy JSON columns the list never shows."""
    return models_visible(user=user).defer(*LIST_DEFERRED)


def model_get(*, user, model_id: int) -> RegisteredModel:
    """The model if the user may see it; ModelsNotFound otherwise (someone else's model does not exist for them)."""
    model = models_visible(user=user).filter(id=model_id).first()
    if model is None:
        raise ModelsNotFound("No such model.")
    return model


def link_cache_timeout(ttl: int) -> int:
    """Cache a link for its lifetime less a margin (10 %, at most 5 min for short lives) so none is handed out dying."""
    margin = max(ttl // 10, min(300, ttl // 2))
    return max(ttl - margin, 1)


def _link_cache_key(key: str, filename: str, ttl: int) -> str:
    identity = f"{settings.STORAGE_BACKEND}|{settings.S3_PUBLIC_ENDPOINT_URL}|{key}|{filename}|{ttl}"
    return "models_app:link:" + hashlib.sha256(identity.encode()).hexdigest()


def presigned_links(keys: dict[str, str]) -> dict[str, str]:
    """``{name: object key}`` → ``{name: link}``; links are signed once and reused from the cache until near expiry.

    Local storage returns app-relative links: callers make them absolute for the request's host.
    """
    if not keys:
        return {}
    ttl = settings.PRESIGNED_URL_TTL
    filenames = {name: download_filename(posixpath.basename(key)) for name, key in keys.items()}
    cache_keys = {name: _link_cache_key(key, filenames[name], ttl) for name, key in keys.items()}
    try:
        cached = cache.get_many(list(cache_keys.values()))
    except Exception:
        # A cache outage must not take downloads with it; the links are signed fresh instead.
        logger.warning("Link cache unavailable; signing links without it", exc_info=True)
        cached = {}
    links, fresh = {}, {}
    models_bucket = bucket("models")
    for name, key in keys.items():
        link = cached.get(cache_keys[name])
        if link is None:
            link = models_bucket.presigned_url(key, filename=filenames[name], expires_in=ttl)
            fresh[cache_keys[name]] = link
        links[name] = link
    if fresh:
        try:
            cache.set_many(fresh, timeout=link_cache_timeout(ttl))
        except Exception:
            logger.warning("Link cache unavailable; links not cached", exc_info=True)
    return links


def model_download_links(model: RegisteredModel) -> dict:
    """``{"lora_adapters": link|None, "gguf": link|None, "files": {path: link}}`` for one model's files."""
    keys = {item["path"]: model.file_key(item["path"]) for item in model.files}
    links = presigned_links(keys)
    adapter = artifacts.adapter_entry(model.files)
    gguf = artifacts.gguf_entry(model.files)
    return {
        "lora_adapters": links[adapter["path"]] if adapter else None,
        "gguf": links[gguf["path"]] if gguf else None,
        "files": links,
    }


CHAT_USAGE_DAYS = 30


def model_chat_usage(*, model: RegisteredModel, days: int = CHAT_USAGE_DAYS) -> dict:
    """How much the version was asked in the last ``days`` days, by anyone who may (the chats count it, in the
    evaluations app's ChatUsage rows; the registry only reads them): requests, failures, tokens in and out."""
    from datetime import timedelta

    from django.utils import timezone

    since = timezone.localdate() - timedelta(days=days - 1)
    fields = ("requests", "failures", "prompt_tokens", "completion_tokens")
    totals = model.chat_usage.filter(day__gte=since).aggregate(**{field: Sum(field) for field in fields})
    return {"days": days, **{field: totals[field] or 0 for field in fields}}


def model_evaluations(*, user, model: RegisteredModel):
    return visible_to(model.evaluations.all(), user).order_by("-created_at", "-id")
