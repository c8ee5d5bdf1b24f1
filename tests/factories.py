"""The one set of builders for test data. Plain functions; the root conftest offers them as fixtures too.

- ``make_dataset``: a dataset uploaded through ``jobs.services.dataset_create`` (validated, stored).
- ``make_test_set``: a dataset row and its object written as given, for files the upload would refuse (a file it
  takes gets the record format, task and tools the upload would record).
- ``make_job``: a job row in any status, as the jobs app keeps it (no run).
- ``make_trained_job``: a succeeded external job whose artifacts (``ARTIFACTS`` by default) are in storage.
- ``make_queued_job``: a job created and queued through ``jobs.services.job_create``.
- ``make_model``: a registered model, its files put in storage under its own prefix.
- ``function_tool``, ``tool_call``, ``calling_turn``, ``tool_result``, ``tool_records``, ``tool_call_records``:
  OpenAI chat records that call tools, in the shapes OpenAI's fine-tuning files use.
"""

import json
from datetime import timedelta
from pathlib import Path

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from finetune_studio.objects import bucket

SAMPLE_ROWS = [
    {
        "instruction": "Classify the clause.",
        "input": f"The Supplier shall pay invoice {i} within 30 days.",
        "output": "payment_terms",
    }
    for i in range(12)
] + [
    {
        "instruction": "Classify the clause.",
        "input": f"This Agreement is governed by the laws of state {i}.",
        "output": "governing_law",
    }
    for i in range(8)
]
LABELS = ["positive", "negative", "neutral"]
METRICS = {
    "final": {"loss": 0.42, "accuracy": 0.91, "epoch": 3},
    "history": [{"step": step, "loss": round(2.0 / step, 4), "epoch": step / 10} for step in range(1, 31)],
    "eval": [{"epoch": 1, "eval_loss": 0.8, "eval_accuracy": 0.7}],
}
ADAPTER_BYTES = bytes(range(256)) * 300
ARTIFACTS = {
    "lora_adapters/adapter_model.safetensors": ADAPTER_BYTES,
    "lora_adapters/adapter_config.json": json.dumps({"r": 8, "lora_alpha": 16}).encode(),
    "lora_adapters/tokenizer.json": b'{"version": "1.0"}',
    "gguf/model-q4.gguf": b"GGUF" + b"\x00" * 5000,
    "metrics.json": json.dumps(METRICS).encode(),
}


