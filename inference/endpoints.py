"""Inference endpoints: the operator's named servers, and the one place that builds a backend for a name.

Three sources, all the operator's (a user only ever names an endpoint, never gives a URL):

- built in: ``local`` (the studio's own engine) and ``ollama`` (``OLLAMA_URL``);
- ``INFERENCE_ENDPOINTS``, a JSON list in the environment, for deployments run without the admin;
- ``InferenceEndpoint`` rows in the admin.

A name is defined once: settings entries may not reuse a built-in name, admin rows may not reuse either.
API keys are read from an environment variable or a file when a backend is built, never stored in a row
or a setting in clear, and never put in an error message or a response.

No Django models imported here: settings parse ``INFERENCE_ENDPOINTS`` with ``parse_endpoint_settings``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from .base import Backend, Refused, RetryPolicy

KINDS = ("ollama", "openai", "local")
BUILTIN_NAMES = ("local", "ollama")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_SETTINGS_KEYS = {"name", "kind", "url", "api_key_env", "api_key_file", "concurrency", "timeout", "enabled"}


class EndpointConfigError(ValueError):
    """An endpoint definition that cannot be used; the message names the field and the bad value."""


class UnknownEndpoint(Refused):
    pass


class EndpointUnavailable(Refused):
    """Disabled by the operator, or its API key cannot be read: nothing was sent anywhere."""


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    kind: str
    url: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    concurrency: int = 4
    timeout: float = 120.0
    enabled: bool = True
    source: str = "settings"  # "built-in" | "settings" | "admin"

    @property
    def key_source(self) -> str:
        """Where the key comes from, safe to show to an operator (a variable's name, a file's path)."""
        if self.api_key_env:
            return f"environment variable {self.api_key_env}"
        if self.api_key_file:
            return f"file {self.api_key_file}"
        return ""

    def api_key(self) -> str | None:
        """The key, read now (a rotated key needs no restart); EndpointUnavailable when it cannot be read."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                raise EndpointUnavailable(
                    f"endpoint '{self.name}': its API key variable {self.api_key_env} is not set", endpoint=self.name
                )
            return value
        if self.api_key_file:
            try:
                with open(self.api_key_file, encoding="utf-8") as handle:
                    value = handle.read().strip()
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise EndpointUnavailable(
                    f"endpoint '{self.name}': its API key file {self.api_key_file} cannot be read ({reason})",
                    endpoint=self.name,
                ) from None
            if not value:
                raise EndpointUnavailable(
                    f"endpoint '{self.name}': its API key file {self.api_key_file} is empty", endpoint=self.name
                )
            return value
        return None

    def build_backend(self, *, local_engine=None, retry: RetryPolicy | None = None) -> Backend:
        """The backend for this endpoint. Refuses a disabled endpoint or an unreadable key, before any request."""
        if not self.enabled:
            raise EndpointUnavailable(f"endpoint '{self.name}' is disabled by the operator", endpoint=self.name)
        options = {"endpoint": self.name, "concurrency": self.concurrency, "timeout": self.timeout, "retry": retry}
        if self.kind == "ollama":
            from .ollama_backend import OllamaBackend

            return OllamaBackend(url=self.url, **options)
        if self.kind == "openai":
            from .openai import OpenAIBackend

            return OpenAIBackend(url=self.url, api_key=self.api_key(), **options)
        from .local import LocalBackend

        if local_engine is None:
            raise ValueError("a local endpoint needs the process's LocalEngine")
        return LocalBackend(endpoint=self.name, engine=local_engine, timeout=self.timeout)


def validate_endpoint(
    *,
    name: str,
    kind: str,
    url: str = "",
    api_key_env: str = "",
    api_key_file: str = "",
    concurrency: int = 4,
    timeout: float = 120.0,
) -> dict[str, str]:
    """Field → message for everything wrong with one definition (empty when it is usable)."""
    errors: dict[str, str] = {}
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        errors["name"] = (
            f"{name!r} is not a valid endpoint name (lower-case letters, digits, '.', '_' and '-', at most 63)"
        )
    if kind not in KINDS:
        errors["kind"] = f"{kind!r} is not a kind of endpoint (use one of: {', '.join(KINDS)})"
    if kind in ("ollama", "openai"):
        parsed = urlparse(url or "")
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            errors["url"] = f"{url!r} is not an http:// or https:// URL naming a host"
    elif kind == "local" and url:
        errors["url"] = "a local endpoint runs in the studio's own workers: it takes no URL"
    if api_key_env and api_key_file:
        errors["api_key_env"] = "give the API key's environment variable or its file, not both"
    if api_key_env and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", api_key_env):
        errors["api_key_env"] = f"{api_key_env!r} is not an environment variable name"
    if (api_key_env or api_key_file) and kind != "openai":
        errors["api_key_env"] = f"a {kind} endpoint takes no API key"
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 256:
        errors["concurrency"] = f"{concurrency!r} is not a concurrency between 1 and 256"
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 1 <= timeout <= 24 * 3600:
        errors["timeout"] = f"{timeout!r} is not a timeout in seconds between 1 and 86400"
    return errors


def parse_endpoint_settings(raw: str | None, *, variable: str = "INFERENCE_ENDPOINTS") -> list[EndpointConfig]:
    """The endpoints of a JSON list; EndpointConfigError naming the entry and the field otherwise."""
    if raw is None or not raw.strip():
        return []
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise EndpointConfigError(f"{variable} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise EndpointConfigError(f"{variable} must be a JSON list of endpoint objects")
    endpoints: list[EndpointConfig] = []
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        where = f"{variable}[{position}]"
        if not isinstance(entry, dict):
            raise EndpointConfigError(f"{where} is not an object")
        if "api_key" in entry:
            raise EndpointConfigError(
                f"{where} gives an API key in clear: give api_key_env (a variable's name) or api_key_file instead"
            )
        unknown = sorted(set(entry) - _SETTINGS_KEYS)
        if unknown:
            raise EndpointConfigError(f"{where} has unknown keys: {', '.join(unknown)}")
        values = {
            "name": entry.get("name", ""),
            "kind": entry.get("kind", ""),
            "url": entry.get("url") or "",
            "api_key_env": entry.get("api_key_env") or "",
            "api_key_file": entry.get("api_key_file") or "",
            "concurrency": entry.get("concurrency", 4),
            "timeout": entry.get("timeout", 120),
        }
        errors = validate_endpoint(**values)
        if errors:
            field, message = next(iter(errors.items()))
            raise EndpointConfigError(f"{where}.{field}: {message}")
        if values["name"] in BUILTIN_NAMES:
            raise EndpointConfigError(f"{where}.name: '{values['name']}' is built in; choose another name")
        if values["name"] in seen:
            raise EndpointConfigError(f"{where}.name: '{values['name']}' is defined twice")
        enabled = entry.get("enabled", True)
        if not isinstance(enabled, bool):
            raise EndpointConfigError(f"{where}.enabled: {enabled!r} is not true or false")
        seen.add(values["name"])
        endpoints.append(EndpointConfig(**values, enabled=enabled, source="settings"))
    return endpoints
