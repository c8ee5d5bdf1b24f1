"""The spelling of registered model names and aliases, shared by the apps that accept them.

A registered name appears in URLs (``/api/v1/registry/<name>``) and integrations pin it, so it is
a short slug chosen once: letters, digits, ``.``, ``_`` and ``-``, starting with a letter or digit.
"""

import re

from django.utils.text import slugify

MAX_NAME_LENGTH = 100
MAX_ALIAS_LENGTH = 50
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]*$")


class InvalidRegisteredName(ValueError):
    """A registered name or alias that cannot be used; the message says why."""


def check_registered_name(value) -> str:
    """The cleaned name, or InvalidRegisteredName saying what is wrong with it."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRegisteredName("a registered name may not be blank")
    value = value.strip()
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidRegisteredName(f"a registered name has at most {MAX_NAME_LENGTH} characters")
    if not _NAME.match(value):
        raise InvalidRegisteredName(
            f"{value[:60]!r} is not a valid registered name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or a digit"
        )
    return value


def check_alias(value) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRegisteredName("an alias may not be blank")
    if len(value) > MAX_ALIAS_LENGTH or not _ALIAS.match(value):
        raise InvalidRegisteredName(
            f"{value[:60]!r} is not a valid alias: lower-case letters, digits, '_' and '-', "
            f"starting with a letter, at most {MAX_ALIAS_LENGTH} characters"
        )
    return value


def derive_registered_name(text: str, *, fallback: str) -> str:
    """A valid name made from free text (a job's or a model's name), ``fallback`` when nothing is left."""
    slug = slugify(text or "")[:MAX_NAME_LENGTH].strip("-_.")
    return slug if slug and _NAME.match(slug) else fallback
