"""The tiny demo base: built here in seconds, deterministic, with a tokenizer that encodes anything."""

import hashlib
import io

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")

from django.core.management import CommandError, call_command  # noqa: E402

from trainers.demo_base import DEMO_BASE_NAME, build_demo_base, corpus_from_files  # noqa: E402

from .conftest import SAMPLE_TRAIN  # noqa: E402


def _digests(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_it_builds_the_same_files_byte_for_byte_from_the_same_seed(tmp_path, demo_base):
    texts = corpus_from_files([SAMPLE_TRAIN]) if SAMPLE_TRAIN.exists() else None  # as the fixture built it
    again = build_demo_base(tmp_path / "again", texts=texts, seed=0)
    assert _digests(again) == _digests(demo_base)
    other = build_demo_base(tmp_path / "other", texts=texts, seed=1)
    assert _digests(other)["model.safetensors"] != _digests(demo_base)["model.safetensors"]


def test_it_is_a_small_llama_declaring_its_identity_not_its_path(demo_base):
    import json

    from transformers import AutoModelForCausalLM

    config = json.loads((demo_base / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] == 64 and config["num_hidden_layers"] == 2
    assert config["_name_or_path"] == DEMO_BASE_NAME
    model = AutoModelForCausalLM.from_pretrained(demo_base, local_files_only=True)
    assert 100_000 < sum(parameter.numel() for parameter in model.parameters()) < 400_000


def test_its_tokenizer_falls_back_to_bytes_for_text_it_never_saw(demo_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_base, local_files_only=True)
    text = "Zürich ✓ 日本 — The Supplier shall pay within 30 days."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert "<0xE2>" in tokenizer.convert_ids_to_tokens(ids)
    assert tokenizer.decode(ids) == text


def test_its_chat_template_renders_turns_between_special_tokens(demo_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_base, local_files_only=True)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Classify."}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<s><|im_start|>user\nClassify.<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"
    special = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert tokenizer.unk_token_id not in special
    assert tokenizer("<|im_start|>", add_special_tokens=False)["input_ids"] == special[:1]


def test_the_command_builds_it_and_refuses_to_overwrite_without_force(tmp_path):
    target = tmp_path / "demo"
    out = io.StringIO()
    call_command("build_demo_base", output=str(target), stdout=out)
    assert "Jobs cannot name this folder yet: set DEMO_BASE_DIR=" in out.getvalue()
    assert (target / "model.safetensors").exists() and (target / "tokenizer.json").exists()
    with pytest.raises(CommandError, match="already exists: use --force"):
        call_command("build_demo_base", output=str(target))
    (target / "marker").write_text("old")
    call_command("build_demo_base", output=str(target), force=True)
    assert not (target / "marker").exists() and (target / "config.json").exists()


def test_the_command_tells_the_name_jobs_use_never_a_folder_they_may_not_name(tmp_path, settings):
    settings.DEMO_BASE_DIR = tmp_path / "var" / "demo-base"
    out = io.StringIO()
    call_command("build_demo_base", stdout=out)
    assert "Jobs name it 'demo-base'" in out.getvalue()
    assert f"{tmp_path}" not in out.getvalue().splitlines()[-1]
    settings.BASE_MODELS_DIR = tmp_path / "bases"
    call_command("build_demo_base", output=str(tmp_path / "bases" / "tiny-llama"), stdout=out)
    assert out.getvalue().splitlines()[-1].startswith("Jobs name it 'tiny-llama'")
