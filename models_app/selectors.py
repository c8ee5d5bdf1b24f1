"""Model registry reads, always through the viewer's permissions (owner sees theirs, staff see all)."""

import hashlib
import logging
import posixpath

from django.conf import settings
from django.core.cache import cache
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from finetune_studio.keys import download_filename
from finetune_studio.objects import bucket
from finetune_studio.ownership import visible_to

from . import artifacts
from .models import RegisteredModel

logger = logging.getLogger(__name__)

# Heavy JSON columns the list never shows (a manifest can hold hundreds of entries, the history thousands).
LIST_DEFERRED = ("files", "training_metrics", "eval_results", "provenance", "deploy_details")


def models_visible(user) -> QuerySet[RegisteredModel]:
    return visible_to(RegisteredModel.objects.select_related("registered_name"), user)


def model_list(user) -> QuerySet[RegisteredModel]:
    return models_visible(user).defer(*LIST_DEFERRED)


def model_get(user, model_id) -> RegisteredModel:
    """The model if the user may see it; Http404 otherwise (someone else's model does not exist for them)."""
    return get_object_or_404(models_visible(user), id=model_id)


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


def model_evaluations(user, model: RegisteredModel):
    return visible_to(model.evaluations.all(), user).order_by("-created_at", "-id")
