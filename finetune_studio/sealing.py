"""Secrets the studio must read back (a webhook's signing secret), kept encrypted in the database.

Sealed with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key derived from ``SECRET_KEY``
(HKDF-SHA256, with a purpose string, so the key is used for nothing else). A database dump alone does not give
the secrets away. While rotating ``SECRET_KEY``, the old key goes in ``SECRET_KEY_FALLBACKS``: what it sealed is
still read, ``seal`` always uses the current key, and ``reseal`` moves a value to it (``manage.py
webhook_secrets_reseal``, after which the old key can go). A value sealed under a key the studio no longer has
cannot be read (``SealBroken``): the owner rotates that secret.
"""

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

PREFIX = "sealed:v1:"
_PURPOSE = b"finetune-studio sealed secrets v1"


class SealBroken(ValueError):
    """A sealed value no configured key opens (SECRET_KEY changed without the old one in the fallbacks)."""


def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _keys() -> MultiFernet:
    return MultiFernet([_fernet(key) for key in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]])


def seal(plaintext: str) -> str:
    return PREFIX + _keys().encrypt(plaintext.encode()).decode("ascii")


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def reseal(value: str) -> str:
    """The same secret sealed under the current SECRET_KEY (SealBroken when no configured key opens it)."""
    return seal(unseal(value))


def unseal(value: str) -> str:
    if not is_sealed(value):
        raise SealBroken("the value is not sealed")
    try:
        return _keys().decrypt(value.removeprefix(PREFIX).encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        raise SealBroken(
            "it was sealed under a SECRET_KEY this studio no longer has (add the old key to SECRET_KEY_FALLBACKS, "
            "or rotate the secret)"
        ) from None
