"""Inference endpoints the operator adds in the admin (besides the built-in ones and ``INFERENCE_ENDPOINTS``)."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from .endpoints import BUILTIN_NAMES, KINDS, EndpointConfig, validate_endpoint


class InferenceEndpoint(models.Model):
    """A named inference server. Its API key is never stored: only where to read it (a variable or a file)."""

    class Kind(models.TextChoices):
        OLLAMA = "ollama", "Ollama"
        OPENAI = "openai", "OpenAI-compatible (vLLM, llama-server, SGLang, TGI, LM Studio, LiteLLM)"
        LOCAL = "local", "The studio's own engine"

    name = models.CharField(max_length=63, unique=True, help_text="What users choose in evaluations.")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    url = models.CharField(
        max_length=500, blank=True, help_text="The server's root, e.g. http://vllm:8000 (none for local)."
    )
    api_key_env = models.CharField(
        "API key environment variable", max_length=100, blank=True, help_text="The variable's name, not the key."
    )
    api_key_file = models.CharField(
        "API key file", max_length=500, blank=True, help_text="A path on the workers, e.g. /run/secrets/vllm_key."
    )
    concurrency = models.PositiveSmallIntegerField(default=4, help_text="Requests in flight at once, per run.")
    timeout_seconds = models.PositiveIntegerField(default=120)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)
        constraints = [
            models.CheckConstraint(condition=models.Q(kind__in=KINDS), name="inference_endpoint_kind_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = validate_endpoint(
            name=self.name,
            kind=self.kind,
            url=self.url,
            api_key_env=self.api_key_env,
            api_key_file=self.api_key_file,
            concurrency=self.concurrency if self.concurrency is not None else 0,
            timeout=self.timeout_seconds if self.timeout_seconds is not None else 0,
        )
        errors = {field if field != "timeout" else "timeout_seconds": message for field, message in errors.items()}
        taken = set(BUILTIN_NAMES) | {endpoint.name for endpoint in settings.INFERENCE_ENDPOINTS}
        if self.name in taken and "name" not in errors:
            errors["name"] = f"'{self.name}' is already defined (built in or in INFERENCE_ENDPOINTS)"
        if errors:
            raise ValidationError(errors)

    def to_config(self) -> EndpointConfig:
        return EndpointConfig(
            name=self.name,
            kind=self.kind,
            url=self.url,
            api_key_env=self.api_key_env,
            api_key_file=self.api_key_file,
            concurrency=self.concurrency,
            timeout=float(self.timeout_seconds),
            enabled=self.enabled,
            source="admin",
        )
