"""Reading endpoints: every source merged, a backend for a name, and what each endpoint can do right now."""

from __future__ import annotations

import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings

from .base import Backend, InferenceError, RetryPolicy
from .endpoints import EndpointConfig, EndpointUnavailable, UnknownEndpoint

_engine_lock = threading.Lock()
_engine = None


def builtin_endpoints() -> list[EndpointConfig]:
    return [
        EndpointConfig(
            name="local",
            kind="local",
            concurrency=1,
            timeout=float(settings.EVALUATION_TASK_TIME_LIMIT),
            source="built-in",
        ),
        EndpointConfig(
            name="ollama",
            kind="ollama",
            url=settings.OLLAMA_URL or "",
            concurrency=settings.EVALUATION_DEFAULT_CONCURRENCY,
            timeout=float(settings.OLLAMA_TIMEOUT),
            # Without OLLAMA_URL there is no Ollama to ask: listed, and saying so.
            enabled=bool(settings.OLLAMA_URL),
            source="built-in",
        ),
    ]


def endpoint_list() -> list[EndpointConfig]:
    """Built-in, then INFERENCE_ENDPOINTS, then admin rows (a row reusing an earlier name is ignored)."""
    from .models import InferenceEndpoint

    endpoints = [*builtin_endpoints(), *settings.INFERENCE_ENDPOINTS]
    names = {endpoint.name for endpoint in endpoints}
    for row in InferenceEndpoint.objects.order_by("name"):
        if row.name not in names:  # the admin form refuses such rows; one created otherwise must not win
            endpoints.append(row.to_config())
            names.add(row.name)
    return endpoints


def endpoint_get(*, name: str) -> EndpointConfig:
    from .models import InferenceEndpoint

    for endpoint in [*builtin_endpoints(), *settings.INFERENCE_ENDPOINTS]:
        if endpoint.name == name:
            return endpoint
    row = InferenceEndpoint.objects.filter(name=name).first()
    if row is not None:
        return row.to_config()
    known = ", ".join(endpoint.name for endpoint in endpoint_list())
    raise UnknownEndpoint(f"there is no inference endpoint named '{name}' (known: {known})", endpoint=name)


def endpoint_usable(*, name: str) -> EndpointConfig:
    """The endpoint, checked without sending anything: UnknownEndpoint, or EndpointUnavailable with the reason.

    For a request that names an endpoint (an evaluation): disabled by the operator, its API key unreadable,
    or the local engine's packages missing on this installation are refused before anything is queued.
    """
    endpoint = endpoint_get(name=name)
    if not endpoint.enabled:
        raise EndpointUnavailable(f"endpoint '{name}' is disabled by the operator", endpoint=name)
    if endpoint.kind == "openai":
        endpoint.api_key()
    if endpoint.kind == "local":
        missing = [package for package in LOCAL_REQUIREMENTS if importlib.util.find_spec(package) is None]
        if missing:
            raise EndpointUnavailable(
                f"endpoint '{name}': the local engine needs {', '.join(missing)} (requirements-train.txt)",
                endpoint=name,
            )
    return endpoint


def endpoint_default_name() -> str:
    return settings.INFERENCE_DEFAULT_ENDPOINT


def local_engine():
    """This process's local engine (one model cache per worker), created on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from .local import LocalEngine

            _engine = LocalEngine(
                device=settings.LOCAL_INFERENCE_DEVICE,
                max_bytes=settings.LOCAL_INFERENCE_MAX_BYTES,
                batch_size=settings.LOCAL_INFERENCE_BATCH_SIZE,
            )
        return _engine


def endpoint_backend(*, name: str, retry: RetryPolicy | None = None) -> Backend:
    """The backend for an endpoint name. UnknownEndpoint / EndpointUnavailable (disabled, key unreadable)."""
    endpoint = endpoint_get(name=name)
    engine = local_engine() if endpoint.kind == "local" and endpoint.enabled else None
    return endpoint.build_backend(local_engine=engine, retry=retry)


@dataclass(frozen=True)
class EndpointStatus:
    name: str
    kind: str
    source: str
    enabled: bool
    available: bool
    reason: str
    models: list[str] | None  # None: this endpoint cannot list its models
    supports_schema: bool
    concurrency: int


LOCAL_REQUIREMENTS = ("torch", "transformers", "peft")


def endpoint_statuses() -> list[EndpointStatus]:
    """Each endpoint's availability, asked of the servers in parallel with a short timeout.

    The local engine is checked without importing torch: a page request must stay light.
    """
    endpoints = endpoint_list()
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(endpoints)))) as pool:
        return list(pool.map(_status, endpoints))


def endpoint_suggested_name(*, statuses: list[EndpointStatus]) -> str:
    """The endpoint a form preselects: the studio's default, or the local engine when the default cannot be
    reached and the local engine can (a studio with nothing but Python then works from its pages)."""
    default = endpoint_default_name()
    usable = [status for status in statuses if status.enabled and status.available]
    if any(status.name == default for status in usable):
        return default
    return next((status.name for status in usable if status.kind == "local"), default)


def _status(endpoint: EndpointConfig) -> EndpointStatus:
    def status(available: bool, reason: str = "", models=None, supports_schema=False) -> EndpointStatus:
        return EndpointStatus(
            name=endpoint.name,
            kind=endpoint.kind,
            source=endpoint.source,
            enabled=endpoint.enabled,
            available=available,
            reason=reason,
            models=models,
            supports_schema=supports_schema,
            concurrency=endpoint.concurrency,
        )

    if not endpoint.enabled:
        return status(False, "disabled by the operator")
    if endpoint.kind == "local":
        missing = [name for name in LOCAL_REQUIREMENTS if importlib.util.find_spec(name) is None]
        if missing:
            return status(False, f"the local engine needs {', '.join(missing)} (requirements-train.txt) on the workers")
        return status(True)
    probe = EndpointConfig(**{**endpoint.__dict__, "timeout": min(endpoint.timeout, settings.INFERENCE_STATUS_TIMEOUT)})
    try:
        backend = probe.build_backend(retry=RetryPolicy(max_retries=0))
    except InferenceError as exc:
        return status(False, str(exc))
    try:
        models = backend.list_models()
    except InferenceError as exc:
        return status(False, str(exc), supports_schema=backend.supports_schema)
    finally:
        backend.close()
    return status(True, models=models, supports_schema=backend.supports_schema)
