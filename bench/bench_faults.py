"""Run the fault scenarios of the reliability suite and print one JSON summary of their own counters.

    .venv/bin/python bench/bench_faults.py

The figures come from the tests themselves (each prints a ``FAULTS {json}`` line from its counters:
faults injected, requests made, rows lost), not from this script: docs/reliability.md quotes them.
Uses TEST_DATABASE_URL / TEST_REDIS_URL like the test suite; everything runs on loopback.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = [
    "tests/reliability",
    "tests/security/test_stream_revocation.py",
    "tests/security/test_api_schema_fuzz.py",
]


def main() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *SCENARIOS, "-q", "-s", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=170,
    )
    # pytest's progress dots share the line with what a test prints: find the marker anywhere.
    scenarios = [json.loads(match) for match in re.findall(r"FAULTS (\{.*\})", result.stdout)]
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    print(
        json.dumps(
            {
                "passed": result.returncode == 0,
                "pytest": summary,
                "seconds": round(time.monotonic() - started, 1),
                "scenarios": scenarios,
                "rows_lost": sum(s.get("rows_lost", 0) + s.get("lines_lost", 0) for s in scenarios),
                "valid_truncated_zips": sum(s.get("valid_truncated_zips", 0) for s in scenarios),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
