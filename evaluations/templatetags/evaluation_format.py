from django import template

from evaluations.judge import NO_VERDICT

register = template.Library()


@register.filter
def pct(value, digits: int = 1) -> str:
    """0.8333 → "83.3 %"; None → "–"."""
    if value is None or value == "":
        return "–"
    return f"{100 * float(value):.{int(digits)}f} %"


@register.filter
def signed_points(value) -> str:
    """A delta of rates in percentage points: 0.125 → "+12.5 pts"."""
    if value is None:
        return "–"
    return f"{100 * float(value):+.1f} pts"


@register.filter
def number(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{float(value):.{int(digits)}f}"


@register.filter
def get_item(mapping, key):
    """``{{ scores|get_item:name }}``: a dict value by a variable key (None when absent)."""
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.filter
def judge_winner(winner) -> str:
    """One order's verdict: "A", "B", "tie", or "no winner named" for an answer that named none."""
    return "no winner named" if winner == NO_VERDICT else str(winner)
