"""Reading training and test sets: JSON array, JSON lines or CSV, record by record.

One parser serves dataset upload validation (jobs), the evaluation engine and the
evaluation CLI, so a file accepted at upload is read the same way everywhere.
Records are normalised to ``Record(text, label)``: ``text``/``label`` records as they
are, ``instruction``/``input``/``output`` records with ``output`` as the label and the
instruction and input joined as the text. Errors name the line (or record) and why.
"""

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

MAX_LINE_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 20


class RecordError(ValueError):
    def __init__(self, location: str, reason: str):
        super().__init__(f"{location}: {reason}")
        self.location = location
        self.reason = reason


@dataclass(frozen=True)
class Record:
    text: str
    label: str
    instruction: str = ""
    input: str = ""
    raw: dict = field(default_factory=dict, compare=False, repr=False)


def detect_format(filename: str, head: bytes) -> str:
    lowered = filename.lower()
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    stripped = head.lstrip()
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"
    raise RecordError("file", "not a JSON array, JSON lines or CSV file (name it .json, .jsonl or .csv)")


def record_from_object(obj, location: str) -> Record:
    if not isinstance(obj, dict):
        raise RecordError(location, f"expected a JSON object, got {type(obj).__name__}")
    if "output" in obj and ("instruction" in obj or "input" in obj):
        instruction, given_input, output = (obj.get(key, "") for key in ("instruction", "input", "output"))
        for name, value in (("instruction", instruction), ("input", given_input), ("output", output)):
            if not isinstance(value, str):
                raise RecordError(location, f"field '{name}' must be a string")
        if not output.strip():
            raise RecordError(location, "field 'output' is empty")
        text = "\n\n".join(part for part in (instruction.strip(), given_input.strip()) if part)
        if not text:
            raise RecordError(location, "fields 'instruction' and 'input' are both empty")
        return Record(text=text, label=output.strip(), instruction=instruction, input=given_input, raw=obj)
    if "text" in obj and "label" in obj:
        text, label = obj["text"], obj["label"]
        if not isinstance(text, str) or not text.strip():
            raise RecordError(location, "field 'text' must be a non-empty string")
        if isinstance(label, (int, float)) and not isinstance(label, bool):
            label = str(label)
        if not isinstance(label, str) or not label.strip():
            raise RecordError(location, "field 'label' must be a non-empty string")
        return Record(text=text, label=label.strip(), raw=obj)
    keys = ", ".join(sorted(map(str, obj))[:8]) or "none"
    raise RecordError(location, f"needs 'text' and 'label', or 'instruction'/'input' and 'output' (found: {keys})")


def _check_depth(line: bytes | str, location: str) -> None:
    depth = deepest = 0
    in_string = escaped = False
    for ch in line if isinstance(line, str) else line.decode("utf-8", "replace"):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                raise RecordError(location, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif ch in "]}":
            depth -= 1


def _decode(line: bytes, location: str) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(location, f"not valid UTF-8 (byte {exc.start})") from None


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Split a byte stream into lines, refusing any line over MAX_LINE_BYTES (bounded memory)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
        if len(pending) > MAX_LINE_BYTES:
            raise RecordError("line", f"a line is longer than {MAX_LINE_BYTES} bytes")
    if pending:
        yield pending


def iter_jsonl(chunks: Iterable[bytes]) -> Iterator[Record]:
    for number, line in enumerate(_lines(chunks), start=1):
        location = f"line {number}"
        if len(line) > MAX_LINE_BYTES:
            raise RecordError(location, f"longer than {MAX_LINE_BYTES} bytes")
        text = _decode(line, location).strip()
        if not text:
            continue
        _check_depth(text, location)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(location, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        yield record_from_object(obj, location)


def iter_json_array(chunks: Iterable[bytes], *, max_bytes: int = 256 * 1024 * 1024) -> Iterator[Record]:
    """A JSON array is parsed whole; its size is bounded by ``max_bytes``."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > max_bytes:
            raise RecordError("file", f"a JSON array file is limited to {max_bytes} bytes; use JSON lines")
    text = _decode(bytes(data), "file")
    _check_depth(text, "file")
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"line {exc.lineno}", f"invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(items, list):
        raise RecordError("file", "the top level must be a JSON array of records")
    for index, obj in enumerate(items, start=1):
        yield record_from_object(obj, f"record {index}")


def iter_csv(chunks: Iterable[bytes]) -> Iterator[Record]:
    lines = (_decode(line, "line") + "\n" for line in _lines(chunks))
    reader = csv.DictReader(lines)
    if not reader.fieldnames or not {"text", "label"} <= {name.strip() for name in reader.fieldnames}:
        raise RecordError("line 1", "a CSV file needs a header row with 'text' and 'label' columns")
    for row in reader:
        location = f"line {reader.line_num}"
        if None in row:
            raise RecordError(location, "more fields than the header has")
        yield record_from_object({k.strip(): (v or "") for k, v in row.items()}, location)


def iter_records(chunks: Iterable[bytes], fmt: str) -> Iterator[Record]:
    if fmt == "jsonl":
        return iter_jsonl(chunks)
    if fmt == "json":
        return iter_json_array(chunks)
    if fmt == "csv":
        return iter_csv(chunks)
    raise RecordError("file", f"unknown format {fmt!r}")


def read_records_from_bytes(data: bytes, filename: str) -> list[Record]:
    return list(iter_records([data], detect_format(filename, data[:64])))


def open_records(path: str) -> list[Record]:
    """Read a local file (the CLI's way in)."""
    with open(path, "rb") as handle:
        head = handle.read(64)
        handle.seek(0)
        return list(iter_records(iter(lambda: handle.read(1 << 20), b""), detect_format(path, head)))


__all__ = ["Record", "RecordError", "detect_format", "iter_records", "open_records", "read_records_from_bytes"]
