"""The domain exceptions every app's services raise (never DRF's): each app subclasses these as
``<App>Invalid``, ``<App>Conflict``, ``<App>NotFound`` (and ``<App>Unavailable`` for a refusing queue).

The API's exception handler (``finetune_studio.api.exception_handler``) maps them once: 400 with the field
errors, 409, 404, 503. Pages and the admin catch them and show the message.
"""

from django.http import Http404


class DomainError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(self, message: str = "", *, errors: dict | None = None):
        self.errors = errors or {}
        super().__init__(message or _first_error(self.errors) or self.__class__.__doc__ or "")


class DomainInvalid(DomainError):
    """Input that cannot be used: ``errors`` maps each field to its messages."""

    status_code = 400
    code = "invalid"


class DomainConflict(DomainError):
    """The object's state does not allow this; the message says how to get there."""

    status_code = 409
    code = "conflict"


class DomainNotFound(DomainError, Http404):
    """No such object (or not one the user may see: others' objects do not exist for them).

    Raised by the selectors ``<entity>_get(*, user, <entity>_id)``; an Http404 too, so pages answer 404 as well.
    """

    status_code = 404
    code = "not_found"


class DomainUnavailable(DomainError):
    """A backing service (the task queue) refused; nothing was left half done."""

    status_code = 503
    code = "service_unavailable"


def _first_error(errors: dict) -> str:
    for field, messages in errors.items():
        if isinstance(messages, dict):
            return _first_error({f"{field}.{name}": value for name, value in messages.items()})
        if isinstance(messages, (list, tuple)):
            return f"{field}: {messages[0]}" if messages else field
        return f"{field}: {messages}"
    return ""
