"""Promotion evidence, provided by an app above the registry (evaluations) through a registry of providers.

The registry cannot import evaluations (it sits below them): evaluations registers a provider at start
(``EvaluationsConfig.ready``) that answers "does a completed evaluation show this version is better?".
Without a provider nothing can pass a gate, and the refusal says so.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Evidence:
    passed: bool
    reason: str
    evaluation_id: int | None = None
    metric: str | None = None
    threshold: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    baseline: str | None = None  # what the version was compared against (the holder's or the base's name)
    # The second evaluation when the comparison went through the base (the local endpoint: see evaluations).
    holder_evaluation_id: int | None = None
    endpoint: str | None = None
    method: str | None = None
    missing: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


EvidenceProvider = Callable[..., Evidence]
_providers: list[EvidenceProvider] = []


def register_evidence_provider(provider: EvidenceProvider) -> None:
    """``provider(*, gate, candidate, holder) -> Evidence``; registering twice is harmless."""
    if provider not in _providers:
        _providers.append(provider)


def promotion_evidence(*, gate, candidate, holder) -> Evidence:
    """The first provider's answer (``holder``: the version the alias points to now, or None)."""
    if not _providers:
        return Evidence(
            passed=False,
            reason="no evidence provider is installed (the evaluations app provides one)",
            metric=gate.metric,
            threshold=gate.threshold,
            missing=["evaluations app"],
        )
    return _providers[0](gate=gate, candidate=candidate, holder=holder)
