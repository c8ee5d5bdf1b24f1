"""Trainer hyperparameter schemas and the validation of user-given values against them.

A schema maps a parameter name to its spec::

    {"epochs": {"type": "integer", "default": 5, "minimum": 1, "maximum": 200, "help": "…"},
     "loss": {"type": "enum", "choices": ["log_loss", "hinge"], "default": "log_loss"},
     "tags": {"type": "array", "items": "string", "default": []}}

Types: integer, number, boolean, string, enum (``choices``), array (of strings). Values reach
the trainer as a JSON file and as ``HP_<NAME>`` environment variables, never through a shell.
"""

import json
import math
import re
from typing import Any

TYPES = ("integer", "number", "boolean", "string", "enum", "array")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_STRING_LENGTH = 10_000
MAX_ARRAY_ITEMS = 1_000


class SchemaError(ValueError):
    """An operator's schema that cannot be used; the message says which parameter and why."""


def check_schema(schema: Any) -> None:
    """Refuse schemas the validator could not apply (the admin and the built-in sync call this)."""
    if not isinstance(schema, dict):
        raise SchemaError("the hyperparameter schema must be a JSON object of name → spec")
    for name, spec in schema.items():
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise SchemaError(f"{name!r}: names are lowercase letters, digits and '_', starting with a letter")
        if not isinstance(spec, dict):
            raise SchemaError(f"{name}: the spec must be an object")
        kind = spec.get("type")
        if kind not in TYPES:
            raise SchemaError(f"{name}: type must be one of {', '.join(TYPES)}")
        if kind == "enum":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
                raise SchemaError(f"{name}: an enum needs a non-empty 'choices' list of strings")
            if any("\x00" in choice for choice in choices):
                raise SchemaError(
                    f"{name}: choices must not contain a NUL character (values become environment variables)"
                )
        if kind == "array" and spec.get("items", "string") != "string":
            raise SchemaError(f"{name}: only arrays of strings are supported")
        for bound in ("minimum", "maximum"):
            if bound in spec and (
                kind not in ("integer", "number")
                or not isinstance(spec[bound], (int, float))
                or isinstance(spec[bound], bool)
            ):
                raise SchemaError(f"{name}: {bound} applies to integer and number parameters and must be a number")
        if "default" in spec:
            _, error = _validate_value(spec, spec["default"])
            if error:
                raise SchemaError(f"{name}: the default is invalid ({error})")


def defaults(schema: dict) -> dict:
    return {name: spec["default"] for name, spec in schema.items() if "default" in spec}


def validate(schema: dict, values: Any) -> tuple[dict, dict[str, list[str]]]:
    """Return (cleaned values with defaults filled, per-field errors). Unknown names are errors."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        return {}, {"hyperparameters": ["must be a JSON object of name → value"]}
    cleaned: dict = {}
    errors: dict[str, list[str]] = {}
    for name in values:
        if name not in schema:
            known = ", ".join(sorted(schema)) or "none"
            errors[str(name)] = [f"unknown hyperparameter for this trainer (known: {known})"]
    for name, spec in schema.items():
        if name not in values:
            if "default" in spec:
                cleaned[name] = spec["default"]
            else:
                errors[name] = ["this hyperparameter is required"]
            continue
        value, error = _validate_value(spec, values[name])
        if error:
            errors[name] = [error]
        else:
            cleaned[name] = value
    return cleaned, errors


def _validate_value(spec: dict, value: Any) -> tuple[Any, str | None]:
    kind = spec["type"]
    if kind == "boolean":
        if not isinstance(value, bool):
            return None, "must be true or false"
        return value, None
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                return None, "must be a whole number"
        return _check_range(spec, value)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None, "must be a number"
        return _check_range(spec, value)
    if kind == "string":
        if not isinstance(value, str):
            return None, "must be a string"
        if len(value) > MAX_STRING_LENGTH:
            return None, f"must be at most {MAX_STRING_LENGTH} characters"
        if "\x00" in value:
            # Values become environment variables, which cannot hold NUL: the run would fail at its start.
            return None, "must not contain a NUL character (\\u0000)"
        return value, None
    if kind == "enum":
        if value not in spec["choices"]:
            return None, f"must be one of: {', '.join(spec['choices'])}"
        return value, None
    if kind == "array":
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return None, "must be a list of strings"
        if len(value) > MAX_ARRAY_ITEMS:
            return None, f"must have at most {MAX_ARRAY_ITEMS} items"
        if any("\x00" in item for item in value):
            return None, "items must not contain a NUL character (\\u0000)"
        return value, None
    return None, f"unsupported type {kind!r}"


def _check_range(spec: dict, value: int | float) -> tuple[Any, str | None]:
    if "minimum" in spec and value < spec["minimum"]:
        return None, f"must be at least {spec['minimum']}"
    if "maximum" in spec and value > spec["maximum"]:
        return None, f"must be at most {spec['maximum']}"
    return value, None


def from_form_value(spec: dict, raw: str | bool | None) -> Any:
    """Turn an HTML form value into the JSON value the validator expects (bad text stays text: it fails there)."""
    kind = spec["type"]
    if kind == "boolean":
        return bool(raw)
    if raw is None:
        return None
    text = str(raw).strip()
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            return text
    if kind == "array":
        return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]
    return str(raw)


def environment(values: dict) -> dict[str, str]:
    """``HP_<NAME>`` variables: strings as they are, booleans as true/false, others as JSON."""
    env = {}
    for name, value in values.items():
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = json.dumps(value)
        env[f"HP_{name.upper()}"] = text
    return env