def jsonl(rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def function_tool(name: str, *arguments: str, description: str = "") -> dict:
    """An OpenAI tool definition whose parameters are the string ``arguments``, all required."""
    function: dict = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = {
        "type": "object",
        "properties": {argument: {"type": "string"} for argument in arguments},
        "required": list(arguments),
    }
    return {"type": "function", "function": function}


def tool_call(call_id: str, name: str, arguments: dict | str) -> dict:
    """One call of an assistant turn as OpenAI writes it: ``arguments`` as JSON text (a str is taken as is)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def calling_turn(*calls: dict, content: str | None = None) -> dict:
    """An assistant turn that makes ``calls`` (``tool_call``s)."""
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def tool_result(call_id: str, content: str, *, name: str = "") -> dict:
    """A ``tool`` turn bringing a call's result."""
    return {"role": "tool", "tool_call_id": call_id, "content": content, **({"name": name} if name else {})}


def tool_records(count: int) -> list[dict]:
    """Conversations that call a tool, get its result and answer with it: the call and the answer are trained."""
    cities = ["Paris", "Berlin", "Madrid", "Dublin"]
    records = []
    for n in range(count):
        city = cities[n % len(cities)]
        records.append(
            {
                "tools": [function_tool("get_weather", "city")],
                "messages": [
                    {"role": "user", "content": f"Weather in {city}?"},
                    calling_turn(tool_call(f"call-{n}", "get_weather", {"city": city})),
                    tool_result(f"call-{n}", f"{10 + n}C"),
                    {"role": "assistant", "content": f"It is {10 + n}C in {city}."},
                ],
            }
        )
    return records


def tool_call_records(*, calls: int, texts: int = 0) -> list[dict]:
    """OpenAI chat records shaped like ``samples/tools``: ``calls`` of them stop at a ``get_weather`` call (their
    answer is the call), then ``texts`` call it, read the result and answer in text."""
    tools = [function_tool("set_timer", "minutes"), function_tool("get_weather", "city")]

    def record(i: int, answered_by_call: bool) -> dict:
        messages = [
            {"role": "user", "content": f"Weather in Oslo, question {i}?"},
            calling_turn(tool_call(f"c{i}", "get_weather", {"city": "Oslo"})),
        ]
        if not answered_by_call:
            messages += [tool_result(f"c{i}", "4C"), {"role": "assistant", "content": "It is 4C in Oslo."}]
        return {"tools": tools, "messages": messages}

    return [record(i, True) for i in range(calls)] + [record(calls + i, False) for i in range(texts)]


def chat_records(count: int = 12, *, start: int = 0) -> list[dict]:
    """One-turn OpenAI chat records: "What is i + 1?" answered with i + 1, for i from ``start``."""
    return [
        {"messages": [{"role": "user", "content": f"What is {i} + 1?"}, {"role": "assistant", "content": str(i + 1)}]}
        for i in range(start, start + count)
    ]


def sample_records(count: int = 12) -> list[dict]:
    """Labelled test records (text → one of LABELS)."""
    return [{"text": f"Example {i}: the clause reads {'xyz'[i % 3]}{i}.", "label": LABELS[i % 3]} for i in range(count)]


def job_form_selects(trainer: str) -> dict:
    """What the new-job form's selects hold before anyone changes them (a browser sends them all)."""
    from jobs.models import Trainer

    schema = Trainer.objects.get(name=trainer).hyperparameter_schema
    return {f"hp_{name}": spec["default"] for name, spec in schema.items() if spec["type"] == "enum"}


def make_dataset(owner, rows=None, filename="train.jsonl", name=""):
    from jobs import services

    upload = SimpleUploadedFile(filename, jsonl(rows or SAMPLE_ROWS))
    return services.dataset_create(owner=owner, uploaded_file=upload, name=name)


_test_set_numbers = iter(range(1, 1_000_000))


def make_test_set(owner, records=None, *, filename="test.jsonl", raw: bytes | None = None, labels=None):
    from jobs.models import Dataset

    records = sample_records() if records is None else records
    number = next(_test_set_numbers)
    path = f"datasets/users/{owner.id}/datasets/0000000{number}-test/{filename}"
    data = raw if raw is not None else "\n".join(json.dumps(record) for record in records).encode()
    bucket("datasets").put_bytes(path.removeprefix("datasets/"), data)
    found_labels = sorted({r["label"] for r in records if isinstance(r, dict) and "label" in r})
    detected = _detected(data, filename)
    return Dataset.objects.create(
        owner=owner,
        name=f"test set {number}",
        path=path,
        original_filename=filename,
        file_format=filename.rsplit(".", 1)[-1],
        size_bytes=len(data),
        records=len(records),
        labels=found_labels if labels is None else labels,
        **detected,
    )


def _detected(data: bytes, filename: str) -> dict:
    """What the upload would record of a file the reader takes (record format, task, tools); nothing otherwise."""
    from finetune_studio import records as reader

    try:
        parsed = reader.read_records_from_bytes(data, filename)
    except reader.RecordError:
        return {}
    if not parsed:
        return {}
    return {
        "format": parsed[0].format,
        "task": reader.task_of(parsed[0].format),
        "tools": sorted({name for record in parsed for name in record.tool_names}),
        "tool_call_answers": sum(record.answered_by_tool_call for record in parsed),
    }


def make_job(
    owner,
    *,
    status="running",
    trainer="example",
    name: str | None = None,
    base_model="tiny-llama",
    finished_days_ago: float | None = None,
    artifacts: dict[str, bytes] | None = None,
    **fields,
):
    """A job row (started an hour ago); ``artifacts`` are written under its prefix in the models bucket."""
    from jobs.models import Job, Trainer

    trainer_row, _ = Trainer.objects.get_or_create(name=trainer)
    if status in Job.FINISHED:
        fields.setdefault("finished_at", timezone.now() - timedelta(days=finished_days_ago or 0))
    job = Job.objects.create(
        owner=owner,
        name=name or f"{owner.username}-job",
        base_model=base_model,
        trainer=trainer_row,
        status=status,
        started_at=timezone.now() - timedelta(hours=1),
        **fields,
    )
    job.storage_prefix = f"users/{owner.id}/jobs/{job.id}/"
    job.save(update_fields=["storage_prefix"])
    models_bucket = bucket("models")
    for path, data in (artifacts or {}).items():
        models_bucket.put_bytes(job.storage_prefix + path, data)
    return job


def make_trained_job(owner, *, status="succeeded", name="sentiment run", artifacts=None, **fields):
    return make_job(
        owner,
        status=status,
        trainer="external",
        name=name,
        artifacts=ARTIFACTS if artifacts is None else artifacts,
        **fields,
    )


def make_queued_job(owner, dataset, trainer, **hyperparameters):
    from jobs import services

    return services.job_create(
        owner=owner,
        name="test job",
        base_model="tiny-base",
        dataset_id=dataset.id if dataset else None,
        trainer_name=trainer.name if hasattr(trainer, "name") else trainer,
        hyperparameters_given=hyperparameters,
    )


def make_model(owner, *, files=None, name="my model", base_model="tiny-llama", status="ready", **fields):
    """A model registered as the API does, its files put in storage under its own prefix."""
    from models_app import artifacts
    from models_app.models import RegisteredModel
    from models_app.services import artifacts_manifest

    model = RegisteredModel.objects.create(owner=owner, name=name, base_model=base_model, status=status, **fields)
    model.storage_path = f"users/{owner.id}/models/{model.id}/"
    models_bucket = bucket("models")
    for path, data in (files or {}).items():
        models_bucket.put_bytes(model.storage_path + path, data)
    model.files = artifacts_manifest(model.storage_path) if files else []
    derived = artifacts.summarize(model.files, storage_path=model.storage_path)
    model.total_size = derived["total_size"]
    model.lora_adapters_path = derived["lora_adapters_path"]
    model.gguf_path = derived["gguf_path"]
    model.save()
    return model


def lora_adapter(base_folder, adapter_folder, *, seed: int):
    """A PEFT model on the base with non-zero LoRA weights (as after training), saved to a folder."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_folder, local_files_only=True)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(adapter_folder)
    AutoTokenizer.from_pretrained(base_folder, local_files_only=True).save_pretrained(adapter_folder)
    return peft_model.eval()


def preference_records(count: int = 12) -> list[dict]:
    """OpenAI preference (DPO) records on the contracts sample's clauses: the right label preferred over the next."""
    sample = Path(__file__).resolve().parents[1] / "samples" / "contracts" / "train.jsonl"
    clauses = [json.loads(line) for line in sample.read_text().splitlines() if line.strip()]
    labels = sorted({clause["output"] for clause in clauses})
    return [
        {
            "input": {
                "messages": [
                    {"role": "system", "content": clause["instruction"]},
                    {"role": "user", "content": clause["input"]},
                ]
            },
            "preferred_output": [{"role": "assistant", "content": clause["output"]}],
            "non_preferred_output": [
                {"role": "assistant", "content": labels[(labels.index(clause["output"]) + 1) % len(labels)]}
            ],
        }
        for clause in clauses[:count]
    ]
