"""What the trainer prints: the only lines the runner and the logs pipeline see.

Plain lines are ``[HH:MM:SS] [LEVEL] message`` (UTC); metrics are one JSON object per line. Every line is
flushed at once so the job page follows the run live.
"""

import json
import sys
from datetime import UTC, datetime
from typing import TextIO


class Reporter:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def log(self, level: str, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        # One event per line: a multi-line message would be split into lines without a level by the reader.
        for part in str(message).splitlines() or [""]:
            self._line(f"[{stamp}] [{level}] {part}")

    def info(self, message: str) -> None:
        self.log("INFO", message)

    def warn(self, message: str) -> None:
        self.log("WARN", message)

    def error(self, message: str) -> None:
        self.log("ERROR", message)

    def metrics(self, point: dict) -> None:
        self._line(json.dumps(point, separators=(", ", ": ")))
