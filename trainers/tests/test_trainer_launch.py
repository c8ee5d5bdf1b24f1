"""A worker with several GPUs starts a DDP-capable trainer under torchrun, one process per visible GPU; the
two-process training (gloo on the CPU) is the one-process training: same losses, one log, one adapter.
"""

import json
import sys

import pytest

from trainers.launch import launch_command, visible_gpus

from .conftest import run_trainer, write_jsonl

LORA_SFT = ["/venv/bin/python", "-m", "trainers.lora_sft"]


def encoded(base, dataset):
    from transformers import AutoTokenizer

    from finetune_studio.records import open_records
    from trainers.lora_sft.chat import encode_records

    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    return encode_records(tokenizer, open_records(str(dataset)), system_prompt="", max_length=512)


def test_several_visible_gpus_start_lora_sft_under_torchrun_with_one_process_each():
    assert launch_command(LORA_SFT, environ={"CUDA_VISIBLE_DEVICES": "0,1,3"}) == [
        "/venv/bin/python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=3",
        "-m",
        "trainers.lora_sft",
    ]


@pytest.mark.parametrize("visible", [None, "", "0", "GPU-5d3f", "-1", "2,-1,3"])
def test_one_or_no_visible_gpu_leaves_the_command_as_it_is(visible):
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert launch_command(LORA_SFT, environ=environ) == LORA_SFT
    assert len(visible_gpus(environ)) <= 1  # CUDA stops reading the list at the first invalid entry


def test_a_trainer_that_does_not_speak_ddp_is_never_put_under_torchrun():
    for command in (["/venv/bin/python", "-m", "trainers.example"], ["/opt/train.sh", "--fast"]):
        assert launch_command(command, environ={"CUDA_VISIBLE_DEVICES": "0,1"}) == command


@pytest.mark.slow
def test_two_gloo_processes_train_exactly_as_one(demo_base, clause_dataset, tmp_path):
    pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")
    from safetensors.torch import load_file

    from finetune_studio.records import open_records

    # 33 records in batches of 8: the last batch has one record, so one process gets none of it.
    records = [{"text": r.text, "label": r.label} for r in open_records(str(clause_dataset))[:33]]
    dataset = write_jsonl(tmp_path / "records.jsonl", records)
    hyperparameters = {
        "epochs": 1,
        "batch_size": 8,
        "learning_rate": 2e-2,
        "logging_steps": 1,
        "validation_fraction": 0,
        "lora_dropout": 0.0,  # dropout draws differ per process layout; the maths must not
        "warmup_ratio": 0,
        "packing": "on",
    }
    runs = {}
    for name, processes in (("one", 1), ("two", 2)):
        visible = ",".join(str(gpu) for gpu in range(processes))
        runs[name] = run_trainer(
            base_model=str(demo_base),
            dataset=dataset,
            hyperparameters=hyperparameters,
            output_dir=tmp_path / name,
            extra_env={"CUDA_VISIBLE_DEVICES": visible},
            command=launch_command(
                [sys.executable, "-m", "trainers.lora_sft"], environ={"CUDA_VISIBLE_DEVICES": visible}
            ),
        )
        assert runs[name].returncode == 0, runs[name].stdout[-2000:] + runs[name].stderr[-3000:]
    one, two = runs["one"], runs["two"]
    assert [p["step"] for p in two.step_points] == [p["step"] for p in one.step_points] == [1, 2, 3, 4, 5]
    for single, double in zip(one.step_points, two.step_points, strict=True):
        assert double["loss"] == pytest.approx(single["loss"], abs=1e-4)
        assert double["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-3)
    assert len([line for line in two.lines if "] [INFO] setup: " in line]) == 1  # only rank 0 logs
    assert "2 process(es)" in two.stdout
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["run"]["processes"] == 2
    # Every record's tokens counted once, whichever process computed them, and never a padding token.
    single = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert (
        metrics["final"]["tokens"]
        == single["final"]["tokens"]
        == sum(len(example.input_ids) for example in encoded(demo_base, dataset))
    )
    one_weights = load_file(str(tmp_path / "one" / "lora_adapters" / "adapter_model.safetensors"))
    two_weights = load_file(str(tmp_path / "two" / "lora_adapters" / "adapter_model.safetensors"))
    assert one_weights.keys() == two_weights.keys()
    for name, tensor in one_weights.items():
        assert (two_weights[name] - tensor).abs().max() < 1e-4, name
