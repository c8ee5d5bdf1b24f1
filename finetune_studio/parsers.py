"""Request parsers of the REST API."""

import io
import re

from rest_framework import parsers
from rest_framework.exceptions import ParseError

# A \uD800-\uDFFF escape: half of a UTF-16 pair, or a lone surrogate json.loads lets through.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing text that is not valid Unicode.

    ``json.loads`` turns the escape ``"\\ud800"`` into a lone surrogate, which no UTF-8 text
    (PostgreSQL's, a file name's) can hold: saving it failed with a 500. Such a body is a 400
    now. Only bodies with a surrogate escape in them are searched, so large log batches pay nothing.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        data = super().parse(io.BytesIO(raw), media_type, parser_context)
        if _SURROGATE_ESCAPE.search(raw):
            where = _lone_surrogate_at(data, "")
            if where is not None:
                place = f" at {where}" if where else ""
                raise ParseError(
                    f"JSON parse error - the text{place} holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                    "which is not valid Unicode; send the character itself or a complete surrogate pair."
                )
        return data


def _lone_surrogate_at(value, path: str) -> str | None:
    """The path (``lines[3].message``) of the first string holding a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            for part, subpath in ((key, path), (item, f"{path}.{key}" if path else str(key))):
                found = _lone_surrogate_at(part, subpath)
                if found is not None:
                    return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _lone_surrogate_at(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
