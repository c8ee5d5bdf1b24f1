"""A small SSE reader for tests: bytes in, events (type, id, data) out, as a browser's EventSource parses them."""

import json
from dataclasses import dataclass


@dataclass
class SseEvent:
    type: str
    id: str | None
    data: str

    @property
    def json(self):
        return json.loads(self.data)


class SseParser:
    def __init__(self):
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self.buffer += chunk.replace(b"\r\n", b"\n")
        *blocks, self.buffer = self.buffer.split(b"\n\n")
        events = []
        for block in blocks:
            kind, event_id, data = "message", None, []
            for line in block.decode().split("\n"):
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    kind = value
                elif name == "id":
                    event_id = value
                elif name == "data":
                    data.append(value)
            if data or kind != "message":
                events.append(SseEvent(kind, event_id, "\n".join(data)))
        return events


def log_seqs(events: list[SseEvent]) -> list[int]:
    return [line["seq"] for event in events if event.type == "logs" for line in event.json["lines"]]
