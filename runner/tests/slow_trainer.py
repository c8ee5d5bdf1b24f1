"""A test trainer that follows the contract slowly: ticks for a while, then exits as told.

Hyperparameters: seconds, interval, exit_code, ignore_sigterm, pid_file, artifact.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    params = json.loads(Path(os.environ["HYPERPARAMS_FILE"]).read_text())
    if params.get("pid_file"):
        Path(params["pid_file"]).write_text(str(os.getpid()))
    if params.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"env JOB_ID={os.environ['JOB_ID']} HP_SECONDS={os.environ.get('HP_SECONDS')}", flush=True)
    print(f"secret visible: {'SECRET_KEY' in os.environ or 'DATABASE_URL' in os.environ}", flush=True)
    deadline = time.monotonic() + float(params.get("seconds", 1))
    step = 0
    while time.monotonic() < deadline:
        step += 1
        print(json.dumps({"step": step, "loss": 1.0 / step}), flush=True)
        time.sleep(float(params.get("interval", 0.1)))
    if params.get("artifact"):
        out = Path(os.environ["OUTPUT_DIR"])
        (out / "lora_adapters").mkdir()
        (out / "lora_adapters" / "adapter_config.json").write_text('{"r": 8}')
        (out / "metrics.json").write_text(json.dumps({"final_loss": 1.0 / max(step, 1)}))
    code = int(params.get("exit_code", 0))
    if code:
        # A log line: the job's error message keeps its message part only.
        print(f"[12:00:00] [ERROR] giving up with exit code {code}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
