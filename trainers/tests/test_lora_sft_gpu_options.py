"""The GPU-shaped options of lora-sft, run as the job runner runs the trainer: the dtypes it holds, packed and
unpacked training agreeing step by step, and what a CPU worker refuses (with the reason, before any weight
is loaded).
"""

import json

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from finetune_studio.records import open_records  # noqa: E402

from .conftest import run_trainer, write_jsonl  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning")]

SHORT_RUN = {
    "epochs": 1,
    "batch_size": 8,
    "learning_rate": 2e-2,
    "logging_steps": 1,
    "validation_fraction": 0,
    "lora_dropout": 0.0,  # dropout masks are drawn per tensor shape: packed and padded would draw differently
    "warmup_ratio": 0,
}


@pytest.fixture(scope="module")
def small_dataset(clause_dataset, tmp_path_factory):
    records = [{"text": r.text, "label": r.label} for r in open_records(str(clause_dataset))[:32]]
    return write_jsonl(tmp_path_factory.mktemp("data") / "records.jsonl", records)


def train(demo_base, dataset, tmp_path, name, **hyperparameters):
    run = run_trainer(
        base_model=str(demo_base),
        dataset=dataset,
        hyperparameters={**SHORT_RUN, **hyperparameters},
        output_dir=tmp_path / name,
    )
    return run


def test_a_bfloat16_base_keeps_float32_adapters_and_optimizer_state(demo_base, small_dataset, tmp_path):
    from safetensors.torch import load_file

    run = train(demo_base, small_dataset, tmp_path, "bf16", base_dtype="bfloat16")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    metrics = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert metrics["run"]["dtypes"] == {
        "frozen": ["bfloat16"],
        "trainable": ["float32"],
        "optimizer_state": ["float32"],
    }
    assert metrics["run"]["setup"]["base_dtype"] == "bfloat16"
    weights = load_file(str(tmp_path / "bf16" / "lora_adapters" / "adapter_model.safetensors"))
    assert {str(tensor.dtype) for tensor in weights.values()} == {"torch.float32"}
    losses = [point["loss"] for point in run.step_points]
    assert len(losses) == 4 and all(0 < loss < 20 for loss in losses)


def test_on_the_cpu_packed_training_with_checkpointing_follows_the_default_padded_run_step_by_step(
    demo_base, small_dataset, tmp_path
):
    padded = train(demo_base, small_dataset, tmp_path, "padded")  # the CPU's defaults
    packed = train(demo_base, small_dataset, tmp_path, "packed", packing="on", gradient_checkpointing=True)
    for run in (padded, packed):
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    padded_run = json.loads((tmp_path / "padded" / "metrics.json").read_text())["run"]
    assert padded_run["dtypes"]["frozen"] == ["float32"]
    assert padded_run["setup"] == {
        "device_type": "cpu",
        "base_dtype": "float32",
        "autocast": False,
        "attention": "sdpa",
        "packing": False,
        "kernels": "torch",  # Liger needs a GPU: the chunked cross-entropy
        "gradient_checkpointing": False,
        "quantization": "none",
    }
    assert json.loads((tmp_path / "packed" / "metrics.json").read_text())["run"]["setup"]["packing"] is True
    for one, other in zip(padded.step_points, packed.step_points, strict=True):
        assert other["loss"] == pytest.approx(one["loss"], abs=1e-4)
        assert other["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-3)
    # tokens/s counts the records' tokens only: the same count packed or padded.
    tokens = [
        json.loads((tmp_path / name / "metrics.json").read_text())["final"]["tokens"] for name in ("padded", "packed")
    ]
    assert tokens[0] == tokens[1]


@pytest.mark.parametrize(
    ("hyperparameters", "reason"),
    [
        ({"quantization": "nf4"}, "quantization nf4 (QLoRA) needs a CUDA GPU"),
        ({"kernels": "liger"}, "kernels liger: Liger kernels need a CUDA GPU"),
        ({"attention": "flash_attention_2"}, "attention flash_attention_2 needs a CUDA GPU"),
    ],
)
def test_a_cpu_worker_refuses_what_needs_a_gpu_with_the_reason(
    demo_base, small_dataset, tmp_path, hyperparameters, reason
):
    run = train(demo_base, small_dataset, tmp_path, "refused", **hyperparameters)
    assert run.returncode == 2
    [error] = run.lines_at("ERROR")
    assert reason in error
    assert run.step_points == [] and not (tmp_path / "refused" / "lora_adapters").exists()
