"""The dataset page's cost: token lengths of chat records through the demo base's chat template.

Builds the demo base in a temporary folder (seconds, no download), writes 2,000 OpenAI chat records (system,
three user/assistant exchanges, one assistant turn with weight 0), then measures:
- a fresh process loading the tokenizer the web process uses (tokenizers + transformers' template renderer,
  no torch) against one loading ``AutoTokenizer`` (the trainer's): seconds, peak RSS, torch imported;
- ``token_length`` over every record with each tokenizer (the histogram's work), records per second, and
  whether the two give the same lengths.
Prints one JSON object.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECORDS = 2000
LOAD = {
    "light": "from trainers.lora_sft.chat import TemplateTokenizer as T; t = T(BASE)",
    "transformers": (
        "from transformers import AutoTokenizer; t = AutoTokenizer.from_pretrained(BASE, local_files_only=True)"
    ),
}


def chat_rows(count: int) -> list[dict]:
    from trainers.demo_base import synthetic_clause_records

    rows = []
    for index, clause in enumerate(synthetic_clause_records(count, seed=3, clauses_per_record=2)):
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "Name the clause type."},
                    {"role": "user", "content": "Hello."},
                    {"role": "assistant", "content": f"Hello, ticket {index}.", "weight": 0},
                    {"role": "user", "content": clause["input"]},
                    {"role": "assistant", "content": clause["output"]},
                    {"role": "user", "content": "Sure?"},
                    {"role": "assistant", "content": f"Yes: {clause['output']}."},
                ]
            }
        )
    return rows


def fresh_load(kind: str, base: Path) -> dict:
    script = (
        "import sys, time\n"
        f"BASE = {str(base)!r}\n"
        "started = time.perf_counter()\n"
        f"{LOAD[kind]}\n"
        "t.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False, add_generation_prompt=True)\n"
        # VmHWM, not ru_maxrss: the latter survives exec and would report the parent's peak.
        "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
        "print(time.perf_counter() - started, peak, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    seconds, rss_kib, torch_loaded = out.stdout.split()
    return {
        "seconds": round(float(seconds), 2),
        "peak_rss_mib": round(int(rss_kib) / 1024, 1),
        "torch": torch_loaded == "True",
    }


def main() -> None:
    from transformers import AutoTokenizer

    from finetune_studio.records import read_records_from_bytes
    from trainers.demo_base import build_demo_base
    from trainers.lora_sft.chat import TemplateTokenizer, token_length

    with tempfile.TemporaryDirectory() as work:
        base = build_demo_base(Path(work) / "demo-base")
        data = "".join(json.dumps(row) + "\n" for row in chat_rows(RECORDS)).encode()
        records = read_records_from_bytes(data, "chat.jsonl")
        result = {"records": RECORDS, "load": {kind: fresh_load(kind, base) for kind in LOAD}}
        lengths = {}
        token_length(TemplateTokenizer(base), records[0])  # imports the template renderer outside the timing
        for kind, tokenizer in (
            ("light", TemplateTokenizer(base)),
            ("transformers", AutoTokenizer.from_pretrained(base, local_files_only=True)),
        ):
            started = time.perf_counter()
            lengths[kind] = [token_length(tokenizer, record) for record in records]
            elapsed = time.perf_counter() - started
            result[f"{kind}_records_per_second"] = round(RECORDS / elapsed, 1)
        result["same_lengths"] = lengths["light"] == lengths["transformers"]
        result["mean_tokens"] = round(sum(lengths["light"]) / RECORDS, 1)
        result["light_vs_transformers_speed"] = round(
            result["light_records_per_second"] / result["transformers_records_per_second"], 2
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
