"""Hyperparameters as the trainer receives them: checked again against the schema, defaults filled.

The runner validates before starting, but the trainer can also be run by hand (or by an operator's
edited schema), so it refuses what it cannot honour with the name of the parameter and why.
Importable without torch: a bad file fails in milliseconds, before the heavy imports.
"""

import json
import math
from pathlib import Path

from .definition import HYPERPARAMETER_SCHEMA


class HyperparameterError(ValueError):
    pass


def _check(name: str, spec: dict, value):
    kind = spec["type"]
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise HyperparameterError(f"hyperparameter '{name}' must be an integer, got {value!r}")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HyperparameterError(f"hyperparameter '{name}' must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise HyperparameterError(f"hyperparameter '{name}' must be finite, got {value!r}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise HyperparameterError(f"hyperparameter '{name}' must be true or false, got {value!r}")
    elif kind == "string":
        if not isinstance(value, str):
            raise HyperparameterError(f"hyperparameter '{name}' must be a string, got {value!r}")
    elif kind == "enum":  # the jobs app's spelling of a closed choice: {"type": "enum", "choices": [...]}
        if value not in spec.get("choices", []):
            choices = ", ".join(map(str, spec.get("choices", [])))
            raise HyperparameterError(f"hyperparameter '{name}' must be one of {choices}, got {value!r}")
    elif kind == "array" and (
        not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value)
    ):
        raise HyperparameterError(f"hyperparameter '{name}' must be a non-empty list of names, got {value!r}")
    if "minimum" in spec and value < spec["minimum"]:
        raise HyperparameterError(f"hyperparameter '{name}' must be at least {spec['minimum']}, got {value!r}")
    if "maximum" in spec and value > spec["maximum"]:
        raise HyperparameterError(f"hyperparameter '{name}' must be at most {spec['maximum']}, got {value!r}")
    if "enum" in spec and value not in spec["enum"]:
        choices = ", ".join(map(str, spec["enum"]))
        raise HyperparameterError(f"hyperparameter '{name}' must be one of {choices}, got {value!r}")
    return value


def resolve_hyperparameters(given: dict, schema: dict = HYPERPARAMETER_SCHEMA) -> tuple[dict, list[str]]:
    """Return (complete hyperparameters, names that this trainer ignores)."""
    if not isinstance(given, dict):
        raise HyperparameterError("the hyperparameters file must hold a JSON object")
    resolved = {}
    for name, spec in schema.items():
        resolved[name] = _check(name, spec, given[name]) if name in given else spec["default"]
    ignored = sorted(set(given) - set(schema))
    return resolved, ignored


def read_hyperparameters(path: str | None, schema: dict = HYPERPARAMETER_SCHEMA) -> tuple[dict, list[str]]:
    if not path:
        return resolve_hyperparameters({}, schema)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise HyperparameterError(f"cannot read HYPERPARAMS_FILE {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HyperparameterError(
            f"HYPERPARAMS_FILE is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    return resolve_hyperparameters(data, schema)
