"""Object keys are built here, by the server, from validated pieces.

User-given names and relative paths pass ``clean_name`` / ``clean_relative_path``
first; anything that could escape its prefix (``..``, separators, encodings,
control characters) is refused with a reason, before any storage call.
"""

import re
import unicodedata

MAX_NAME_BYTES = 200
MAX_PATH_SEGMENTS = 8
_FORBIDDEN_CHARS = set('\\:;#?*%"<>|')
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


class InvalidName(ValueError):
    """A user-given name or path that cannot be used; the message says why."""


def clean_name(name: str, *, what: str = "name") -> str:
    """One path segment: no separators, no dot-only names, no control or reserved characters."""
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a string")
    if name == "":
        raise InvalidName(f"{what} is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise InvalidName(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    if name in (".", ".."):
        raise InvalidName(f"{what} may not be '.' or '..'")
    if "/" in name:
        raise InvalidName(f"{what} may not contain '/'")
    bad = sorted({ch for ch in name if ch in _FORBIDDEN_CHARS})
    if bad:
        raise InvalidName(f"{what} may not contain {' '.join(repr(ch) for ch in bad)}")
    if "\ufffd" in name:
        # What a decoder leaves where the client's bytes were not UTF-8: the name the client meant is lost.
        raise InvalidName(f"{what} is not valid UTF-8")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in name):
        raise InvalidName(f"{what} contains control or invalid characters")
    if name != name.strip() or name.endswith("."):
        raise InvalidName(f"{what} may not start or end with whitespace or end with '.'")
    return name


def clean_relative_path(path: str, *, what: str = "path") -> str:
    """A relative path such as ``lora_adapters/adapter_model.safetensors``: segments joined by '/'."""
    if not isinstance(path, str):
        raise InvalidName(f"{what} must be a string")
    if path.startswith("/"):
        raise InvalidName(f"{what} must be relative (no leading '/')")
    segments = path.split("/")
    if len(segments) > MAX_PATH_SEGMENTS:
        raise InvalidName(f"{what} has more than {MAX_PATH_SEGMENTS} segments")
    for segment in segments:
        clean_name(segment, what=f"{what} segment")
    return path


def user_prefix(user_id: int) -> str:
    return f"users/{int(user_id)}/"


def user_key(user_id: int, *parts: str) -> str:
    """A key under the user's prefix; every part must already be clean."""
    for part in parts:
        clean_relative_path(part)
    return user_prefix(user_id) + "/".join(parts)


def key_is_under(key: str, prefix: str) -> bool:
    if not key.startswith(prefix):
        return False
    try:
        clean_relative_path(key[len(prefix) :])
    except InvalidName:
        return False
    return True


def download_filename(name: str, *, extension: str = "") -> str:
    """An ASCII-only file name safe in a Content-Disposition header."""
    normalized = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    base = _SAFE_FILENAME.sub("-", normalized).strip("-.") or "download"
    return base[:120] + extension
