"""Template filters every page uses (registered as template builtins: no {% load %} needed)."""

from django import template

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """Seconds as a short human duration: '45 s', '3 min 20 s', '2 h 5 min'."""
    try:
        total = int(round(float(seconds)))
    except (TypeError, ValueError):
        return "—"
    if total < 0:
        return "—"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


@register.filter
def signed_percent_points(delta) -> str:
    """An accuracy delta (0.123) as '+12.3 pts'."""
    try:
        value = float(delta) * 100
    except (TypeError, ValueError):
        return "—"
    return f"{value:+.1f} pts"


@register.filter
def delta_class(delta) -> str:
    try:
        value = float(delta)
    except (TypeError, ValueError):
        return "flat"
    if value > 0.0005:
        return "up"
    if value < -0.0005:
        return "down"
    return "flat"


@register.filter
def metric_label(name) -> str:
    """A metric key as words: 'eval_accuracy' → 'Eval accuracy', 'learning_rate' → 'Learning rate'."""
    words = str(name).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


@register.filter
def metric_value(value) -> str:
    """A training metric as people read it: 41331.3 → "41,331.3", 5.49473 → "5.4947", 200 → "200", 1.0 → "1"."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.1f}"
    return f"{value:.4f}".rstrip("0").rstrip(".") if abs(value) >= 1e-4 else f"{value:.2e}"


# How a generation headline is named beside its figure (lists and the dashboard).
HEADLINE_WORDS = {"token_f1": "token F1", "exact_match": "exact match"}


@register.filter
def headline(results) -> dict:
    """A generation evaluation's headline metric (``results.headline_metric``; token F1 for results from before it
    was recorded) as {"metric", "words", "delta"}: the figure its verdict was read from."""
    results = results if isinstance(results, dict) else {}
    metric = results.get("headline_metric") or "token_f1"
    return {
        "metric": metric,
        "words": HEADLINE_WORDS.get(metric, metric_label(metric)),
        "delta": (results.get("improvement") or {}).get(metric),
    }


@register.filter
def thousands(number) -> str:
    """185344 → "185,344" (no locale machinery: numbers read the same on every page)."""
    try:
        return f"{int(number):,}"
    except (TypeError, ValueError):
        return ""
